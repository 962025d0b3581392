"""The step path allocates nothing on a real MicroPython 1.22 unix binary.

Stepper.tick and Line.set run once per half-step: a heap allocation there (a
frame over MicroPython's on-stack limit, a bound exception, an iterator) would
mean a garbage collection every few hundred steps, a pause that stretches a
step. Each scenario here drives an axis' tick() straight, on a plain-file GPIO
tree, and counts the heap bytes allocated (micropython.mem_total()) over its
half-steps: speeding up, cruising, slowing down for a nearer target or a lower
speed, overshooting and coming back, and holding the last phase.

Runs when the MICROPYTHON environment variable names a MicroPython 1.22 unix-port
binary (as for `make bench`); skipped otherwise.
"""
import json
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MICROPYTHON = os.environ.get("MICROPYTHON")
pytestmark = pytest.mark.skipif(not MICROPYTHON, reason="MICROPYTHON not set")

GUEST = r"""
import json, micropython, sys
from camagent import config
from camagent.camera import Camera

cam = Camera(config.parse(sys.argv[1]))
pan = cam.pan
results = []


def ticks(axis, until):
    # tick by tick on the axis' own deadlines, as the loop would, until `until`
    # steps are done or only the final hold's release is left (it allocates: it
    # saves the position and publishes the state)
    done = 0
    before = micropython.mem_total()
    while done < until and not (axis.steps == axis.target and axis._level == 0):
        axis.tick(axis.due)
        done += 1
    return [micropython.mem_total() - before, done]


def scenario(name, n):
    results.append([name] + ticks(pan, n))


start = pan.steps
pan.move_to(start + 1500)
scenario("speed up and cruise", 400)
pan.move_to(pan.steps + 5)                  # far too near: slow down, overshoot, come back
scenario("overshoot and return", 10000)
pan.move_to(start + 1500)
scenario("speed up again", 100)
pan.move_to(start + 1500, 60)               # a lower speed, below the start speed
scenario("slow down for a lower speed", 10000)
pan.tick(pan.due)                           # the hold ends: released, saved, published
print(json.dumps([results, pan.steps - start, pan.moving]))
"""


def test_half_steps_allocate_nothing(tmp_path):
    root = tmp_path / "gpio"
    for pin in (14, 15, 16, 17, 31, 36, 37, 38, 44, 45, 46, 61, 76, 77, 79):
        d = root / ("gpio%d" % pin)
        d.mkdir(parents=True)          # already exported: Gpio uses it as it is
        (d / "direction").write_text("in\n")
        (d / "value").write_text("0\n")
    cfg = json.dumps({"gpio_root": str(root), "state_dir": str(tmp_path / "state"),
                      "device_id": "alloc", "sd_reset_on_start": False})
    env = dict(os.environ, MICROPYPATH=os.path.join(ROOT, "agent"))
    proc = subprocess.run([MICROPYTHON, "-c", GUEST, cfg], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=60)
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, out
    results, moved, moving = json.loads(out.strip().splitlines()[-1])
    assert moved == 1500 and moving is False
    for name, allocated, steps in results:
        assert steps > 50, (name, steps)
        assert allocated == 0, "%s: %d bytes over %d half-steps" % (name, allocated, steps)
