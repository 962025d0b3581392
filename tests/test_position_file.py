"""A damaged state_dir/position.json (bad sector, hand edit, old format) must never stop
the agent starting: the axes start at park, not homed, and the state says why."""
import json
import os

import pytest

from agent_rig import Rig
from mpvm import MicroVM

GOOD_TILT = {"steps": 100, "phase": 4, "homed": True}


def doc(pan, tilt=GOOD_TILT, at_rest=True):
    return json.dumps({"at_rest": at_rest, "pan": pan, "tilt": tilt})


# (case id, file text, words the problem sentence must contain)
DAMAGED = [
    ("truncated", '{"at_rest": true, "pan": {"steps": 12', "not JSON"),
    ("empty", "", "not JSON"),
    ("binary", "\x00\xff\x13", "not JSON"),
    ("list", "[1, 2, 3]", "not a position file"),
    ("number", "42", "not a position file"),
    ("at_rest_string", json.dumps({"at_rest": "true", "pan": GOOD_TILT, "tilt": GOOD_TILT}),
     "not a position file"),
    ("steps_overflow", '{"at_rest": true, "pan": {"steps": 1e999, "phase": 0, "homed": true},'
     ' "tilt": {"steps": 100, "phase": 4, "homed": true}}', "pan position"),
    ("steps_nan", '{"at_rest": true, "pan": {"steps": NaN, "phase": 0, "homed": true},'
     ' "tilt": {"steps": 100, "phase": 4, "homed": true}}', "pan position"),
    ("steps_float", doc({"steps": 12.5, "phase": 0, "homed": True}), "pan position"),
    ("steps_string", doc({"steps": "12", "phase": 0, "homed": True}), "pan position"),
    ("homed_string", doc({"steps": 12, "phase": 0, "homed": "false"}), "pan position"),
    ("homed_missing", doc({"steps": 12, "phase": 0}), "pan position"),
    ("steps_bool", doc({"steps": True, "phase": 0, "homed": True}), "pan position"),
    ("axis_list", doc([12, 0, True]), "no pan position"),
    ("axis_missing", json.dumps({"at_rest": True, "tilt": GOOD_TILT}), "no pan position"),
    ("steps_huge", doc({"steps": 10 ** 30, "phase": 0, "homed": True}), "pan steps"),
    ("steps_negative", doc({"steps": -5000, "phase": 0, "homed": True}), "pan steps"),
    ("phase_out_of_range", doc({"steps": 12, "phase": 8, "homed": True}), "pan phase"),
    ("tilt_bad", doc({"steps": 12, "phase": 0, "homed": True}, tilt={"steps": None}),
     "tilt position"),
]


def write_state(tmp_path, text):
    os.makedirs(tmp_path / "state", exist_ok=True)
    with open(tmp_path / "state" / "position.json", "w", encoding="latin-1") as f:
        f.write(text)


@pytest.mark.parametrize("text,words", [c[1:] for c in DAMAGED], ids=[c[0] for c in DAMAGED])
def test_damaged_file_means_park_unhomed_and_a_problem(tmp_path, text, words):
    write_state(tmp_path, text)
    rig = Rig(tmp_path, sd_reset_on_start=False)
    try:
        cam = rig.cam
        for axis in (cam.pan, cam.tilt):
            assert not axis.homed and axis.steps == axis.park == axis.target, axis.name
        problems = cam.hardware_state()["problems"]
        assert len(problems) == 1, problems
        assert "position.json is damaged" in problems[0] and words in problems[0], problems
        assert "park position, not homed" in problems[0]
        json.dumps(cam.hardware_state())   # the state still publishes as JSON
    finally:
        rig.close()


def test_good_file_is_restored_without_problems(tmp_path):
    write_state(tmp_path, doc({"steps": 12, "phase": 3, "homed": True}))
    rig = Rig(tmp_path, sd_reset_on_start=False)
    try:
        assert rig.cam.pan.steps == 12 and rig.cam.pan.phase == 3 and rig.cam.pan.homed
        assert rig.cam.tilt.steps == 100 and rig.cam.tilt.homed
        assert rig.cam.problems() == []
    finally:
        rig.close()


@pytest.mark.parametrize("text", [None, doc({"steps": 12, "phase": 0, "homed": True},
                                            at_rest=False)], ids=["missing", "interrupted_move"])
def test_missing_file_or_interrupted_move_is_not_a_problem(tmp_path, text):
    if text is not None:
        write_state(tmp_path, text)
    rig = Rig(tmp_path, sd_reset_on_start=False)
    try:
        assert not rig.cam.pan.homed and rig.cam.pan.steps == rig.cam.pan.park
        assert rig.cam.problems() == []
    finally:
        rig.close()


VM_SETUP = """
import json
from camagent import config
from camagent.camera import Camera
from camagent.loop import Loop
try:
    import os
    os.mkdir("/input/state")
except OSError:
    pass
with open("/input/state/position.json", "w") as f:
    f.write(text)
cam = Camera(config.parse(json.dumps(doc)), gpio=HostGpio(), loop=Loop())
result = [cam.pan.homed, cam.pan.steps == cam.pan.park, cam.tilt.homed,
          cam.tilt.steps == cam.tilt.park, cam.problems()]
"""

# MicroPython's json does not read NaN at all: there the file is simply not JSON
VM_WORDS = {"steps_nan": "not JSON"}
VM_CASES = ["truncated", "list", "steps_overflow", "steps_nan", "homed_string", "steps_huge",
            "axis_list"]


@pytest.mark.micropython
@pytest.mark.parametrize("case", VM_CASES)
def test_damaged_file_in_micropython(case):
    text, words = {c[0]: c[1:] for c in DAMAGED}[case]
    words = VM_WORDS.get(case, words)
    with MicroVM() as vm:
        vm.use_fake_clock()
        vm.put("doc", {"gpio_root": "host", "state_dir": "/input/state", "device_id": "vm",
                       "sd_reset_on_start": False})
        vm.put("text", text)
        vm.run(VM_SETUP)
        pan_homed, pan_parked, tilt_homed, tilt_parked, problems = vm.eval("result")
    assert not pan_homed and pan_parked and not tilt_homed and tilt_parked
    assert len(problems) == 1 and words in problems[0], problems
