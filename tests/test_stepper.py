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


def one_move(rig, axis, since):
    """One move's coil writes split into (energise, steps, release), each [(pin, value, t)].

    Energising is every write at the move's first instant; the release is the last
    four writes, each line written low once, whatever it held.
    """
    pins = rig.pins(axis)
    writes = rig.writes_to(pins, since)
    n = sum(1 for w in writes if w[2] == writes[0][2])
    energise, steps, release = writes[:n], writes[n:-4], writes[-4:]
    assert sorted(p for p, v, t in release) == sorted(pins)
    assert [v for p, v, t in release] == [0, 0, 0, 0]
    assert len(set(t for p, v, t in release)) == 1
    return energise, steps, release


def phases_walked(rig, axis, since):
    """The energised phase, then the phase after each step, of one move."""
    energise, steps, release = one_move(rig, axis, since)
    pats = coil_patterns(rig, axis, since)
    return [p for p, t in pats[len(energise) - 1:len(energise) + len(steps)]]


def step_intervals(rig, axis, since):
    """Time from energising to the first step, then between steps, of one move."""
    energise, steps, release = one_move(rig, axis, since)
    times = [energise[0][2]] + [t for p, v, t in steps]
    return [b - a for a, b in zip(times, times[1:])]


def assert_no_sudden_slowdown(axis, intervals):
    """Each step slows by one ramp level at most: speed^2 drops by at most 2 * accel.

    A speed at or below the start speed counts as the start speed: a motor can stop
    from it at once (each move's first and last steps come at it). Intervals are
    whole microseconds, rounded down, so each is given the reading kindest to it.
    """
    for i, (a, b) in enumerate(zip(intervals, intervals[1:])):
        before = 1e6 / (a + 1)
        after = max(1e6 / b, axis.start_speed)
        assert after * after >= before * before - 2 * axis.accel, \
            "step %d: %d us after %d us is a sudden slowdown" % (i + 1, b, a)


def test_every_half_step_changes_exactly_one_line(rig):
    start = len(rig.rec.writes)
    rig.cam.pan.move_to(rig.cam.pan.steps + 40)
    rig.loop.run_until(lambda: not rig.cam.pan.moving)
    energise, steps, release = one_move(rig, "pan", start)
    # energise: the current phase's 1 or 2 lines; then one write per half-step
    assert len(steps) == 40 and [v for p, v, t in energise] in ([1], [1, 1])
    seq = phases_walked(rig, "pan", start)
    assert len(seq) == 41 and seq[0] in PHASES   # the starting phase plus 40 steps
    for a, b in zip(seq, seq[1:]):
        assert bin(a ^ b).count("1") == 1
        assert PHASES.index(b) == (PHASES.index(a) + 1) % 8


def test_reverse_walks_the_phases_backwards(rig):
    start = len(rig.rec.writes)
    rig.cam.tilt.move_to(rig.cam.tilt.steps - 9)
    rig.loop.run_until(lambda: not rig.cam.tilt.moving)
    seq = phases_walked(rig, "tilt", start)
    assert len(seq) == 10
    for a, b in zip(seq, seq[1:]):
        assert PHASES.index(b) == (PHASES.index(a) - 1) % 8
    assert rig.cam.tilt.steps == rig.cam.tilt.park - 9


def test_coils_released_when_a_move_ends(rig):
    start = len(rig.rec.writes)
    rig.cam.pan.move_to(rig.cam.pan.steps + 11)
    rig.loop.run_until(lambda: not rig.cam.pan.moving)
    one_move(rig, "pan", start)      # ends with all four lines written low
    assert [rig.fs.value(p) for p in rig.pins("pan")] == [0, 0, 0, 0]


def test_only_changed_lines_are_written_while_moving(rig):
    start = len(rig.rec.writes)
    rig.cam.pan.move_to(rig.cam.pan.steps + 100)
    rig.loop.run_until(lambda: not rig.cam.pan.moving)
    energise, steps, release = one_move(rig, "pan", start)
    state = {}
    for pin, value, _ in energise + steps:
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
    intervals = step_intervals(rig, "pan", start)
    assert len(intervals) == 800
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
    assert_no_sudden_slowdown(axis, intervals)


