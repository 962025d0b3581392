"""Payload parsing, error documents, presets, status and discovery inside a real
MicroPython VM (the shipped .mpy files), compared with what CPython produces.

camagent.mqtt itself needs sockets, which the VM does not have; everything it
hands received bytes to, and everything it builds documents with, runs here.
"""
import json
import os

import pytest

from agent_rig import Rig
from camagent.commands import TOPICS, CommandError, Commands, error_document
from camagent.discovery import Discovery
from camagent.presets import Presets
from camhost.simcam import fib_trie
from mpvm import MicroVM
from test_mqtt_fuzz import corpus
from test_mqtt_parsing import REJECTIONS

pytestmark = pytest.mark.micropython

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DOC = {"gpio_root": "host", "state_dir": "/input/state", "device_id": "vmcam",
       "sd_reset_on_start": False,
       "night": {"initial_mode": "DAY", "dark_below": 20, "light_above": 40, "min_dwell_s": 0}}

# a camera in the VM, started and settled for 1 s of fake time, with its command table
# (also test_onvif_micropython's)
CAMERA_SETUP = """
import json
from camagent import config
from camagent.camera import Camera
from camagent.loop import Loop
from camagent.commands import Commands, CommandError, error_document
from camagent.presets import Presets
loop = Loop()
cam = Camera(config.parse(json.dumps(doc)), gpio=HostGpio(), loop=loop)
cam.start()
clock.run_loop(loop, 1000000)
cmd = Commands(cam, Presets("/input/state/presets.json"), 10.0)
"""

SETUP = CAMERA_SETUP + """
def attempt(cases):
    out = []
    for suffix, payload in cases:
        try:
            cmd.handle(suffix, bytes(payload))
            out.append(None)
        except CommandError as e:
            out.append(str(e))
    return out
"""


@pytest.fixture
def vm():
    with MicroVM() as machine:
        machine.use_fake_clock()
        machine.put("doc", DOC)
        machine.run(SETUP)
        yield machine


def in_vm(vm, cases):
    # small batches: the VM never frees memory (gc is off, see tests/mpvm.py)
    out = []
    for i in range(0, len(cases), 20):
        vm.put("cases", [[s, list(p)] for s, p in cases[i:i + 20]])
        out.extend(vm.eval("attempt(cases)"))
    return out


def on_cpython(tmp_path, cases):
    rig = Rig(tmp_path, **{k: v for k, v in DOC.items() if k not in ("gpio_root", "state_dir")})
    try:
        rig.loop.run_for(1000000)
        cmd = Commands(rig.cam, Presets(str(tmp_path / "presets.json")), 10.0)
        out = []
        for suffix, payload in cases:
            try:
                cmd.handle(suffix, payload)
                out.append(None)
            except CommandError as e:
                out.append(str(e))
        return out
    finally:
        rig.close()


def test_rejections_in_the_vm(vm):
    messages = in_vm(vm, [(s, p) for s, p, says in REJECTIONS])
    for (suffix, payload, says), message in zip(REJECTIONS, messages):
        assert message is not None and says in message, (suffix, payload, message)
    assert vm.eval("[cmd.accepted, cmd.rejected]") == [0, len(REJECTIONS)]


def test_fuzz_corpus_gets_the_same_answers_as_on_cpython(vm, tmp_path):
    # the loop does not run between commands, so both cameras stay in step;
    # oversize payloads are cut to 600 bytes (still oversize) to spare the VM's heap; 170
    # cases: with the snapshot command and the majestic config keys, 200 no longer fit
    cases = [(s, p[:600]) for s, p in corpus(count=170)]
    guest, host = in_vm(vm, cases), on_cpython(tmp_path, cases)
    for (suffix, payload), g, h in zip(cases, guest, host):
        if g != h:   # only JSON's NaN/Infinity are worded differently (see REJECTIONS)
            assert suffix == "ptz/set" and (b"NaN" in payload or b"Infinity" in payload)
            assert g is not None and h is not None, (suffix, payload)


def test_accepted_commands_drive_the_pins_in_the_vm(vm):
    assert in_vm(vm, [("ir_led/set", b"on"), ("led_red/set", b"Blink"),
                      ("preset/save", b" Front  door ")]) == [None, None, None]
    assert vm.gpio.levels[44] == 1 and vm.gpio.levels[79] == 1
    with open(os.path.join(vm.input_dir, "state", "presets.json")) as f:
        assert list(json.load(f)["presets"]) == ["Front door"]
    vm.run("cmd.handle('pan/set', b'90')\nclock.run_loop(loop, 5000000)")
    assert vm.eval("cam.pan.position_deg()") == 90.0
    assert [vm.gpio.levels[p] for p in (14, 15, 16, 17)] == [0, 0, 0, 0]


def test_error_document_matches_cpython(vm):
    topic, payload = b"camagent/vmcam/pan/set", b"\xff\x00caf\xc3\xa9\\" + b"9" * 80
    vm.put("args", [list(topic), list(payload)])
    text = vm.eval("error_document(bytes(args[0]), bytes(args[1]), 'why')")
    assert json.loads(text) == json.loads(error_document(topic, payload, "why"))


class _Axis:
    def __init__(self, low, high):
        self.min_deg, self.max_deg = low, high


