"""`python -m camagent`: a hardware failure ends in one message and exit 1, never a traceback.

A coil's value file is a link to /dev/full, where every write fails with ENOSPC, as a
sysfs attribute of a dead GPIO controller would fail: the first step of homing fails,
and so does writing the line low again on the way out.
"""
import json
import os
import subprocess
import sys

from sysfs_fake import FakeSysfs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAN_COIL = 14


def test_a_coil_that_cannot_be_written_stops_the_agent_with_a_message(tmp_path):
    fs = FakeSysfs(tmp_path / "gpio")
    try:
        fs.pre_export(PAN_COIL)
        value = os.path.join(fs.pin_dir(PAN_COIL), "value")
        os.remove(value)
        os.symlink("/dev/full", value)
        path = tmp_path / "camagent.json"
        path.write_text(json.dumps({"gpio_root": fs.root, "state_dir": str(tmp_path / "st"),
                                    "home_on_boot": True, "sd_reset_on_start": False}))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [os.path.join(ROOT, "agent"), os.path.join(ROOT, "build", "vendor")]))
        p = subprocess.run([sys.executable, "-m", "camagent", "-c", str(path)], env=env,
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 1
        assert "Traceback" not in p.stderr
        assert "GPIO %d: %s: write failed (ENOSPC)" % (PAN_COIL, value) in p.stderr
        assert "hardware failure, motors stopped" in p.stderr
        assert "cannot release the hardware" in p.stderr
        fs.sync()
        # every other line was still written low and let go
        for pin in (15, 16, 17, 31, 36, 37, 38, 76, 77):
            assert not fs.exported(pin)
    finally:
        fs.close()
