"""Timing on MicroPython itself: ticks wrap and overflow on a 32-bit build, loop wakeups,
and a wakeup path that allocates nothing.

The WASM VM (tests/mpvm.py) is a 32-bit MicroPython like the camera's: ticks_us
wraps every 2**30 us and ticks_add() raises OverflowError from 2**29 us on. Its
FakeClock drives the shipped .mpy files through the wrap in virtual time. The
heap test needs a MicroPython 1.22 unix binary (MICROPYTHON, as for `make bench`),
whose micropython.mem_total() counts every heap allocation.
"""
import json
import os
import subprocess

import pytest

from camagent import compat
from mpvm import GuestError, MicroVM

pytestmark = pytest.mark.micropython

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MICROPYTHON = os.environ.get("MICROPYTHON")
PERIOD = 1 << 30
HALF = PERIOD >> 1


@pytest.fixture
def vm():
    with MicroVM() as machine:
        yield machine


def test_cpython_ticks_add_is_the_32_bit_micropython_one(vm):
    cases = [(t, d) for t in (0, 1, HALF, PERIOD - 1)
             for d in (0, 1, -1, HALF - 1, HALF, HALF + 1, -HALF + 1, -HALF, -HALF - 1,
                       PERIOD, 123456789, -987654321)]
    vm.put("cases", cases)
    vm.run("""
        import time
        out = []
        for t, d in cases:
            try:
                out.append(time.ticks_add(t, d))
            except OverflowError:
                out.append("OverflowError")
    """)
    guest = vm.eval("out")
    host = []
    for t, d in cases:
        try:
            host.append(compat.ticks_add(t, d))
        except OverflowError:
            host.append("OverflowError")
    assert vm.eval("time.ticks_add(0, -1) + 1") == PERIOD      # a 32-bit build, as on the camera
    assert host == guest
    assert guest.count("OverflowError") == 4 * 6


NIGHT = """
import json
from camagent import config
from camagent.camera import Camera
from camagent.loop import Loop
loop = Loop()
cam = Camera(config.parse(json.dumps(doc)), gpio=HostGpio(), loop=loop)
cam.ir.set_light(80)
cam.start()
clock.run_loop(loop, 1000000)
"""


def night_vm(vm, dwell_s, start_us):
    vm.use_fake_clock(start_us=start_us)
    vm.put("doc", {"gpio_root": "host", "state_dir": "/input/state", "device_id": "vmcam",
                   "sd_reset_on_start": False,
                   "night": {"initial_mode": "AUTO", "dark_below": 20, "light_above": 40,
                             "min_dwell_s": dwell_s}})
    vm.run(NIGHT)


@pytest.mark.parametrize("dwell_s,after_s", [(60, 600), (300, 700), (500, 1100)])
def test_auto_switches_at_once_after_long_in_night_across_the_wrap(vm, dwell_s, after_s):
    """On a 32-bit build the old dwell arithmetic held the switch back for minutes, or
    crashed the agent with OverflowError when the computed wait reached ~537 s."""
    night_vm(vm, dwell_s, PERIOD - 20 * 1000000)
    assert vm.eval("cam.ir.cut") == "DAY"
    vm.run("clock.run_loop(loop, %d)\ncam.ir.set_light(5)\nclock.run_loop(loop, 1000000)"
           % ((dwell_s + 1) * 1000000))
    assert vm.eval("[cam.ir.cut, cam.ir.led]") == ["NIGHT", True]
    vm.run("clock.run_loop(loop, %d)" % (after_s * 1000000))
    vm.gpio.clear()
    vm.run("cam.ir.set_light(95)\nclock.run_loop(loop, 1000000)")
    assert vm.eval("[cam.ir.cut, cam.ir.led]") == ["DAY", False]
    assert vm.gpio.history(77)[:1] == [1]            # the DAY coil, in this very second


