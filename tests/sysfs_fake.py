"""A fake /sys/class/gpio for tests, and a recorder of every write the agent makes to it.

The tree itself is camhost.simcam.GpioTree, the one `make demo` runs on (the
kernel's layout; export/unexport served like the kernel's). WriteRecorder is an
opener for camagent.gpio.Gpio that logs every value write, in order, while the
files still hold the level.
"""
import errno
import os

from camhost.simcam import GpioTree as FakeSysfs  # noqa: F401  (the name tests use)


class WriteRecorder:
    """An `opener` for camagent.gpio.Gpio that logs (pin, value) for every value write.

    `fail_pins`: pins whose writes raise EIO, as a kernel driver error would.
    """

    def __init__(self):
        self.writes = []
        self.fail_pins = set()

    def __call__(self, path, mode="r", buffering=-1):
        pin = int(os.path.basename(os.path.dirname(path))[4:])
        if os.path.basename(path) == "direction":
            return _DirectionFile(path, mode)
        # "r+b": opening a sysfs attribute never truncates it, a plain file would
        return _RecordingFile(self, pin, open(path, "r+b", buffering=0))

    def clear(self):
        del self.writes[:]


class _DirectionFile:
    """direction: "high"/"low" also sets the value, in the same write, as the kernel does."""

    def __init__(self, path, mode):
        self._path = path
        self._f = open(path, mode)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def write(self, text):
        n = self._f.write(text)
        if text.strip() in ("high", "low"):
            with open(os.path.join(os.path.dirname(self._path), "value"), "w") as f:
                f.write("1\n" if text.strip() == "high" else "0\n")
        return n

    def close(self):
        self._f.close()


class _RecordingFile:
    def __init__(self, recorder, pin, f):
        self._rec = recorder
        self._pin = pin
        self._f = f

    def seek(self, pos):
        return self._f.seek(pos)

    def write(self, data):
        if self._pin in self._rec.fail_pins:
            raise OSError(errno.EIO, "Input/output error")
        n = self._f.write(data)
        self._rec.writes.append((self._pin, int(data)))
        return n

    def close(self):
        self._f.close()