def test_last_phase_is_held_like_the_first_before_release(rig):
    axis = rig.cam.tilt
    start = len(rig.rec.writes)
    axis.move_to(axis.steps + 30)
    rig.loop.run_until(lambda: axis.moving and axis.steps == axis.target)
    assert axis.moving                     # on the target, still holding it
    rig.loop.run_until(lambda: not axis.moving)
    energise, steps, release = one_move(rig, "tilt", start)
    start_interval = ramp_table(axis.start_speed, axis.default_speed, axis.accel)[0]
    assert steps[0][2] - energise[0][2] == start_interval
    assert release[0][2] - steps[-1][2] == start_interval


def test_nearer_target_at_speed_slows_down_one_level_per_step(rig):
    axis = rig.cam.pan
    start = len(rig.rec.writes)
    origin = axis.steps
    axis.move_to(origin + 1500)
    cruise = ramp_table(axis.start_speed, axis.default_speed, axis.accel)[-1]
    rig.loop.run_until(lambda: axis.steps >= origin + 300)     # cruising by now
    turn = axis.steps + 5
    axis.move_to(turn)                     # 5 steps ahead, far too near to stop on
    rig.loop.run_until(lambda: not axis.moving)
    assert axis.steps == turn
    intervals = step_intervals(rig, "pan", start)
    assert cruise in intervals
    assert_no_sudden_slowdown(axis, intervals)
    seq = phases_walked(rig, "pan", start)  # it overshot and came back, one line per step
    assert all(bin(a ^ b).count("1") == 1 for a, b in zip(seq, seq[1:]))
    assert len(seq) - 1 > turn - origin
    assert [rig.fs.value(p) for p in rig.pins("pan")] == [0, 0, 0, 0]


@pytest.mark.parametrize("dps", [5, 30])
def test_lower_speed_mid_move_slows_down_one_level_per_step(rig, dps):
    axis = rig.cam.pan
    start = len(rig.rec.writes)
    origin = axis.steps
    axis.move_to(origin + 1500)
    rig.loop.run_until(lambda: axis.steps >= origin + 300)
    axis.move_to_deg(axis.steps_to_deg(origin + 1500), speed_dps=dps)
    rig.loop.run_until(lambda: not axis.moving)
    assert axis.steps == origin + 1500
    intervals = step_intervals(rig, "pan", start)
    assert_no_sudden_slowdown(axis, intervals)
    slow = int(1e6 / (dps * axis.steps_per_degree))     # the new cruise interval
    assert intervals.count(slow) > 100


def test_higher_speed_mid_move_speeds_up_gradually(rig):
    axis = rig.cam.pan
    start = len(rig.rec.writes)
    origin = axis.steps
    axis.move_to(origin + 1500, 300)
    rig.loop.run_until(lambda: axis.steps >= origin + 200)
    axis.move_to(origin + 1500, axis.max_speed)
    rig.loop.run_until(lambda: not axis.moving)
    intervals = step_intervals(rig, "pan", start)
    fastest = ramp_table(axis.start_speed, axis.max_speed, axis.accel)
    assert min(intervals) == fastest[-1]
    i = intervals.index(int(1e6 / 300)) + 1
    while intervals[i] == int(1e6 / 300):
        i += 1
    rising = intervals[i:intervals.index(fastest[-1]) + 1]
    assert rising == sorted(rising, reverse=True) and len(rising) > 50   # level by level
    assert_no_sudden_slowdown(axis, intervals)


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
    rig.rec.fail_pins.clear()


def test_failed_energise_releases_the_coils_and_the_axis_moves_again(rig):
    from camagent.gpio import GpioError
    axis = rig.cam.pan
    axis.phase = 1                        # phase AB: energising writes line A, then B
    where = axis.steps
    a, b = rig.pins("pan")[:2]
    rig.rec.fail_pins.add(b)
    start = len(rig.rec.writes)
    with pytest.raises(GpioError, match="GPIO %d" % b):
        axis.move_to(where + 50)
    assert (a, 1) in rig.rec.writes[start:]       # A was driven before B failed...
    assert rig.fs.value(a) == 0                   # ...and released again
    assert not axis.moving and axis.due is None and not rig.cam.busy
    assert axis.target == axis.steps == where
    rig.rec.fail_pins.clear()
    axis.move_to(where + 50)
    rig.loop.run_until(lambda: not axis.moving)
    assert axis.steps == where + 50
    assert [rig.fs.value(p) for p in rig.pins("pan")] == [0, 0, 0, 0]