def test_discovery_documents_match_cpython(vm):
    vm.run("from camagent.discovery import Discovery\n"
           "d = Discovery('homeassistant', 'camagent/vmcam', 'vmcam', cam.board['model'], "
           "'0.1.0', 'aa:bb:cc:dd:ee:ff')\n"
           "docs = [(t.decode(), b''.join(p).decode())\n"
           "        for t, p in d.documents(cam.axes, ['door', 'gate'])]")
    guest = dict(vm.eval("docs"))
    host = Discovery("homeassistant", "camagent/vmcam", "vmcam", "IMOU Ranger RC (4 MP)", "0.1.0",
                     "aa:bb:cc:dd:ee:ff")
    expected = {t.decode(): b"".join(p).decode() for t, p in host.documents(
        {"pan": _Axis(0.0, 355.1), "tilt": _Axis(0.0, 90.0)}, ["door", "gate"])}
    # 26, and the camera and its button once snapshot/get exists
    assert guest.keys() == expected.keys() and len(guest) == 26 + 2 * ("snapshot/get" in TOPICS)
    for topic in expected:
        assert json.loads(guest[topic]) == json.loads(expected[topic]), topic
    # a new address reaches every document's device
    vm.run("changed = d.set_ip('192.0.2.9')\n"
           "docs = [(t.decode(), b''.join(p).decode())\n"
           "        for t, p in d.documents(cam.axes, ['door'])]")
    assert vm.eval("changed") is True
    for topic, text in vm.eval("docs"):
        assert json.loads(text)["dev"]["cu"] == "http://192.0.2.9/", topic   # configuration_url


def test_camera_ip_in_the_vm():
    files = {"lan/net/fib_trie": fib_trie("10.0.0.5"), "lo/net/fib_trie": fib_trie(None)}
    with MicroVM(files=files) as vm:
        vm.run("from camagent.discovery import camera_ip")
        assert vm.eval("[camera_ip('/input/lan'), camera_ip('/input/lo'), "
                       "camera_ip('/input/none')]") == ["10.0.0.5", None, None]


def test_status_parsing_in_the_vm():
    files = {"proc/meminfo": "MemTotal: 49152 kB\nMemAvailable: 21504 kB\n",
             "proc/net/wireless": "h1\nh2\n wlan0: 0000   54.  -61.  -256  0 0\n",
             "proc/mounts": "/dev/root / squashfs ro 0 0\n",
             "proc/uptime": "99.5 10.0\n",
             "net/wlan0/address": "AA:BB:CC:00:11:22\n"}
    with MicroVM(files=files) as vm:
        vm.run("from camagent.status import Status\ns = Status('/input/proc', '/input/net')")
        assert vm.eval("s.read()") == {"memory_free": 21504 * 1024, "wifi_rssi": -61,
                                       "sd_free": None}
        assert vm.eval("[s.uptime(), s.mac()]") == [99, "aa:bb:cc:00:11:22"]


# The VM has no socket module. This stand-in lets umqtt.simple import; its socket()
# refuses like a host with no broker, so the session's retry path runs for real.
USOCKET_STANDIN = """\
import errno
AF_INET = 2
def getaddrinfo(host, port, *args):
    return [(AF_INET, 1, 0, "", (host, port))]
def socket(*args):
    raise OSError(errno.ECONNREFUSED)
"""


def test_session_state_document_and_retry_in_the_vm():
    with open(os.path.join(ROOT, "build", "vendor", "umqtt", "simple.py")) as f:
        umqtt = f.read()
    files = {"umqtt/__init__.py": "", "umqtt/simple.py": umqtt, "usocket.py": USOCKET_STANDIN,
             "net/fib_trie": fib_trie("192.0.2.10")}
    with MicroVM(files=files) as vm:
        vm.use_fake_clock()
        doc = dict(DOC, proc_root="/input", mqtt={"host": "127.0.0.1", "keepalive": 60})
        vm.put("doc", doc)
        vm.run(SETUP)
        vm.run("from camagent.mqtt import Session\n"
               "session = Session(cam, config.parse(json.dumps(doc)))\n"
               "cmd = session.commands\n"
               "clock.run_loop(loop, 3000000)")
        # no broker: it is retrying with backoff, and the loop carries on
        assert vm.eval("[session.connected, session.connects, session._attempts >= 1]") == \
            [False, 0, True]
        assert in_vm(vm, [("preset/save", b"gate"), ("pan/set", b"abc")])[0] is None
        state = vm.eval("session.state_document()")
        assert state["presets"] == {"gate": {"pan": 177.5, "tilt": 45.0}}
        assert state["commands"] == {"accepted": 1, "rejected": 1}
        assert state["pan"]["position"] == 177.5 and state["version"]
        assert set(state) >= {"ir_led", "ir_cut", "night_mode", "led_green", "led_red",
                              "wifi_power", "uptime", "memory_free", "wifi_rssi", "sd_free"}
        # HA's preset select shows the preset the camera is at, and none once it moves away
        assert state["preset"] == "gate"
        assert (state["rtsp_main"], state["rtsp_sub"]) == ("rtsp://192.0.2.10:554/stream=0",
                                                           "rtsp://192.0.2.10:554/stream=1")
        assert vm.eval("session.discovery.ip") == "192.0.2.10"
        assert in_vm(vm, [("pan/set", b"100")]) == [None]
        vm.run("clock.run_loop(loop, 20000)")
        assert vm.eval("[cam.moving, session.state_document()['preset']]") == [True, None]
        # umqtt assigns client.sock: the timeout and TCP_NODELAY go onto every socket
        vm.run("from camagent.mqtt import _Client, IO_TIMEOUT_S\n"
               "class S:\n"
               "    def settimeout(self, t):\n"
               "        self.t = t\n"
               "    def setsockopt(self, level, option, value):\n"
               "        self.opt = [level, option, value]\n"
               "c = _Client(bytearray(600), 40, None, b'id', 'h')\n"
               "c.sock = S()")
        assert vm.eval("[c.sock.t == IO_TIMEOUT_S, c.port, c.sock.opt]") == \
            [True, 1883, [6, 1, 1]]     # IPPROTO_TCP, TCP_NODELAY, on
