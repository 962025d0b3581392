"""Linux sysfs GPIO (/sys/class/gpio): export, direction with initial level, value writes.

Value files stay open for the agent's lifetime: opening one per write costs about
0.5 ms on these SoCs. Each write seeks to 0 first so a plain file (the test and
demo trees) always holds the current level, exactly as the kernel attribute does.
"""
import errno
import os

from .compat import sleep_ms

_LEVEL = (b"0", b"1")
# names of the errors a sysfs write can give that MicroPython's errno module lacks
_NAMES = {6: "ENXIO", 16: "EBUSY", 20: "ENOTDIR", 28: "ENOSPC", 29: "ESPIPE", 30: "EROFS",
          32: "EPIPE"}


class GpioError(Exception):
    """A sysfs operation failed; names the pin, the file and the reason."""

    def __init__(self, pin, path, reason):
        super().__init__("GPIO %d: %s: %s" % (pin, path, reason))
        self.pin = pin
        self.path = path
        self.reason = reason


def _why(exc):
    code = exc.args[0] if exc.args else 0
    if not isinstance(code, int):
        return str(exc)
    return errno.errorcode.get(code) or _NAMES.get(code) or "errno %d" % code


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


class Line:
    """One output pin; set() is the only write path to its value file."""

    def __init__(self, pin, path, f, value):
        self.pin = pin
        self.path = path
        self._f = f
        self.value = value

    def set(self, v):
        # `value` may call a low line high, never a high line low: a 1 is recorded
        # before it is written, a 0 after. A failed write, or a KeyboardInterrupt
        # that MicroPython raises as the try block ends, then leaves a line that may
        # be high counted as high, so whatever releases it writes it low.
        if v:
            self.value = 1
        # no "except ... as e" here: binding the exception puts this frame on
        # MicroPython's heap, an allocation per half-step
        try:
            self._f.seek(0)
            self._f.write(_LEVEL[v])
        except OSError:
            self._retry(v)
        self.value = v

    def _retry(self, v):
        """A write failed: try once more (a transient error), else raise with its errno."""
        try:
            self._f.seek(0)
            self._f.write(_LEVEL[v])
        except OSError as e:
            raise GpioError(self.pin, self.path, "write failed (%s)" % _why(e))


class DeadLine:
    """Stands in for a line that could not be claimed at start: every write raises
    the claim's error, so its device stays out of service and says why."""

    def __init__(self, error):
        self.pin = error.pin
        self.value = 0
        self._error = error

    def set(self, v):
        raise self._error


class Gpio:
    """The pins this agent owns under `root` (default /sys/class/gpio)."""

    def __init__(self, root="/sys/class/gpio", opener=open):
        self.root = root
        self._open = opener
        self._lines = {}
        self._exported = []  # pins we exported, unexported again on release

    def output(self, pin, level=0, keep=False):
        """Claim `pin` as an output starting at `level` with no glitch.

        `keep`: leave the pin exported at release (e.g. wifi power must stay on).
        """
        if pin in self._lines:
            raise GpioError(pin, self.root, "pin claimed twice (check the pin map)")
        base = "%s/gpio%d" % (self.root, pin)
        if not _exists(base):
            self._export(pin, base)
            if not keep:
                self._exported.append(pin)
        # "low"/"high" sets output mode and level in one write: no glitch
        self._write(pin, base + "/direction", "high" if level else "low")
        path = base + "/value"
        try:
            f = self._open(path, "wb", buffering=0)
        except OSError as e:
            raise GpioError(pin, path, "cannot open (%s)" % _why(e))
        line = Line(pin, path, f, level)
        self._lines[pin] = line
        return line

    def _write(self, pin, path, text):
        try:
            with self._open(path, "w") as f:
                f.write(text)
        except OSError as e:
            raise GpioError(pin, path, "cannot write %r (%s)" % (text, _why(e)))

    def _export(self, pin, base):
        path = self.root + "/export"
        try:
            with open(path, "w") as f:
                f.write("%d\n" % pin)
        except OSError as e:
            # 16, EBUSY (MicroPython's errno module has no EBUSY): already exported, fine
            if e.args and e.args[0] != 16:
                raise GpioError(pin, path, "export failed (%s)" % _why(e))
        waited = 0
        while not _exists(base):
            if waited >= 500:   # udev-less kernels create gpioN/ a few ms after the write
                raise GpioError(pin, base, "did not appear %d ms after export" % waited)
            sleep_ms(5)
            waited += 5

    def release_all(self):
        """Close every value file and unexport the pins we exported; report the first error."""
        first = None
        for line in self._lines.values():
            try:
                line._f.close()
            except OSError:
                pass
        self._lines = {}
        for pin in self._exported:
            path = self.root + "/unexport"
            try:
                with open(path, "w") as f:
                    f.write("%d\n" % pin)
            except OSError as e:
                first = first or GpioError(pin, path, "unexport failed (%s)" % _why(e))
        self._exported = []
        if first:
            raise first
