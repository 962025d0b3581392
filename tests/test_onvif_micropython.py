"""The local channel's logic inside a real MicroPython VM (the shipped .mpy files):
request lines through parse_line, the ONVIF PTZ verbs on the command table, and
<base>/motion's ON/OFF timing, compared with CPython where both can run.

The VM has no sockets (tests/mpvm.py), so the listener itself is tested end to end in
test_localchan.py; here the motion publisher talks to a recording stand-in for the MQTT
session, with the session's own interface (base, cam, due, publish).
"""
import pytest

from agent_rig import Rig
from camagent.commands import Commands
from camagent.localchan import parse_line
from camagent.onvif import OnvifPtz, preset_number
from camagent.presets import Presets
from mpvm import MicroVM
from test_commands_micropython import CAMERA_SETUP, DOC

pytestmark = pytest.mark.micropython

SETUP = CAMERA_SETUP + """
from camagent.localchan import parse_line
from camagent.onvif import OnvifPtz
ptz = OnvifPtz(cam, cmd)

def ask(lines):
    out = []
    for line in lines:
        try:
            verb, args = parse_line(bytes(line))
            out.append("ok " + ptz.run(verb, args))
        except Exception as e:
            out.append("error " + str(e))
        clock.run_loop(loop, 20000000)   # let each move finish
    return out
"""

# a session of requests as onvif-simple-server (OpenIPC's release) sends them
SCRIPT = [
    b"get_position", b"is_moving", b"get_presets",
    b"jump_to_abs 100.000000 30.000000", b"get_position",
    b"set_preset door", b"set_preset Garden.1", b"get_presets",
    b"jump_to_rel -20.000000 10.000000", b"get_position",
    b"move_preset %d" % preset_number("door"), b"get_position",
    b"set_preset %d porch" % preset_number("door"), b"get_presets",
    b"remove_preset %d" % preset_number("Garden.1"), b"get_presets",
    b"jump_to_rel -1000 1000", b"get_position",
    b"move_left", b"get_position", b"move_up 0.5", b"get_position",
    b"move_stop zoom", b"move_stop", b"set_home_position", b"jump_to_abs 5 5",
    b"goto_home_position", b"get_position",
]
# refusals: each a sentence, nothing moves
REFUSALS = [
    b"jump_to_abs 999 1", b"jump_to_abs nan 1", b"move_right 0", b"move_right 2",
    b"move_preset 0", b"move_preset x", b"set_preset 7 new", b"set_preset bad/name",
    b"reboot now", b"\xff", b"",
]


@pytest.fixture
def vm():
    with MicroVM() as machine:
        machine.use_fake_clock()
        machine.put("doc", DOC)
        machine.run(SETUP)
        yield machine


def on_cpython(tmp_path, lines):
    rig = Rig(tmp_path, **{k: v for k, v in DOC.items() if k not in ("gpio_root", "state_dir")})
    try:
        rig.loop.run_for(1000000)
        ptz = OnvifPtz(rig.cam, Commands(rig.cam, Presets(str(tmp_path / "p.json")), 10.0))
        out = []
        for line in lines:
            try:
                verb, args = parse_line(line)
                out.append("ok " + ptz.run(verb, args))
            except Exception as e:
                out.append("error " + str(e))
            rig.loop.run_for(20000000)
        return out
    finally:
        rig.close()


def in_vm(vm, lines):
    out = []
    for i in range(0, len(lines), 8):    # small batches: the VM never frees memory
        vm.put("lines", [list(x) for x in lines[i:i + 8]])
        out.extend(vm.eval("ask(lines)"))
    return out


def test_onvif_session_in_the_vm_matches_cpython(vm, tmp_path):
    guest, host = in_vm(vm, SCRIPT), on_cpython(tmp_path, SCRIPT)
    assert guest == host
    answers = dict(zip(SCRIPT, guest))
    door, garden = preset_number("door"), preset_number("Garden.1")
    assert answers[b"jump_to_abs 100.000000 30.000000"] == "ok "
    assert guest[4] == "ok 100.0,30.0,0.0"
    assert guest[7] == "ok %d=Garden.1,100.0,30.0\n%d=door,100.0,30.0" % (garden, door)
    assert guest[9] == "ok 80.0,40.0,0.0"
    assert guest[11] == "ok 100.0,30.0,0.0"
    porch = preset_number("porch")
    assert guest[13] == "ok %d=Garden.1,100.0,30.0\n%d=porch,100.0,30.0" % (garden, porch)
    assert guest[15] == "ok %d=porch,100.0,30.0" % porch
    assert guest[17] == "ok 0.0,90.0,0.0"           # a relative move clamps at the limits
    assert guest[18] == guest[20] == "ok "          # at the limits already: nothing to do
    assert guest[19] == guest[21] == "ok 0.0,90.0,0.0"
    assert guest[27] == "ok 0.0,90.0,0.0"           # home: the saved "home" preset


