"""The hardware logic inside a real MicroPython VM, loading the shipped .mpy files.

The same behaviours as the CPython tests (coil sequences, concurrency, limits,
release, IR-cut interlock, night mode, LEDs, errors), with GPIO writes routed to
the host through HostGpio and time driven by the harness' FakeClock.
"""
import random

import pytest

from camagent.stepper import PHASES
from mpvm import GuestError, MicroVM

pytestmark = pytest.mark.micropython

SETUP = """
import json
from camagent import config
from camagent.camera import Camera
from camagent.loop import Loop
loop = Loop()
cam = Camera(config.parse(json.dumps(doc)), gpio=HostGpio(), loop=loop)
cam.start()
clock.run_loop(loop, 1000000)
"""


@pytest.fixture
def vm():
    with MicroVM() as machine:
        machine.use_fake_clock()
        machine.put("doc", {"gpio_root": "host", "state_dir": "/input/state",
                            "device_id": "vmcam", "sd_reset_on_start": False,
                            "led_blink_ms": 400,
                            "night": {"initial_mode": "DAY", "dark_below": 20,
                                      "light_above": 40, "min_dwell_s": 60}})
        machine.run(SETUP)
        machine.gpio.clear()
        yield machine


def patterns(writes, pins):
    state = [0, 0, 0, 0]
    out = []
    for pin, level in writes:
        if pin in pins:
            state[pins.index(pin)] = level
            out.append(sum(bit << i for i, bit in enumerate(state)))
    return out


def test_implementation_is_micropython(vm):
    assert vm.eval("__import__('sys').implementation.name") == "micropython"
    assert vm.eval("__import__('camagent.stepper').stepper.__file__").endswith(".mpy")


def test_half_steps_change_one_line_and_release(vm):
    vm.run("start = cam.pan.steps\ncam.pan.move_to(start + 24)\nclock.run_loop(loop, 5000000)")
    assert vm.eval("cam.pan.steps - start") == 24 and vm.eval("cam.pan.moving") is False
    pins = [14, 15, 16, 17]
    writes = [w for w in vm.gpio.writes if w[0] in pins]
    moved, release = writes[:-4], writes[-4:]
    assert sorted(release) == [(p, 0) for p in pins]      # every coil line written low
    seq = patterns(moved, pins)
    seq = seq[bin(seq[0]).count("1") - 1:]                # from the energised phase on
    assert len(seq) == 25
    for a, b in zip(seq, seq[1:]):
        assert bin(a ^ b).count("1") == 1 and PHASES.index(b) == (PHASES.index(a) + 1) % 8
    assert [vm.gpio.levels[p] for p in pins] == [0, 0, 0, 0]


def test_axes_interleave_and_clamp(vm):
    clamped = vm.eval("[cam.pan.move_to(cam.pan.steps + 40), cam.tilt.move_to_deg(500)]")
    assert clamped == [False, True]
    vm.run("clock.run_loop(loop, 20000000)")
    order = [p for p, _ in vm.gpio.writes if p in (14, 15, 16, 17, 31, 36, 37, 38)]
    first_tilt = next(i for i, p in enumerate(order) if p in (31, 36, 37, 38))
    last_pan = max(i for i, p in enumerate(order) if p in (14, 15, 16, 17))
    assert first_tilt < last_pan                     # concurrent, not one after the other
    assert vm.eval("cam.tilt.steps == cam.tilt.max_steps")
    assert all(vm.gpio.levels[p] == 0 for p in (14, 15, 16, 17, 31, 36, 37, 38))


def test_stop_and_homing(vm):
    vm.run("cam.pan.move_to(cam.pan.max_steps)\nclock.run_loop(loop, 100000)\n"
           "cam.pan.stop()\nwhere = cam.pan.steps\nclock.run_loop(loop, 1000000)")
    assert vm.eval("cam.pan.steps == where and not cam.pan.moving")
    assert [vm.gpio.levels[p] for p in (14, 15, 16, 17)] == [0, 0, 0, 0]
    vm.run("cam.tilt.home()\nclock.run_loop(loop, 20000000)")
    assert vm.eval("[cam.tilt.homed, cam.tilt.steps == cam.tilt.park]") == [True, True]


