"""IR LED, IR-cut interlock and night-mode hysteresis, from the recorded writes."""
import random

import pytest

from agent_rig import Rig


def make(tmp_path, **cfg):
    cfg.setdefault("sd_reset_on_start", False)
    cfg.setdefault("night", {"initial_mode": "DAY", "dark_below": 20, "light_above": 40,
                             "min_dwell_s": 60})
    r = Rig(tmp_path, **cfg)
    r.loop.run_for(500000)   # start-up pulse done
    return r


@pytest.fixture
def rig(tmp_path):
    r = make(tmp_path)
    yield r
    r.close()


def light_file_rig(tmp_path, poll_s, dwell_s):
    """(the light file, a rig in AUTO reading it every poll_s); the file starts at 90."""
    light = tmp_path / "light"
    light.write_text("90\n")
    return light, make(tmp_path, light_file=str(light), light_poll_s=poll_s,
                       night={"initial_mode": "AUTO", "dark_below": 20, "light_above": 40,
                              "min_dwell_s": dwell_s})


def coil_states(rig, since=0):
    """(open, close) coil levels after every write to either coil, with times."""
    pins = rig.pins("ircut_open") + rig.pins("ircut_close")
    state = {pins[0]: 0, pins[1]: 0}
    out = []
    for pin, value, t in rig.writes_to(pins, since):
        state[pin] = value
        out.append((state[pins[0]], state[pins[1]], t))
    return out


def test_cut_is_a_pulse_on_one_coil_then_released(rig):
    start = len(rig.rec.writes)
    rig.cam.ir.set_cut("NIGHT")
    rig.loop.run_until_idle()
    states = coil_states(rig, start)
    assert [s[:2] for s in states] == [(1, 0), (0, 0)]       # open coil only, then released
    assert states[1][2] - states[0][2] == rig.cam.board["ircut_pulse_ms"] * 1000
    assert rig.cam.ir.cut == "NIGHT"
    start = len(rig.rec.writes)
    rig.cam.ir.set_cut("DAY")
    rig.loop.run_until_idle()
    assert [s[:2] for s in coil_states(rig, start)] == [(0, 1), (0, 0)]


def test_swapped_coils(tmp_path):
    r = make(tmp_path, overrides={"ircut_swap": True, "ircut_pulse_ms": 200})
    try:
        start = len(r.rec.writes)
        r.cam.ir.set_cut("NIGHT")
        r.loop.run_until_idle()
        states = coil_states(r, start)
        assert [s[:2] for s in states] == [(0, 1), (0, 0)]
        assert states[1][2] - states[0][2] == 200000
    finally:
        r.close()


def test_request_during_a_pulse_waits_for_it(rig):
    start = len(rig.rec.writes)
    rig.cam.ir.set_cut("NIGHT")
    rig.loop.run_for(10000)
    rig.cam.ir.set_cut("DAY")
    rig.loop.run_until_idle()
    assert [s[:2] for s in coil_states(rig, start)] == [(1, 0), (0, 0), (0, 1), (0, 0)]
    assert rig.cam.ir.cut == "DAY"


@pytest.mark.parametrize("seed", range(40))
def test_both_coils_never_driven_in_any_command_sequence(tmp_path, seed):
    rnd = random.Random(seed)
    r = make(tmp_path)
    try:
        ir = r.cam.ir
        for _ in range(60):
            action = rnd.randrange(5)
            if action == 0:
                ir.set_cut(rnd.choice(("DAY", "NIGHT")))
            elif action == 1:
                ir.set_mode(rnd.choice(("DAY", "NIGHT", "AUTO")))
            elif action == 2:
                ir.set_light(rnd.randrange(101))
            elif action == 3:
                ir.set_led(rnd.random() < 0.5)
            r.loop.run_for(rnd.choice((0, 1000, 50000, 149000, 151000, 2000000, 61000000)))
        r.loop.run_until(lambda: not ir.pulsing)
        states = coil_states(r)
        assert states, "the sequence never pulsed the IR-cut"
        assert all(not (o and c) for o, c, _ in states)
        assert states[-1][:2] == (0, 0)      # released at the end
    finally:
        r.close()


def test_night_mode_drives_filter_and_led(rig):
    ir = rig.cam.ir
    ir.set_mode("NIGHT")
    rig.loop.run_until_idle()
    assert (ir.cut, ir.led, rig.fs.value(44)) == ("NIGHT", True, 1)
    ir.set_mode("DAY")
    rig.loop.run_until_idle()
    assert (ir.cut, ir.led, rig.fs.value(44)) == ("DAY", False, 0)