def test_refusals_in_the_vm_match_cpython(vm, tmp_path):
    refusals, host = in_vm(vm, REFUSALS), on_cpython(tmp_path, REFUSALS)
    assert refusals == host
    assert len(refusals) == 11
    for text, why in zip(refusals, (
            "out of range", "not a finite number", "velocity 0 is out of range",
            "velocity 2 is out of range", "no preset has ONVIF number 0", "not a whole number",
            "no preset has ONVIF number 7", "not accepted", "unknown command reboot",
            "not text", "empty line")):
        assert text.startswith("error ") and why in text, (text, why)


def test_numbers_are_stable_and_case_blind():
    assert preset_number("Door") == preset_number("door")
    assert preset_number("door") != preset_number("porch")
    assert all(1 <= preset_number(n) <= 99991 for n in ("a", "z" * 24, "Front door"))


def test_name_with_space_is_listed_readably(tmp_path):
    rig = Rig(tmp_path, sd_reset_on_start=False)
    try:
        ptz = OnvifPtz(rig.cam, Commands(rig.cam, Presets(str(tmp_path / "p.json")), 10.0))
        ptz.commands.handle("preset/save", b"front door")
        number = preset_number("front door")
        # the server reads "%d=%s ..." so the space would end the name: shown as _
        assert ptz.get_presets([]).startswith("%d=front_door," % number)
        ptz.move_preset([str(number)])
        assert ptz.changed
    finally:
        rig.close()


MOTION = """
from camagent.motion import Motion

class Recorder:
    # the MQTT session's interface as Motion uses it; `up` says whether a broker is there
    def __init__(self, cam):
        self.base = "camagent/vmcam"
        self.cam = cam
        self.due = None
        self.up = False
        self.sent = []

    def publish(self, topic, payload, retain=False):
        if not self.up:
            return False
        self.sent.append([topic.decode(), payload.decode(), retain, clock.monotonic_s()])
        return True

class Relay:
    # the camera's snapshot relay (snapshot.Relay) as Motion uses it
    def __init__(self):
        self.snapshots = []

    def request_snapshot(self, reason):
        self.snapshots.append(reason)

cam.snapshot = Relay()
rec = Recorder(cam)
motion = Motion(rec, {"quiet_s": 30, "snapshot": True})
"""


def test_motion_timing_in_the_vm(vm):
    vm.run(MOTION)
    vm.run("clock.run_loop(loop, 5000000)")
    assert vm.eval("rec.sent") == []                  # no broker yet: nothing, no crash
    vm.run("rec.due = clock.ticks_us()\nrec.up = True\nclock.run_loop(loop, 1000000)")
    sent = vm.eval("rec.sent")
    assert [s[:3] for s in sent] == [["camagent/vmcam/motion", "OFF", True]]
    t0 = vm.eval("clock.monotonic_s()")
    vm.run("motion.detected()\nclock.run_loop(loop, 20000000)\nmotion.detected()")
    vm.run("clock.run_loop(loop, 29000000)")
    assert [s[1] for s in vm.eval("rec.sent")] == ["OFF", "ON"]   # 20 + 29 s: still ON
    vm.run("clock.run_loop(loop, 5000000)")
    sent = vm.eval("rec.sent")
    assert [s[1] for s in sent] == ["OFF", "ON", "OFF"]
    on_at, off_at = sent[1][3], sent[2][3]
    assert off_at - on_at == 50                        # quiet_s after the second detection
    assert on_at == t0
    assert vm.eval("cam.snapshot.snapshots") == ["motion"]      # once per ON, not per detection
    assert vm.eval("motion.events") == 2
