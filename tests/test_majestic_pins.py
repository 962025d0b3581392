"""S94majestic-pins: majestic's own IR-cut/IR LED pin settings are removed before it
starts, under dash and busybox ash as on the camera; nothing else in majestic.yaml
changes, and the file is not rewritten when there is nothing to remove (flash)."""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "overlay", "etc", "init.d", "S94majestic-pins")
SHELLS = [["sh"]] + ([[shutil.which("busybox"), "sh"]] if shutil.which("busybox") else [])

ORIGINAL = """\
# majestic.yaml as OpenIPC ships it, with a board's pins filled in
system:
  webAdmin: enabled
isp:
  blkCnt: 4
nightMode:
  enabled: true
  irCutPin1: 79
  irCutPin2: 78
  backlightPin: 61
  lightSensorPin: 62
  lightMonitor: true
  minThreshold: 2000
  maxThreshold: 14000
video0:
  enabled: true
  codec: h264
"""


def run(shell, path):
    env = dict(os.environ, MAJESTIC_YAML=str(path))
    return subprocess.run(shell + [SCRIPT, "start"], env=env, capture_output=True, text=True,
                          timeout=30)


def night_block(text):
    lines = text.splitlines()
    start = lines.index("nightMode:")
    block = []
    for line in lines[start + 1:]:
        if not line.startswith(" "):
            break
        block.append(line.strip())
    return block


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: os.path.basename(s[0]))
def test_pins_removed_and_monitor_off(tmp_path, shell):
    path = tmp_path / "majestic.yaml"
    path.write_text(ORIGINAL)
    assert run(shell, path).returncode == 0
    text = path.read_text()
    assert night_block(text) == ["enabled: true", "lightMonitor: false", "minThreshold: 2000",
                                 "maxThreshold: 14000"]
    # every line outside nightMode is as it was
    keep = [line for line in ORIGINAL.splitlines() if "Pin" not in line and
            "lightMonitor" not in line]
    assert [line for line in text.splitlines() if "lightMonitor" not in line] == keep
    # a second boot finds nothing to do and leaves the file alone
    inode, mtime = os.stat(path).st_ino, os.stat(path).st_mtime_ns
    assert run(shell, path).returncode == 0
    assert (os.stat(path).st_ino, os.stat(path).st_mtime_ns) == (inode, mtime)
    assert not os.path.exists(str(path) + ".camagent")


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: os.path.basename(s[0]))
def test_missing_monitor_and_missing_block_are_added(tmp_path, shell):
    path = tmp_path / "majestic.yaml"
    path.write_text("nightMode:\n  enabled: true\n  irCutPin1: 79\nvideo0:\n  enabled: true\n")
    run(shell, path)
    assert night_block(path.read_text()) == ["enabled: true", "lightMonitor: false"]
    path.write_text("video0:\n  enabled: true\n")
    run(shell, path)
    assert path.read_text() == "video0:\n  enabled: true\nnightMode:\n  lightMonitor: false\n"


def test_no_majestic_yaml_is_not_an_error_and_usage(tmp_path):
    assert run(["sh"], tmp_path / "absent.yaml").returncode == 0
    assert not os.path.exists(tmp_path / "absent.yaml")
    bad = subprocess.run(["sh", SCRIPT, "bogus"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and "Usage" in bad.stdout


def test_shellcheck_is_clean():
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck is not installed")
    subprocess.run(["shellcheck", SCRIPT], check=True)
