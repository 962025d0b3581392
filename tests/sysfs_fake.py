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
        for name, handler in (("export", self._export), ("unexport", self._unexport)):
            path = os.path.join(self.root, name)
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
            if data == b"\0":
                return
            for word in data.split():
                handler(int(word))

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
        return _RecordingFile(self, pin, open(path, mode, buffering=buffering))

    def clear(self):
        del self.writes[:]


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
