"""`python -m camagent`: hardware failures give one message, never a traceback.

A coil's value file is a link to /dev/full, where every write fails with ENOSPC, as a
sysfs attribute of a dead GPIO controller would fail: the first step of homing fails,
and so does writing the line low again on the way out. That takes out pan only.
"""
import json
import os
import signal
import subprocess
import sys

import pytest

from broker_fixtures import Watcher, mosquitto, stop_leftovers, wait_until  # noqa: F401
from sysfs_fake import FakeSysfs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAN_COIL = 14


def test_a_coil_that_cannot_be_written_takes_out_its_axis_not_the_agent(tmp_path):
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
        p = subprocess.Popen([sys.executable, "-m", "camagent", "-c", str(path)], env=env,
                             stderr=subprocess.PIPE, text=True)
        try:
            # tilt still homes: its coils are driven while pan is out of service
            wait_until(lambda: p.poll() is not None or 1 in [fs.value(q) for q in (31, 36)],
                       what="tilt homing")
            assert p.poll() is None
            p.send_signal(signal.SIGINT)
            p.wait(20)
        finally:
            if p.poll() is None:
                p.kill()
        err = p.stderr.read()
        assert p.returncode == 0, err      # a known fault is no reason for a failed stop
        assert "Traceback" not in err
        assert "pan is out of service: GPIO %d (coil A): write failed (ENOSPC)" % PAN_COIL in err
        fs.sync()
        # every other line was still written low and let go
        for pin in (15, 16, 17, 31, 36, 37, 38, 76, 77):
            assert not fs.exported(pin)
    finally:
        fs.close()


# The agent with a session whose close() raises, as MicroPython's did after a broken read
# left the heap locked: the real close runs first, then MemoryError.
RAISING_CLOSE = """
import sys
import camagent.compat  # the u-named modules umqtt imports, on CPython
import camagent.mqtt as m
_close = m.Session.close
def close(self):
    _close(self)
    raise MemoryError("heap is locked")
m.Session.close = close
from camagent.main import main
sys.exit(main(sys.argv[1:]))
"""


def interpreters():
    found = [("cpython", sys.executable)]
    if os.environ.get("MICROPYTHON"):
        found.append(("micropython", os.environ["MICROPYTHON"]))
    return found


@pytest.mark.parametrize("name,python", interpreters(), ids=[i[0] for i in interpreters()])
def test_a_session_close_that_raises_still_releases_the_hardware(tmp_path, mosquitto, name,
                                                                  python):
    fs = FakeSysfs(tmp_path / "gpio")
    try:
        path = tmp_path / "camagent.json"
        path.write_text(json.dumps({
            "gpio_root": fs.root, "state_dir": str(tmp_path / "st"), "home_on_boot": True,
            "sd_reset_on_start": False, "device_id": "closecam",
            "mqtt": {"host": "127.0.0.1", "port": mosquitto.port, "discovery": False}}))
        path_env = os.pathsep.join([os.path.join(ROOT, "agent"),
                                    os.path.join(ROOT, "build", "vendor")])
        env = dict(os.environ, PYTHONPATH=path_env, MICROPYPATH=path_env.replace(
            os.pathsep, ":") + ":.frozen")
        w = Watcher(mosquitto, ["camagent/closecam/availability"])
        p = subprocess.Popen([python, "-c", RAISING_CLOSE, "-c", str(path)], env=env,
                             stderr=subprocess.PIPE, text=True, cwd="/")
        try:
            wait_until(lambda: p.poll() is not None or 1 in (fs.value(14), fs.value(15)),
                       what="homing")
            # the session must exist for its close to raise: SIGINT before it is made
            # would test nothing (the agent homes before it connects)
            wait_until(lambda: p.poll() is not None or any(
                payload == b"online" for payload, _ in w.all("camagent/closecam/availability")),
                what="the agent online")
            assert p.poll() is None, p.stderr.read()
            p.send_signal(signal.SIGINT)
            p.wait(20)
        finally:
            w.close()
            if p.poll() is None:
                p.kill()
        err = p.stderr.read()
        assert "cannot close the MQTT session: MemoryError('heap is locked'" in err, err
        assert "Traceback" not in err, err
        fs.sync()
        for pin in (14, 15, 16, 17, 31, 36, 37, 38, 76, 77):
            assert not fs.exported(pin), pin     # driven low, then let go
        assert json.load(open(tmp_path / "st" / "position.json"))["at_rest"] is True
    finally:
        fs.close()
