"""Timestamped GPIO value files for the benchmark drivers (driver.py, snapdriver.py):
the `opener` given to camagent.gpio.Gpio, recording when each axis' coil files are
written, into preallocated lists so recording allocates nothing while the axes step.
Runs under CPython and MicroPython.
"""


class AxisLog:
    """Write times of one axis' four value files, into a preallocated list."""

    def __init__(self, capacity):
        self.times = [0] * capacity
        self.n = 0
        self.armed = False


class TimedFile:
    """A value file whose writes are timestamped while its log is armed."""

    def __init__(self, f, log, clock):
        self._f = f
        self._log = log
        self._clock = clock

    def seek(self, pos):
        return self._f.seek(pos)

    def write(self, data):
        log = self._log
        if log.armed:
            i = log.n
            if i < len(log.times):
                log.times[i] = self._clock()
            log.n = i + 1
        return self._f.write(data)

    def close(self):
        self._f.close()


class Opener:
    """The `opener` given to camagent.gpio.Gpio: axis value files come back timestamped."""

    def __init__(self, pan_pins, tilt_pins, capacity, clock):
        self.logs = (AxisLog(capacity), AxisLog(capacity))
        self._clock = clock
        self._log_of = {}
        for pin in pan_pins:
            self._log_of["gpio%d" % pin] = self.logs[0]
        for pin in tilt_pins:
            self._log_of["gpio%d" % pin] = self.logs[1]

    def __call__(self, path, mode="r", buffering=-1):
        f = open(path, mode, buffering)
        parts = path.split("/")
        log = self._log_of.get(parts[-2]) if parts[-1] == "value" else None
        return TimedFile(f, log, self._clock) if log else f

    def arm(self, on):
        for log in self.logs:
            log.armed = on


def intervals(log, ticks_diff):
    t = log.times
    n = min(log.n, len(t))
    return [ticks_diff(t[i + 1], t[i]) for i in range(n - 1)]
