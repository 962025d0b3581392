"""Time on wrapping ticks: compat's ticks_add limit, MinGap, and the position saves.

On the camera (32-bit MicroPython) ticks_us wraps every 2**30 us (~1074 s), and
ticks_diff() only measures ages below half of that. compat gives CPython the same
period and the same ticks_add() limit, so these paths run in development too.
"""
import pytest

from agent_rig import Rig
from camagent import compat, config
from camagent.compat import MAX_DELAY_US, MinGap, ticks_add, ticks_diff

PERIOD = 1 << 30
HALF = PERIOD >> 1


@pytest.mark.parametrize("delta", [HALF, -HALF, HALF + 1, -HALF - 1, 3 * HALF, 1 << 40])
def test_ticks_add_refuses_what_ticks_diff_could_not_take_back(delta):
    # extmod/modtime.c: "ticks interval overflow" for delta <= -period/2 or >= period/2
    with pytest.raises(OverflowError, match="ticks interval overflow"):
        ticks_add(0, delta)


@pytest.mark.parametrize("t", [0, 1, HALF, PERIOD - 1])
@pytest.mark.parametrize("delta", [0, 1, -1, HALF - 1, -HALF + 1, 123456789, -123456789])
def test_ticks_add_wraps_and_round_trips(t, delta):
    later = ticks_add(t, delta)
    assert 0 <= later < PERIOD and later == (t + delta) % PERIOD
    assert ticks_diff(later, t) == delta and ticks_diff(t, later) == -delta


def test_max_delay_is_the_largest_delta_ticks_add_takes():
    assert ticks_add(0, MAX_DELAY_US) == MAX_DELAY_US
    with pytest.raises(OverflowError):
        ticks_add(0, MAX_DELAY_US + 1)
    # every wait the config allows fits, with room for the time to the next wakeup
    assert config.TIMER_MAX_S * 1000000 < MAX_DELAY_US


def test_min_gap_counts_down_across_the_wrap():
    gap = MinGap(60 * 1000000)
    assert gap.wait(5) == 0                        # nothing happened yet
    t0 = PERIOD - 20 * 1000000                     # 20 s before the wrap
    gap.mark(t0)
    assert gap.wait(t0) == 60 * 1000000
    assert gap.wait(ticks_add(t0, 45 * 1000000)) == 15 * 1000000   # across the wrap
    assert gap.wait(ticks_add(t0, 60 * 1000000)) == 0
    assert gap.last is None                        # forgotten once passed
    assert gap.wait(ticks_add(t0, 61 * 1000000)) == 0


@pytest.mark.parametrize("age_s", [537, 600, 900, 1073])
def test_min_gap_has_passed_for_ages_beyond_half_the_period(age_s):
    """ticks_diff() reads such an age as negative (a mark 'in the future'): it is old."""
    gap = MinGap(500 * 1000000)
    t0 = PERIOD - 1000
    gap.mark(t0)
    now = (t0 + age_s * 1000000) % PERIOD
    assert ticks_diff(now, t0) < 0
    assert gap.wait(now) == 0 and gap.last is None


def test_min_gap_forgets_when_looked_at_in_time():
    """Looked at once after the gap (as the owners do), a mark is forgotten for good:
    a whole ticks period later it does not look recent again."""
    gap = MinGap(60 * 1000000)
    gap.mark(1000)
    assert gap.wait(1000 + 61 * 1000000) == 0
    assert gap.wait((1000 + PERIOD + 10 * 1000000) % PERIOD) == 0


def test_min_gap_refuses_a_gap_ticks_cannot_measure():
    MinGap(MAX_DELAY_US)
    with pytest.raises(ValueError):
        MinGap(MAX_DELAY_US + 1)


def test_cpython_compat_really_is_the_shim():
    assert not compat.IS_MICROPYTHON


# --- position saves ---------------------------------------------------------------------
SLOW = {"speed": 1, "start_speed": 1, "max_speed": 1000, "accel": 1000}   # 1 half-step/s


def slow_rig(tmp_path, start_t):
    rig = Rig(tmp_path, start=False, sd_reset_on_start=False,
              night={"initial_mode": "DAY", "dark_below": 20, "light_above": 40,
                     "min_dwell_s": 60},
              persist_min_interval_s=30, overrides={"pan": SLOW})
    rig.loop.t = start_t
    rig.cam.start()
    rig.loop.run_for(1000000)
    return rig


@pytest.mark.parametrize("move_s", [300, 700, 1000, 1084])
def test_position_is_saved_when_a_long_move_ends(tmp_path, move_s):
    """A move (here a slow sweep) longer than half the ticks period: its "moving" mark
    was written at the start, so the save after it is not held back (it was, by up to
    ~537 s, when the mark's age read negative). At 1084 s the age reads as 10 s: the
    store must have forgotten the mark when the gap ended, mid-move."""
    rig = slow_rig(tmp_path, PERIOD - 5 * 1000000)
    try:
        pan, store = rig.cam.pan, rig.cam.positions
        writes = store.writes
        pan.move_to(pan.steps + move_s if pan.steps + move_s <= pan.max_steps
                    else pan.steps - move_s)
        assert store.writes == writes + 1                  # the "moving" mark
        rig.loop.run_until(lambda: not pan.moving, limit_us=(move_s + 10) * 1000000)
        ended = rig.loop.elapsed
        rig.loop.run_until(lambda: store.writes == writes + 2, limit_us=60 * 1000000)
        assert rig.loop.elapsed == ended                  # saved at once
    finally:
        rig.close()


def test_saves_stay_rate_limited_across_the_wrap(tmp_path):
    rig = slow_rig(tmp_path, PERIOD - 20 * 1000000)
    try:
        pan, store = rig.cam.pan, rig.cam.positions
        writes = store.writes
        pan.move_to(pan.steps + 3)
        rig.loop.run_until(lambda: not pan.moving)
        rig.loop.run_until(lambda: store.writes == writes + 2)
        pan.move_to(pan.steps + 3)                        # a new "moving" mark...
        marked = rig.loop.elapsed
        assert store.writes == writes + 3
        rig.loop.run_until(lambda: not pan.moving)        # ...across the wrap
        rig.loop.run_until(lambda: store.writes == writes + 4)
        assert rig.loop.elapsed - marked == 30 * 1000000  # the next save waits out the 30 s
    finally:
        rig.close()
