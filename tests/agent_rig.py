"""A camera rig for agent tests: fake sysfs, recorded writes, and virtual time.

VirtualLoop is the agent's real Loop with one change: instead of sleeping it
jumps its clock to the next deadline, so a 30 s dwell or a 2000-step move runs
in milliseconds and every test is deterministic. Each recorded write carries the
virtual time it happened at.
"""
import json

from camagent import config
from camagent.camera import Camera
from camagent.compat import ticks_add
from camagent.gpio import Gpio
from camagent.loop import Loop
from sysfs_fake import FakeSysfs, WriteRecorder


class VirtualLoop(Loop):
    def __init__(self):
        Loop.__init__(self)
        self.t = 0          # the ticks value devices see (wraps like the real one)
        self.elapsed = 0    # unwrapped virtual microseconds, for the tests' own arithmetic
        self.clock = lambda: self.t
        self.horizon = None  # run_for's end: a virtual wait never jumps past it
        self.until = None    # run_until's condition: once it holds, time stops

    def wait(self, now, nearest):
        if self.until is not None and self.until():
            return
        if self.horizon is not None:
            left = self.horizon - self.elapsed
            if nearest is None or nearest > left:
                self.advance(left)
                return
        if nearest is None:
            raise Idle()
        self.advance(max(nearest, 0))

    def advance(self, us):
        self.t = ticks_add(self.t, us)
        self.elapsed += us

    def run_for(self, us):
        self.horizon = end = self.elapsed + us
        try:
            while self.elapsed < end:
                self.run_once()
        finally:
            self.horizon = None

    def run_until(self, condition, limit_us=600 * 1000000):
        start = self.elapsed
        self.until = condition
        try:
            while not condition():
                if self.elapsed - start > limit_us:
                    raise AssertionError("condition not reached in %d virtual us" % limit_us)
                try:
                    self.run_once()
                except Idle:
                    if not condition():
                        raise AssertionError("loop went idle before the condition held")
        finally:
            self.until = None

    def run_until_idle(self, limit_us=3600 * 1000000):
        start = self.elapsed
        while self.elapsed - start <= limit_us:
            try:
                self.run_once()
            except Idle:
                return
        raise AssertionError("loop never went idle")


class Idle(Exception):
    """Nothing is scheduled: a real loop would now block in poll()."""


class TimedRecorder(WriteRecorder):
    """Records (pin, value, virtual_time_us)."""

    def __init__(self, loop):
        WriteRecorder.__init__(self)
        self.loop = loop
        self.times = []

    def __call__(self, path, mode="r", buffering=-1):
        f = WriteRecorder.__call__(self, path, mode, buffering)
        if not path.endswith("/value"):
            return f
        orig = f.write

        def write(data):
            n = orig(data)
            self.times.append(self.loop.elapsed)
            return n
        f.write = write
        return f


class Rig:
    def __init__(self, tmp_path, start=True, **cfg):
        self.tmp = tmp_path
        self.fs = FakeSysfs(tmp_path / "gpio")
        self.cfg_doc = {"gpio_root": str(tmp_path / "gpio"), "state_dir": str(tmp_path / "state"),
                        "device_id": "testcam"}
        self.cfg_doc.update(cfg)
        self.build(start)

    def build(self, start=True):
        self.fs.sync()
        self.loop = VirtualLoop()
        self.rec = TimedRecorder(self.loop)
        self.cfg = config.parse(json.dumps(self.cfg_doc))
        self.cam = Camera(self.cfg, gpio=Gpio(self.cfg["gpio_root"], opener=self.rec),
                          loop=self.loop)
        if start:
            self.cam.start()
        return self.cam

    def restart(self):
        """Close the agent and start a new one on the same sysfs and state_dir."""
        self.cam.close()
        return self.build()

    def pins(self, name):
        pins = self.cam.board["pins"][name]
        return list(pins) if isinstance(pins, (list, tuple)) else [pins]

    def writes_to(self, pins, since=0):
        pins = set(pins)
        return [(p, v, t) for (p, v), t in zip(self.rec.writes[since:], self.rec.times[since:])
                if p in pins]

    def close(self):
        try:
            self.cam.close()
        finally:
            self.fs.close()
