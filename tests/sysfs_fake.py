"""A fake /sys/class/gpio for tests: the kernel's file layout in a temp directory.

`export` and `unexport` are FIFOs read by a thread that creates or removes
gpioN/ (direction, value, active_low, edge) the way the kernel does, optionally
a few ms late as on real hardware. A recording opener wraps the agent's value
files so tests see every write, in order, while the files still hold the level.
"""
import errno
import os
import threading
import time


class FakeSysfs:
    def __init__(self, root, export_delay=0.0, ngpio=128):
        self.root = str(root)
        self.export_delay = export_delay
        self.exports = []
        self.unexports = []
        os.makedirs(os.path.join(self.root, "gpiochip0"), exist_ok=True)
        for name, text in (("base", "0"), ("ngpio", str(ngpio)), ("label", "gpio")):
            with open(os.path.join(self.root, "gpiochip0", name), "w") as f:
                f.write(text + "\n")
        self._threads = []
        self._fifos = []
        self._synced = threading.Event()
        self._attr(os.path.join(self.root, "export"), lambda w: self._export(int(w)))
        self._attr(os.path.join(self.root, "unexport"), lambda w: self._unexport(int(w)))

    def _attr(self, path, handler):
        """A write-only sysfs attribute: a FIFO whose writes `handler` carries out."""
        os.mkfifo(path)
        # O_RDWR keeps a writer open ourselves, so read() blocks instead of seeing EOF
        fd = os.open(path, os.O_RDWR)
        self._fifos.append((path, fd))
        t = threading.Thread(target=self._serve, args=(fd, handler), daemon=True)
        t.start()
        self._threads.append(t)

    def pin_dir(self, pin):
        return os.path.join(self.root, "gpio%d" % pin)

    def value(self, pin):
        with open(os.path.join(self.pin_dir(pin), "value")) as f:
            return int(f.read().strip() or 0)

    def direction(self, pin):
        with open(os.path.join(self.pin_dir(pin), "direction")) as f:
            return f.read().strip()

    def exported(self, pin):
        return os.path.isdir(self.pin_dir(pin))

    def pre_export(self, pin, value=0):
        """A pin some other program exported before the agent started."""
        self._create(pin, value)

    def _serve(self, fd, handler):
        while True:
            data = os.read(fd, 256)
            words, stop, _ = data.partition(b"\0")
            for word in words.replace(b"\1", b" ").split():
                handler(word)
            if b"\1" in words:
                self._synced.set()
            if stop:
                return

    def _create(self, pin, value=0):
        tmp = os.path.join(self.root, ".gpio%d.new" % pin)
        os.makedirs(tmp, exist_ok=True)
        for name, text in (("direction", "in"), ("value", str(value)),
                           ("active_low", "0"), ("edge", "none")):
            with open(os.path.join(tmp, name), "w") as f:
                f.write(text + "\n")
        os.rename(tmp, self.pin_dir(pin))  # appears whole, like the kernel's directory

    def _export(self, pin):
        self.exports.append(pin)
        if self.exported(pin):
            return  # the kernel would answer EBUSY; a FIFO cannot, the agent checks first
        if self.export_delay:
            time.sleep(self.export_delay)
        self._create(pin)

    def _unexport(self, pin):
        self.unexports.append(pin)
        d = self.pin_dir(pin)
        if os.path.isdir(d):
            for name in os.listdir(d):
                os.remove(os.path.join(d, name))
            os.rmdir(d)

    def sync(self):
        """Wait until every export/unexport written so far has been carried out.

        The kernel's unexport is synchronous; the FIFOs are not, so a test that
        restarts the agent waits here first.
        """
        for path, fd in self._fifos:
            self._synced.clear()
            os.write(fd, b"\1")
            if not self._synced.wait(2):
                raise RuntimeError("fake sysfs thread for %s is stuck" % path)

    def close(self):
        for path, fd in self._fifos:
            os.write(fd, b"\0")
        for t in self._threads:
            t.join(2)
        for path, fd in self._fifos:
            os.close(fd)


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
