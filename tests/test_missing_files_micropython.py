"""Missing files never cost the MQTT connection on a stock MicroPython 1.22.0.

In 1.22.0 an open() that fails leaves a half-made file object on fd 0 whose finaliser
closes fd 0 when the garbage collector frees it (upstream issue 13672, fixed in 1.23 by
2962e24167, which buildroot-package/patches/common backports). A user's own 1.22.0
binary on the repack path has no fix, so the agent never opens a file that may be
missing. Here the interpreter starts with stdin closed, so the MQTT socket is fd 0, as it
ends up on the camera after the first such collection; then every reader the agent has
for files that may be missing runs against missing paths, with collections in between,
and the connection must still carry a message to a real mosquitto.

Runs when the MICROPYTHON environment variable names a MicroPython 1.22 unix-port
binary; skipped otherwise.
"""
import json
import os
import subprocess

import pytest

from broker_fixtures import Watcher, mosquitto, stop_leftovers  # noqa: F401 (fixtures)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MICROPYTHON = os.environ.get("MICROPYTHON")
pytestmark = pytest.mark.skipif(not MICROPYTHON, reason="MICROPYTHON not set")

GUEST = r"""
import gc, json, sys
from umqtt.simple import MQTTClient
from camagent import compat, config, persist
from camagent.light import FileLight
from camagent.presets import Presets
from camagent.status import Status

host, port, missing, read_only = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]


class Camera:
    # what FileLight asks of the camera: the clock, the IR controller, change notices
    def __init__(self):
        self.ir = self
        self.levels = []

    def now(self):
        return 0

    def set_light(self, level):
        self.levels.append(level)

    def changed(self):
        pass


client = MQTTClient("fd0-guest", host, port)
client.connect()
fd = client.sock.fileno()
light = FileLight(Camera(), missing + "/light", 10)
for i in range(5):
    problems = []    # what this round's readers said
    problems.append(persist.read_json(missing + "/position.json"))
    problems.append(Presets(missing + "/presets.json").load_error)
    status = Status(proc_root=missing, net_root=missing)
    problems.append([status.read(), status.mac(), status.uptime()])
    light.tick(0)
    problems.append(light.error)
    try:
        config.load(missing + "/camagent.json")
    except config.ConfigError as e:
        problems.append(str(e))
    for directory in (missing, read_only):
        if directory:
            try:        # saves that cannot be made, as PositionStore and Presets make them
                persist.write_json(directory + "/position.json", {"at_rest": True})
            except OSError as e:
                problems.append(compat.reason(e))
    gc.collect()      # on 1.22.0 this is where a half-made file object closes fd 0
client.publish(b"fd0/alive", json.dumps({"fd": fd, "seen": problems}))
client.disconnect()
"""


def read_only_tmpfs(where):
    """Mount a read-only tmpfs at `where`; False when this machine does not let us."""
    os.makedirs(where)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", where],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def test_missing_files_and_collections_keep_the_socket_on_fd_0(tmp_path, mosquitto):
    missing = str(tmp_path / "nothing-here")
    read_only = str(tmp_path / "ro")
    if not read_only_tmpfs(read_only):
        read_only = ""      # the save to a read-only state_dir is left out here
    try:
        report = run_guest(mosquitto, missing, read_only)
    finally:
        if read_only:
            subprocess.run(["umount", read_only], check=True)
    assert report["fd"] == 0        # the case that matters: the socket is fd 0
    position, presets, status, light_error, config_error = report["seen"][:5]
    assert position is None and presets is None           # missing: nothing saved yet
    assert status == [{"memory_free": None, "wifi_rssi": None, "sd_free": None}, None, None]
    assert light_error == "light file %s/light: no such file or directory" % missing
    assert config_error == ("%s/camagent.json: cannot read (no such file or directory)"
                            % missing)
    assert report["seen"][5:] == ["no such file or directory"] + (
        ["read-only file system"] if read_only else [])


def run_guest(mosquitto, missing, read_only):
    w = Watcher(mosquitto, ["fd0/alive"])
    try:
        env = dict(os.environ, MICROPYPATH=":".join([os.path.join(ROOT, "agent"),
                                                    os.path.join(ROOT, "build", "vendor")]))
        proc = subprocess.run(
            ["sh", "-c", 'exec "$0" "$@" <&-', MICROPYTHON, "-c", GUEST, "127.0.0.1",
             str(mosquitto.port), missing, read_only],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        out = proc.stdout.decode(errors="replace")
        assert proc.returncode == 0, out
        i, t, p = w.wait_for(lambda t, p: True, "the guest's message")
    finally:
        w.close()
    return json.loads(p)