def test_auto_hysteresis_and_dwell(rig):
    ir = rig.cam.ir
    ir.set_light(80)
    ir.set_mode("AUTO")
    rig.loop.run_until_idle()
    assert ir.cut == "DAY"
    ir.set_light(30)                 # inside the band: no change
    rig.loop.run_for(1000000)
    assert ir.cut == "DAY"
    ir.set_light(10)                 # dark: switch at once (AUTO was entered long enough ago?)
    rig.loop.run_for(1000000)
    assert ir.cut == "NIGHT" and ir.led
    ir.set_light(35)                 # brighter but inside the band: stays NIGHT
    rig.loop.run_for(1000000)
    assert ir.cut == "NIGHT"
    ir.set_light(90)                 # bright, but the 60 s dwell holds the switch back
    rig.loop.run_for(30000000)
    assert ir.cut == "NIGHT"
    rig.loop.run_for(31000000)       # dwell over: now it switches, without another reading
    assert ir.cut == "DAY" and not ir.led


def test_auto_does_not_flap(rig):
    ir = rig.cam.ir
    ir.set_light(80)
    ir.set_mode("AUTO")
    rig.loop.run_until_idle()
    start = len(rig.rec.writes)
    for i in range(600):             # light flickering across both thresholds every second
        ir.set_light(5 if i % 2 else 95)
        rig.loop.run_for(1000000)
    pulses = [s for s in coil_states(rig, start) if s[0] or s[1]]
    times = [t for _, _, t in pulses]
    assert len(pulses) <= 11         # at most one switch per 60 s dwell over 600 s
    assert all(b - a >= 60000000 for a, b in zip(times, times[1:]))


def test_light_file_feeds_auto(tmp_path):
    light, r = light_file_rig(tmp_path, poll_s=5, dwell_s=0)
    try:
        r.loop.run_for(6000000)
        assert r.cam.ir.cut == "DAY"
        light.write_text("3")
        r.loop.run_for(6000000)
        assert r.cam.ir.cut == "NIGHT"
        light.write_text("garbage")
        r.loop.run_for(6000000)
        assert "light file" in r.cam.light_source.error and r.cam.ir.cut == "NIGHT"
    finally:
        r.close()


def test_a_light_file_that_recovers_at_the_same_level_clears_its_problem(tmp_path):
    """The state goes out when the problem ends, though the level did not change."""
    light, r = light_file_rig(tmp_path, poll_s=10, dwell_s=60)
    try:
        r.loop.run_for(11000000)
        light.write_text("garbage")
        r.loop.run_for(10000000)
        assert any("light file" in p for p in r.cam.problems())
        changes = []
        r.cam.on_change = lambda: changes.append(r.loop.elapsed)
        light.write_text("90\n")                  # fixed, the same level as before
        r.loop.run_for(10000000)
        assert r.cam.light_source.error is None and changes
        assert not any("light file" in p for p in r.cam.problems())
    finally:
        r.close()


def test_bad_values_are_refused(rig):
    for bad in (-1, 101, float("nan"), "50", None):
        with pytest.raises(ValueError):
            rig.cam.ir.set_light(bad)
    with pytest.raises(ValueError):
        rig.cam.ir.set_mode("EVENING")
    with pytest.raises(ValueError):
        rig.cam.ir.set_cut("OPEN")


# --- timing across the ticks wrap (2**30 us, ~1074 s on the camera) ------------------------
PERIOD = 1 << 30


def wrap_rig(tmp_path, dwell_s, start_t=PERIOD - 30 * 1000000, **cfg):
    """AUTO with `dwell_s`, its clock 30 s before the ticks wrap."""
    r = Rig(tmp_path, start=False, sd_reset_on_start=False,
            night={"initial_mode": "AUTO", "dark_below": 20, "light_above": 40,
                   "min_dwell_s": dwell_s}, **cfg)
    r.loop.t = start_t
    r.cam.ir.set_light(80)
    r.cam.start()
    r.loop.run_for(500000)
    return r