def test_ircut_never_drives_both_coils(vm):
    rnd = random.Random(7)
    script = []
    for _ in range(80):
        kind = rnd.randrange(4)
        arg = (rnd.choice(["DAY", "NIGHT"]) if kind == 0 else
               rnd.choice(["DAY", "NIGHT", "AUTO"]) if kind == 1 else
               rnd.randrange(101) if kind == 2 else 0)
        script.append([kind, arg, rnd.choice([0, 50000, 160000, 2000000, 61000000])])
    vm.put("script", script)
    vm.run("""
for kind, arg, wait in script:
    if kind == 0:
        cam.ir.set_cut(arg)
    elif kind == 1:
        cam.ir.set_mode(arg)
    elif kind == 2:
        cam.ir.set_light(arg)
    clock.run_loop(loop, wait)
clock.run_loop(loop, 1000000)
""")
    state = {76: 0, 77: 0}
    pulses = 0
    for pin, level in vm.gpio.writes:
        if pin in state:
            state[pin] = level
            pulses += level
            assert not (state[76] and state[77])
    assert pulses > 5 and state == {76: 0, 77: 0}


def test_night_mode_hysteresis_and_dwell(vm):
    vm.run("cam.ir.set_light(80)\ncam.ir.set_mode('AUTO')\nclock.run_loop(loop, 1000000)")
    assert vm.eval("cam.ir.cut") == "DAY"
    vm.run("cam.ir.set_light(30)\nclock.run_loop(loop, 1000000)")
    assert vm.eval("cam.ir.cut") == "DAY"             # inside the band
    vm.run("cam.ir.set_light(5)\nclock.run_loop(loop, 1000000)")
    assert vm.eval("[cam.ir.cut, cam.ir.led]") == ["NIGHT", True]
    vm.run("cam.ir.set_light(95)\nclock.run_loop(loop, 30000000)")
    assert vm.eval("cam.ir.cut") == "NIGHT"           # dwell holds the switch back
    vm.run("clock.run_loop(loop, 31000000)")
    assert vm.eval("[cam.ir.cut, cam.ir.led]") == ["DAY", False]


def test_led_blink(vm):
    vm.run("cam.leds['red'].set('BLINK')\n"
           "clock.run_loop(loop, 1900000)")
    assert vm.gpio.history(79) == [1, 0, 1, 0, 1, 0, 1, 0, 1, 0]
    vm.run("cam.leds['red'].set('OFF')\nclock.run_loop(loop, 1000000)")
    assert vm.gpio.levels[79] == 0 and vm.gpio.history(79)[-1] == 0


def test_gpio_failure_is_a_gpio_error_naming_the_pin(vm):
    vm.gpio.fail(15, "EIO")
    with pytest.raises(GuestError) as e:
        vm.run("cam.pan.move_to(cam.pan.steps + 8)\nclock.run_loop(loop, 1000000)")
    assert e.value.type_name == "GpioError" and "GPIO 15" in e.value.message


def test_failed_energise_releases_the_coils_and_the_axis_moves_again(vm):
    vm.gpio.fail(15, "EIO")
    vm.run("""
cam.pan.phase = 1          # phase AB: energising drives GPIO 14, then 15 fails
where = cam.pan.steps
failure = None
try:
    cam.pan.move_to(where + 8)
except Exception as e:
    failure = type(e).__name__
""")
    assert vm.eval("failure") == "GpioError"
    assert vm.gpio.history(14) == [1, 0]              # driven, then released again
    assert vm.eval("[cam.pan.moving, cam.pan.due, cam.busy, cam.pan.steps == where]") == \
        [False, None, False, True]
    vm.gpio.heal(15)
    vm.run("cam.pan.move_to(where + 8)\nclock.run_loop(loop, 1000000)")
    assert vm.eval("cam.pan.steps - where") == 8
    assert [vm.gpio.levels[p] for p in (14, 15, 16, 17)] == [0, 0, 0, 0]


def test_bad_values_raise_value_errors(vm):
    vm.run("""
errors = []
for call in (lambda: cam.pan.move_to_deg(float('nan')), lambda: cam.ir.set_light(101),
             lambda: cam.ir.set_mode('DUSK'), lambda: cam.leds['green'].set('PINK'),
             lambda: cam.tilt.move_to_deg(10, speed_dps=1e6)):
    try:
        call()
        errors.append(None)
    except ValueError as e:
        errors.append(str(e))
""")
    errors = vm.eval("errors")
    assert all(errors) and "finite" in errors[0] and "deg/s" in errors[4]
    assert vm.eval("cam.moving") is False