def test_auto_dwell_holds_across_the_wrap(vm):
    night_vm(vm, 60, PERIOD - 70 * 1000000)
    vm.run("clock.run_loop(loop, 61000000)\ncam.ir.set_light(5)\n"
           "clock.run_loop(loop, 1000000)")
    assert vm.eval("cam.ir.cut") == "NIGHT"          # switched 8 s before the wrap
    vm.run("cam.ir.set_light(95)\nclock.run_loop(loop, 58000000)")
    assert vm.eval("cam.ir.cut") == "NIGHT"          # 59 s after the switch: still held
    vm.run("clock.run_loop(loop, 2000000)")
    assert vm.eval("cam.ir.cut") == "DAY"


def test_a_timer_setting_beyond_the_ticks_range_is_refused(vm):
    vm.use_fake_clock()
    vm.run("from camagent import config")
    with pytest.raises(GuestError, match="from 0 to 500"):
        vm.run("config.parse('{\"night\": {\"min_dwell_s\": 600}}')")


@pytest.mark.parametrize("interval", [1000, 2500, 4750, 12345, 19999])
def test_one_loop_wakeup_per_step_on_micropython(vm, interval):
    vm.use_fake_clock(start_us=PERIOD - 30000)
    out = vm.run("""
        from camagent.compat import ticks_add, ticks_us
        from camagent.loop import Loop

        class Periodic:
            def __init__(self, interval, count):
                self.interval = interval
                self.count = count
                self.due = ticks_us()
                self.times = []

            def tick(self, now):
                self.times.append(clock.now_us)
                self.due = None if len(self.times) == self.count else \\
                    ticks_add(self.due, self.interval)

        dev = Periodic(%d, 40)
        loop = Loop()
        loop.add(dev)
        clock.horizon = clock.now_us + 10_000_000   # the last wakeup idles up to here
        while dev.due is not None:
            loop.run_once()
        print(loop.wakeups, dev.times[-1] - dev.times[0])
    """ % interval)
    assert out == "40 %d\n" % (39 * interval)


HEAP_SCRIPT = """
import micropython, socket, sys
from camagent import loop as loop_module
from camagent.compat import ticks_add
from camagent.loop import Loop

T = [0]
def clock():
    return T[0]
def sleep_us(us):
    T[0] = ticks_add(T[0], us)
def ipoll(poller, timeout_ms):
    if timeout_ms > 0:
        T[0] = ticks_add(T[0], timeout_ms * 1000)
    return poller.ipoll(0)
loop_module.sleep_us = sleep_us
loop_module.ipoll = ipoll

class Axis:
    def __init__(self, interval):
        self.interval = interval
        self.due = 0
        self.ticks = 0
    def tick(self, now):
        self.ticks += 1
        self.due = ticks_add(self.due, self.interval)

loop = Loop()
loop.clock = clock
pan, tilt = Axis(1000), Axis(2500)
loop.add(pan)
loop.add(tilt)
quiet = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)   # watched, never readable
quiet.bind(socket.getaddrinfo("127.0.0.1", 0)[0][-1])
loop.watch(quiet, lambda: None)
for i in range(200):
    loop.run_once()
before, wakeups, checks = micropython.mem_total(), loop.wakeups, T[0]
for i in range(5000):
    loop.run_once()
print(micropython.mem_total() - before, loop.wakeups - wakeups, pan.ticks + tilt.ticks,
      T[0] - checks)
"""


@pytest.mark.skipif(not MICROPYTHON, reason="MICROPYTHON not set")
def test_the_loop_allocates_nothing_per_wakeup_on_micropython_1_22():
    """A frame over 11 words is heap-allocated on every call: run_once, wait and the
    socket check (every 20 ms while steps keep the waits short) must stay under it."""
    env = dict(os.environ, MICROPYPATH=os.path.join(ROOT, "agent"))
    proc = subprocess.run([MICROPYTHON, "-c", HEAP_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    allocated, wakeups, ticks, elapsed_us = (int(x) for x in proc.stdout.split())
    assert wakeups == 5000 and elapsed_us >= 5000 * 1000 * 0.7 and ticks > wakeups
    assert allocated == 0, json.dumps({"bytes": allocated, "wakeups": wakeups})