def test_failed_energise_while_homing_leaves_the_axis_unhomed_not_homing(rig):
    from camagent.gpio import GpioError
    axis = rig.cam.tilt
    rig.rec.fail_pins.add(rig.pins("tilt")[axis.phase])
    with pytest.raises(GpioError):
        axis.home()
    assert not axis.homing and not axis.homed and not axis.moving
    assert axis.steps == axis.park
    rig.rec.fail_pins.clear()


class _InterruptedAfterWrite:
    """A value file whose next write of `level` lands, then Ctrl-C arrives (MicroPython
    raises a pending KeyboardInterrupt as the try block around the write ends)."""

    def __init__(self, f, level):
        self._f = f
        self._level = level

    def seek(self, pos):
        return self._f.seek(pos)

    def write(self, data):
        n = self._f.write(data)
        if self._level is not None and int(data) == self._level:
            self._level = None
            raise KeyboardInterrupt
        return n

    def close(self):
        self._f.close()


def test_coil_raised_as_ctrl_c_arrives_mid_move_is_released_at_close(rig):
    from camagent.stepper import _FORWARD
    axis = rig.cam.pan
    axis.move_to(axis.steps + 100)
    rig.loop.run_until(lambda: axis.phase % 2 == 0)   # a one-line phase: next, a line goes high
    line, level = _FORWARD[axis.phase]
    assert level == 1
    coil = axis._lines[line]
    coil._f = _InterruptedAfterWrite(coil._f, 1)
    with pytest.raises(KeyboardInterrupt):
        rig.loop.run_until(lambda: not axis.moving)
    assert rig.fs.value(coil.pin) == 1               # the write landed
    rig.cam.close()                                  # what the agent does on the way out
    assert [w for w in rig.rec.writes if w[0] == coil.pin][-1] == (coil.pin, 0)


def test_coil_raised_as_ctrl_c_arrives_while_energising_is_released_at_once(rig):
    axis = rig.cam.pan
    axis.phase = 1                                   # phase AB: lines A and B go high
    coil = axis._lines[1]
    coil._f = _InterruptedAfterWrite(coil._f, 1)
    with pytest.raises(KeyboardInterrupt):
        axis.move_to(axis.steps + 100)
    assert [rig.fs.value(p) for p in rig.pins("pan")] == [0, 0, 0, 0]
    assert not axis.moving and axis.due is None


def test_coil_cleared_as_ctrl_c_arrives_mid_move_is_left_low(rig):
    from camagent.stepper import _FORWARD
    axis = rig.cam.pan
    axis.move_to(axis.steps + 100)
    rig.loop.run_until(lambda: axis.phase % 2)      # a two-line phase: next, a line goes low
    line, level = _FORWARD[axis.phase]
    assert level == 0
    coil = axis._lines[line]
    coil._f = _InterruptedAfterWrite(coil._f, 0)
    with pytest.raises(KeyboardInterrupt):
        rig.loop.run_until(lambda: not axis.moving)
    rig.cam.close()
    assert all(line.value == 0 for line in axis._lines)
    assert [v for p, v in rig.rec.writes if p in rig.pins("pan")][-4:] == [0, 0, 0, 0]


def test_reported_position_stays_within_the_announced_range_while_homing(rig):
    """Homing overshoots on purpose; the state never says so (HA drops such a number)."""
    for axis in (rig.cam.pan, rig.cam.tilt):
        axis.home()
        beyond = []
        while not (axis.homed and not axis.moving):
            rig.loop.run_for(2000)
            pos = rig.cam.hardware_state()[axis.name]["position"]
            if not axis.min_deg <= pos <= axis.max_deg:
                beyond.append(pos)
        assert not beyond, "%s reported %s outside %s..%s" % (axis.name, beyond[:3],
                                                             axis.min_deg, axis.max_deg)
