"""Stepper behaviour, checked from the recorded sysfs writes."""
import json
import os

import pytest

from agent_rig import Rig
from camagent.stepper import PHASES, ramp_table


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path, sd_reset_on_start=False)
    r.loop.run_until_idle()  # let start-up pulses finish
    yield r
    r.close()


def coil_patterns(rig, axis, since=0):
    """Replay the axis' writes: the 4-line pattern after each write, with its time."""
    pins = rig.pins(axis)
    state = [0, 0, 0, 0]
    out = []
    for pin, value, t in rig.writes_to(pins, since):
        state[pins.index(pin)] = value
        out.append((sum(bit << i for i, bit in enumerate(state)), t))
    return out


def step_patterns(patterns):
    """The patterns the motor stepped through (after energising, before release)."""
    return [p for p, _ in patterns if p in PHASES]


def test_every_half_step_changes_exactly_one_line(rig):
    start = len(rig.rec.writes)
    rig.cam.pan.move_to(rig.cam.pan.steps + 40)
    rig.loop.run_until(lambda: not rig.cam.pan.moving)
    pats = coil_patterns(rig, "pan", start)
    seq = step_patterns(pats)
    # energise: the current phase (1 or 2 lines), then 40 single-line steps
    energise_writes = bin(seq[0]).count("1")
    steps = seq[energise_writes - 1:]
    assert len(steps) == 41  # the starting phase plus 40 steps
    for a, b in zip(steps, steps[1:]):
        assert bin(a ^ b).count("1") == 1
        assert PHASES.index(b) == (PHASES.index(a) + 1) % 8
    # one write per step: 40 steps + energise + release
    released = bin(steps[-1]).count("1")
    assert len(pats) == energise_writes + 40 + released


def test_reverse_walks_the_phases_backwards(rig):
    start = len(rig.rec.writes)
    rig.cam.tilt.move_to(rig.cam.tilt.steps - 9)
    rig.loop.run_until(lambda: not rig.cam.tilt.moving)
    seq = step_patterns(coil_patterns(rig, "tilt", start))
    seq = seq[bin(seq[0]).count("1") - 1:]
    for a, b in zip(seq, seq[1:]):
        assert PHASES.index(b) == (PHASES.index(a) - 1) % 8
    assert rig.cam.tilt.steps == rig.cam.tilt.park - 9


def test_coils_released_when_a_move_ends(rig):
    rig.cam.pan.move_to(rig.cam.pan.steps + 11)
    rig.loop.run_until(lambda: not rig.cam.pan.moving)
    assert [rig.fs.value(p) for p in rig.pins("pan")] == [0, 0, 0, 0]
    assert not rig.cam.pan.energised


def test_only_changed_lines_are_written(rig):
    start = len(rig.rec.writes)
    rig.cam.pan.move_to(rig.cam.pan.steps + 100)
    rig.loop.run_until(lambda: not rig.cam.pan.moving)
    state = {}
    for pin, value, _ in rig.writes_to(rig.pins("pan"), start):
        assert state.get(pin, 0) != value, "rewrote GPIO %d with its current level" % pin
        state[pin] = value