def run_for_s(rig, seconds):
    # the rig's clock moves with ticks_add, which (as on the camera) takes < ~537 s at once
    for _ in range(seconds // 100):
        rig.loop.run_for(100 * 1000000)
    rig.loop.run_for(seconds % 100 * 1000000)


@pytest.mark.parametrize("dwell_s,after_s", [(60, 600), (60, 1000), (300, 700), (500, 540),
                                             (500, 1100), (60, 1080), (60, 2000)])
def test_auto_switches_at_once_when_the_last_switch_is_long_past(tmp_path, dwell_s, after_s):
    """After `after_s` in NIGHT (longer than the dwell, and than half the ticks period),
    bright light switches to DAY at once. (It was held back for up to ~537 s, and a
    computed wait of ~537 s or more made ticks_add raise OverflowError.) At 1080 s the
    switch's age reads as 6 s: AUTO must have forgotten it when the dwell ended."""
    r = wrap_rig(tmp_path, dwell_s)
    try:
        ir = r.cam.ir
        assert ir.cut == "DAY"
        run_for_s(r, dwell_s + 1)
        ir.set_light(5)
        r.loop.run_for(1000000)
        assert ir.cut == "NIGHT" and ir.led
        run_for_s(r, after_s)
        start, asked = len(r.rec.writes), r.loop.elapsed
        ir.set_light(95)
        r.loop.run_for(1000000)
        assert ir.cut == "DAY" and not ir.led
        assert coil_states(r, start)[0] == (0, 1, asked)    # the DAY pulse began at once
    finally:
        r.close()


def test_auto_dwell_is_kept_across_the_wrap(tmp_path):
    r = wrap_rig(tmp_path, 60, start_t=PERIOD - 10 * 1000000)
    try:
        ir = r.cam.ir
        run_for_s(r, 61)
        ir.set_light(5)
        switched = r.loop.elapsed
        r.loop.run_until(lambda: ir.cut == "NIGHT")
        r.loop.run_for(20000000)                 # the ticks wrap in here
        ir.set_light(95)
        r.loop.run_until(lambda: ir.cut == "DAY", limit_us=120 * 1000000)
        assert r.loop.elapsed - switched == 60 * 1000000   # exactly the dwell after
    finally:
        r.close()


def test_an_unchanged_light_level_publishes_nothing(tmp_path):
    light, r = light_file_rig(tmp_path, poll_s=10, dwell_s=60)
    try:
        r.loop.run_for(11000000)
        assert r.cam.ir.light == 90 and r.cam.ir.cut == "DAY"
        changes = []
        r.cam.on_change = lambda: changes.append(r.loop.elapsed)   # the MQTT session's hook
        r.loop.run_for(300000000)                # 30 polls of the same level
        assert changes == []
        light.write_text("91\n")
        r.loop.run_for(10000000)
        assert r.cam.ir.light == 91 and len(changes) == 1
        r.cam.ir.set_light(91)                   # the same level over MQTT: no change
        assert len(changes) == 1
    finally:
        r.close()


def test_auto_still_follows_an_unchanged_level(tmp_path):
    """AUTO owns the filter: a manual cut lasts until the next reading, even an equal one."""
    r = make(tmp_path, night={"initial_mode": "DAY", "dark_below": 20, "light_above": 40,
                              "min_dwell_s": 0})
    try:
        ir = r.cam.ir
        ir.set_light(80)
        ir.set_mode("AUTO")
        r.loop.run_until_idle()
        ir.set_cut("NIGHT")
        r.loop.run_until_idle()
        assert ir.cut == "NIGHT"
        ir.set_light(80)
        r.loop.run_until_idle()
        assert ir.cut == "DAY"
    finally:
        r.close()


def test_a_cut_asked_for_during_a_pulse_is_kept_by_auto_in_the_band(tmp_path):
    """AUTO inside the hysteresis band keeps the cut last asked for, even while a pulse
    still holds it back (it used to restore the cut being pulsed)."""
    r = make(tmp_path, night={"initial_mode": "AUTO", "dark_below": 20, "light_above": 40,
                              "min_dwell_s": 0})
    try:
        ir = r.cam.ir
        ir.set_light(30)                         # inside the band
        r.loop.run_until_idle()
        assert ir.cut == "DAY"
        ir.set_cut("NIGHT")                      # a pulse starts
        r.loop.run_for(10000)
        ir.set_cut("DAY")                        # asked for during the pulse: pending
        ir.set_light(30)                         # a reading, still inside the band
        r.loop.run_until_idle()
        assert ir.cut == "DAY" and not ir.led
    finally:
        r.close()