def test_axes_move_concurrently(rig):
    start = len(rig.rec.writes)
    rig.cam.pan.move_to(rig.cam.pan.steps + 200)
    rig.cam.tilt.move_to(rig.cam.tilt.steps + 200)
    rig.loop.run_until(lambda: not rig.cam.moving)
    pan_t = [t for _, _, t in rig.writes_to(rig.pins("pan"), start)]
    tilt_t = [t for _, _, t in rig.writes_to(rig.pins("tilt"), start)]
    # each axis keeps its own timing and they overlap instead of running one after the other
    assert tilt_t[0] < pan_t[-1] and pan_t[0] < tilt_t[-1]
    assert pan_t[len(pan_t) // 2] < tilt_t[-1]


def test_ramp_accelerates_cruises_and_decelerates(rig):
    axis = rig.cam.pan
    start = len(rig.rec.writes)
    axis.move_to(axis.steps + 800)
    rig.loop.run_until(lambda: not axis.moving)
    times = [t for p, t in coil_patterns(rig, "pan", start)]
    # drop energise writes (same instant) and the release writes
    step_times = sorted(set(times))
    intervals = [b - a for a, b in zip(step_times, step_times[1:])]
    ramp = ramp_table(axis.start_speed, axis.default_speed, axis.accel)
    cruise = ramp[-1]
    assert intervals[0] == ramp[0]                       # starts at the start speed
    assert min(intervals) == cruise                      # reaches the configured speed
    top = intervals.index(cruise)
    assert all(a >= b for a, b in zip(intervals[:top], intervals[1:top + 1]))   # speeds up
    last_cruise = len(intervals) - 1 - intervals[::-1].index(cruise)
    tail = intervals[last_cruise:]
    assert all(a <= b for a, b in zip(tail, tail[1:]))   # slows down
    assert tail[-1] == ramp[0]                           # stops from the start speed
    assert len(tail) - 1 == top                          # symmetric ramps


def test_target_outside_limits_is_clamped_and_reported(rig):
    axis = rig.cam.tilt
    assert axis.move_to_deg(500) is True
    assert axis.target == axis.max_steps
    rig.loop.run_until(lambda: not axis.moving)
    assert axis.steps == axis.max_steps
    assert axis.move_to_deg(-10) is True
    rig.loop.run_until(lambda: not axis.moving)
    assert axis.steps == axis.min_steps
    assert rig.cam.hardware_state()["tilt"]["clamped"] is True
    assert axis.move_by_deg(-5) is True          # relative moves clamp the same way
    assert axis.move_to_deg(45) is False
    assert rig.cam.hardware_state()["tilt"]["clamped"] is False


def test_stop_preempts_at_once_and_releases(rig):
    axis = rig.cam.pan
    axis.move_to(axis.max_steps)
    rig.loop.run_until(lambda: axis.steps >= axis.park + 50)
    where = axis.steps
    axis.stop()
    after = len(rig.rec.writes)
    rig.loop.run_until_idle()
    assert axis.steps == where and not axis.moving
    assert [p for p, v, _ in rig.writes_to(rig.pins("pan"), after)] == []
    assert [rig.fs.value(p) for p in rig.pins("pan")] == [0, 0, 0, 0]


def test_retarget_backwards_brakes_then_reverses(rig):
    axis = rig.cam.pan
    start = axis.steps
    axis.move_to(start + 600)
    rig.loop.run_until(lambda: axis.steps >= start + 300)
    turn = axis.steps
    axis.move_to(start)
    rig.loop.run_until(lambda: not axis.moving)
    assert axis.steps == start
    seq = step_patterns(coil_patterns(rig, "pan"))
    assert all(bin(a ^ b).count("1") <= 1 for a, b in zip(seq, seq[1:]))
    assert axis.max_steps >= turn  # braking never left the range


def test_homing_drives_past_the_range_then_parks(rig):
    axis = rig.cam.tilt
    start = len(rig.rec.writes)
    axis.home()
    assert not axis.homed
    rig.loop.run_until(lambda: axis.homed and not axis.moving)
    assert axis.steps == axis.park
    seq = step_patterns(coil_patterns(rig, "tilt", start))
    moves = [(PHASES.index(b) - PHASES.index(a)) % 8 for a, b in zip(seq, seq[1:])]
    down = moves.index(1) if 1 in moves else len(moves)
    assert down >= axis.max_steps - axis.min_steps + axis.home_margin - 1
    assert moves[down:].count(1) == axis.park - axis.min_steps


def test_stop_during_homing_leaves_axis_unhomed(rig):
    axis = rig.cam.pan
    axis.home()
    rig.loop.run_for(50000)
    axis.stop()
    assert not axis.homed and not axis.moving


def test_bad_numbers_are_refused(rig):
    for bad in (float("nan"), float("inf"), "12", None, True):
        with pytest.raises(ValueError):
            rig.cam.pan.move_to_deg(bad)
    with pytest.raises(ValueError, match="deg/s"):
        rig.cam.pan.move_to_deg(10, speed_dps=10000)
    assert not rig.cam.pan.moving


def test_position_saved_after_moves_and_restored(rig, tmp_path):
    axis = rig.cam.pan
    axis.home()
    rig.loop.run_until(lambda: axis.homed and not axis.moving)
    axis.move_to(1234)
    rig.loop.run_until_idle()
    doc = json.load(open(tmp_path / "state" / "position.json"))
    assert doc["at_rest"] is True and doc["pan"]["steps"] == 1234 and doc["pan"]["homed"]
    cam = rig.restart()
    assert cam.pan.steps == 1234 and cam.pan.homed
    assert cam.pan.phase == doc["pan"]["phase"]
    assert not cam.tilt.homed


def test_position_of_an_interrupted_move_is_not_trusted(rig, tmp_path):
    axis = rig.cam.pan
    axis.home()
    rig.loop.run_until(lambda: axis.homed and not axis.moving)
    rig.loop.run_until_idle()
    axis.move_to(axis.max_steps)
    rig.loop.run_for(100000)      # power cut mid-move: no clean shutdown
    doc = json.load(open(tmp_path / "state" / "position.json"))
    assert doc["at_rest"] is False
    rig.cam.gpio.release_all()
    cam = rig.build()
    assert not cam.pan.homed


def test_corrupt_saved_position_means_unhomed(rig, tmp_path):
    rig.cam.close()
    with open(tmp_path / "state" / "position.json", "w") as f:
        f.write('{"at_rest": true, "pan": {"steps": "x"')
    cam = rig.build()
    assert not cam.pan.homed and cam.pan.steps == cam.pan.park


def test_saves_are_rate_limited(rig):
    store = rig.cam.positions
    writes = store.writes
    for i in range(5):
        rig.cam.pan.move_to(rig.cam.pan.steps + 20)
        rig.loop.run_until(lambda: not rig.cam.moving)
        rig.loop.run_for(1000000)
    rig.loop.run_until_idle()
    # one "moving" mark for the burst and one save after it, not two per move
    assert store.writes - writes == 2


def test_home_on_boot(tmp_path):
    rig = Rig(tmp_path, home_on_boot=True)
    try:
        assert rig.cam.pan.homing and rig.cam.tilt.homing
        rig.loop.run_until(lambda: rig.cam.pan.homed and rig.cam.tilt.homed and not rig.cam.moving)
        assert rig.cam.pan.steps == rig.cam.pan.park
    finally:
        rig.close()


def test_failed_coil_write_names_pin_and_file(rig):
    from camagent.gpio import GpioError
    pin = rig.pins("pan")[1]
    rig.rec.fail_pins.add(pin)
    rig.cam.pan.move_to(rig.cam.pan.steps + 10)
    with pytest.raises(GpioError) as e:
        rig.loop.run_until(lambda: not rig.cam.pan.moving)
    assert "GPIO %d" % pin in str(e.value) and os.path.join("gpio%d" % pin, "value") in str(e.value)
