"""A simulated camera for `camhost demo` and the tests: the kernel files the agent uses.

SimCamera(root) lays out, in a scratch directory:
  sys/class/gpio/   export and unexport as FIFOs, served by a thread that creates
                    and removes gpioN/ (direction, value, active_low, edge) the way
                    the kernel does when a number is written to them
  proc/             meminfo, net/wireless, net/fib_trie (wlan0's address, `ip`),
                    mounts (an SD card mounted on sd/), and uptime (a link to the
                    host's, so uptimes advance)
  state/            the agent's state_dir
  majestic          optionally, a simulated majestic on a loopback port (simmajestic)
and writes agent configs pointing at them. Only the kernel is simulated: the
agent under test is the real one, writing the same files it writes on a camera.
"""
import importlib.util
import json
import os
import shutil
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AGENT_DIR = os.path.join(ROOT, "agent")


def _agent_boards():
    """The agent's own camagent/boards.py (it imports nothing), without the agent on sys.path."""
    spec = importlib.util.spec_from_file_location(
        "camagent_boards", os.path.join(AGENT_DIR, "camagent", "boards.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# One source for pins and motor defaults: the agent's board profile.
boards = _agent_boards()
BOARD = "imou-ranger-rc-4mp"   # the board simulated, written into every config
PINS = boards.profile(BOARD)["pins"]

# Motor settings for tests and the demo: same mechanics, faster (half-steps/s).
FAST_AXIS = {"speed": 4000, "max_speed": 8000, "start_speed": 1000, "accel": 100000,
             "home_speed": 4000}

_STOP = b"\0"   # ends a FIFO's serving thread
_SYNC = b"\1"   # answered once everything written before it has been carried out


class GpioTree:
    """The kernel side of /sys/class/gpio in a plain directory.

    `export` and `unexport` are FIFOs served by a thread that creates or removes
    gpioN/ (direction, value, active_low, edge) as the kernel does, optionally
    `export_delay` seconds late, as on real hardware.

    Fault injection, for a line that fails on a real camera: break_line(pin) makes
    every write to the pin's value fail, refuse_export(pin) makes its export fail.
    """

    def __init__(self, root, export_delay=0.0, ngpio=128):
        self.root = os.path.abspath(str(root))
        self.export_delay = export_delay
        self.exports = []      # every pin number written to export, in order
        self.unexports = []
        self.broken = set()    # break_line(): value writes fail with ENOSPC
        self.refused = set()   # refuse_export(): export never creates gpioN/
        os.makedirs(os.path.join(self.root, "gpiochip0"), exist_ok=True)
        for name, text in (("base", "0"), ("ngpio", str(ngpio)), ("label", "gpio")):
            with open(os.path.join(self.root, "gpiochip0", name), "w") as f:
                f.write(text + "\n")
        self._lock = threading.Lock()
        self._synced = threading.Event()
        self._threads = []
        self._fifos = []
        for name, handler in (("export", self._export), ("unexport", self._unexport)):
            path = os.path.join(self.root, name)
            os.mkfifo(path)
            # holding a write end ourselves: read() then blocks instead of seeing EOF
            fd = os.open(path, os.O_RDWR)
            self._fifos.append((path, fd))
            t = threading.Thread(target=self._serve, args=(fd, handler), daemon=True,
                                 name="gpiotree-" + name)
            t.start()
            self._threads.append(t)

    def _serve(self, fd, handler):
        while True:
            data = os.read(fd, 256)
            words, stop, _ = data.partition(_STOP)
            for word in words.replace(_SYNC, b" ").split():
                try:
                    handler(int(word))
                except (ValueError, OSError):
                    pass  # the kernel would answer EINVAL; the agent sees no gpioN/ appear
            if _SYNC in words:
                self._synced.set()
            if stop:
                return

    def _create(self, pin, value=0):
        tmp = os.path.join(self.root, ".gpio%d.new" % pin)
        os.makedirs(tmp, exist_ok=True)
        for name, text in (("direction", "in"), ("value", str(value)), ("active_low", "0"),
                           ("edge", "none")):
            with open(os.path.join(tmp, name), "w") as f:
                f.write(text + "\n")
        os.rename(tmp, self.pin_dir(pin))   # appears whole, as the kernel's does

    def _export(self, pin):
        with self._lock:
            self.exports.append(pin)
            if pin in self.refused or self.exported(pin):
                return  # the kernel would answer EBUSY; a FIFO cannot, the agent checks first
        if self.export_delay:
            time.sleep(self.export_delay)
        with self._lock:
            self._create(pin)

    def _unexport(self, pin):
        with self._lock:
            self.unexports.append(pin)
            shutil.rmtree(self.pin_dir(pin), ignore_errors=True)

    def pre_export(self, pin, value=0):
        """A pin some other program (an init script) exported before the agent started."""
        with self._lock:
            self._create(pin, value)

    def break_line(self, pin):
        """Fault injection: `pin` exported (by another program, before the agent) with a
        value file on which every write fails with ENOSPC, as on a dead GPIO controller.
        The agent keeps working files open, so it finds out at its first write."""
        with self._lock:
            self._create(pin)
            value = os.path.join(self.pin_dir(pin), "value")
            os.remove(value)
            os.symlink("/dev/full", value)
            self.broken.add(pin)

    def refuse_export(self, pin):
        """Fault injection: writing `pin` to export creates nothing (the kernel refuses
        a pin another driver holds), so the agent's claim of it times out."""
        with self._lock:
            self.refused.add(pin)

    def sync(self):
        """Wait until every export/unexport written so far has been carried out.

        The kernel's unexport is synchronous; the FIFOs are not, so whoever restarts
        an agent on the same tree waits here first.
        """
        for path, fd in self._fifos:
            self._synced.clear()
            os.write(fd, _SYNC)
            if not self._synced.wait(5):
                raise RuntimeError("the thread serving %s is stuck" % path)

    def set_ip(self, ip):
        """Give wlan0 another IPv4 address (None: no address), as DHCP would."""
        self.ip = ip
        with open(os.path.join(self.proc_root, "net", "fib_trie"), "w") as f:
            f.write(fib_trie(ip))

    # --- what tests and the live view read -----------------------------------------
    def pin_dir(self, pin):
        return os.path.join(self.root, "gpio%d" % pin)

    def exported(self, pin):
        return os.path.isdir(self.pin_dir(pin))

    def direction(self, pin):
        with open(os.path.join(self.pin_dir(pin), "direction")) as f:
            return f.read().strip()

    def value(self, pin):
        """The pin's level as the kernel would report it, or None if it is not exported.

        The level is the last one written to gpioN/value; before any such write,
        the one a "high"/"low" written to gpioN/direction set (the agent's value
        file is opened for writing, which empties the plain file here). A broken
        line's level is unknown: None.
        """
        if pin in self.broken:
            return None
        d = self.pin_dir(pin)
        try:
            with open(os.path.join(d, "value")) as f:
                text = f.read().strip()
            if text in ("0", "1"):
                return int(text)
            direction = self.direction(pin)
        except OSError:
            return None
        return {"high": 1, "low": 0, "out": 0}.get(direction)

    def close(self):
        for path, fd in self._fifos:
            try:
                os.write(fd, _STOP)
            except OSError:
                pass
        for t in self._threads:
            t.join(5)
        for path, fd in self._fifos:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fifos = []


class SimCamera(GpioTree):
    """A GpioTree under sys/class/gpio, plus /proc files and a state_dir."""

    def __init__(self, root, sd_card=True, rssi=-58, ip="192.0.2.10", majestic=False):
        self.base = os.path.abspath(str(root))
        self.gpio_root = os.path.join(self.base, "sys", "class", "gpio")
        self.proc_root = os.path.join(self.base, "proc")
        self.state_dir = os.path.join(self.base, "state")
        self.sd_mount = os.path.join(self.base, "sd")
        for d in (self.gpio_root, os.path.join(self.proc_root, "net"), self.state_dir,
                  self.sd_mount):
            os.makedirs(d, exist_ok=True)
        self._write_proc(sd_card, rssi)
        self.set_ip(ip)
        GpioTree.__init__(self, self.gpio_root)
        self.majestic = None
        if majestic:
            from .simmajestic import SimMajestic
            self.majestic = SimMajestic()

    def close(self):
        if self.majestic is not None:
            self.majestic.close()
        GpioTree.close(self)

    # --- the kernel side ---------------------------------------------------------
    def _write_proc(self, sd_card, rssi):
        files = {
            "meminfo": "MemTotal:          49152 kB\nMemFree:            9000 kB\n"
                       "MemAvailable:      21504 kB\nBuffers:             100 kB\n",
            "net/wireless": "Inter-| sta-|   Quality        |   Discarded packets"
                            "               | Missed | WE\n"
                            " face | tus | link level noise |  nwid  crypt   frag  retry"
                            "   misc | beacon | 22\n"
                            " wlan0: 0000   54.  %d.  -256        0      0      0      0"
                            "      0        0\n" % rssi,
            "mounts": "/dev/root / squashfs ro,relatime 0 0\n"
                      "proc /proc proc rw,relatime 0 0\n"
                      + ("/dev/mmcblk0p1 %s vfat rw,relatime 0 0\n" % self.sd_mount
                         if sd_card else ""),
        }
        for name, text in files.items():
            with open(os.path.join(self.proc_root, name), "w") as f:
                f.write(text)
        os.symlink("/proc/uptime", os.path.join(self.proc_root, "uptime"))

    def set_ip(self, ip):
        """Give wlan0 another IPv4 address (None: no address), as DHCP would."""
        self.ip = ip
        with open(os.path.join(self.proc_root, "net", "fib_trie"), "w") as f:
            f.write(fib_trie(ip))

    # --- what tests and the live view read -----------------------------------------
    def levels(self, name):
        """Levels of a named pin or pin group (see PINS), None for unexported pins."""
        pins = PINS[name]
        if isinstance(pins, int):
            return self.value(pins)
        return tuple(self.value(p) for p in pins)

    def unsafe(self):
        """A sentence describing an unsafe output state, or None when all is safe.

        Two value files cannot be read at one instant, so one coil is read before
        and after the other: high, high, high within 50 ms means both were driven
        together (a correct agent holds a coil for a whole ~150 ms pulse first).
        """
        start = time.monotonic()
        first = self.value(PINS["ircut_open"])
        other = self.value(PINS["ircut_close"])
        again = self.value(PINS["ircut_open"])
        if first == other == again == 1 and time.monotonic() - start < 0.05:
            return "both IR-cut coils are driven"
        return None

    # --- agent configs -------------------------------------------------------------
    def config(self, device_id="simcam", mqtt=None, fast=False, speedup=None, **extra):
        doc = {"board": BOARD, "device_id": device_id, "gpio_root": self.gpio_root,
               "proc_root": self.proc_root, "state_dir": self.state_dir, "light_file": "",
               "local_port": 0,   # the local channel only where a test gives it a free port
               "mqtt": mqtt or {}}
        if self.majestic is not None:
            doc["majestic"] = dict(extra.pop("majestic", {}), port=self.majestic.port)
        if fast or speedup:
            profile = boards.profile(extra.get("board", BOARD))
            doc["overrides"] = {axis: dict(FAST_AXIS) if fast else _scaled(profile[axis], speedup)
                                for axis in ("pan", "tilt")}
        doc.update(extra)
        return doc

    def write_config(self, path=None, **kwargs):
        path = path or os.path.join(self.base, "camagent.json")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it may hold a password
        with os.fdopen(fd, "w") as f:
            json.dump(self.config(**kwargs), f, indent=2)
        return path


def fib_trie(ip):
    """/proc/net/fib_trie as Linux writes it for lo and, with an address, a /24 on wlan0."""
    loopback = ("  +-- 127.0.0.0/8 2 0 2\n     +-- 127.0.0.0/31 1 0 0\n"
                "        |-- 127.0.0.0\n           /8 host LOCAL\n"
                "        |-- 127.0.0.1\n           /32 host LOCAL\n"
                "     |-- 127.255.255.255\n        /32 link BROADCAST\n")
    lan = ""
    if ip:
        net = ip.rsplit(".", 1)[0]
        lan = ("  +-- %s.0/24 2 0 2\n     |-- %s.0\n        /24 link UNICAST\n"
               "     |-- %s\n        /32 host LOCAL\n     |-- %s.255\n"
               "        /32 link BROADCAST\n" % (net, net, ip, net))
    table = "  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n"
    return "Main:\n" + table + loopback + lan + "Local:\n" + loopback + lan


def _scaled(axis, speedup):
    """An axis's default motion (its board profile) made `speedup` times faster."""
    out = {}
    for key in ("speed", "max_speed", "start_speed", "home_speed", "accel"):
        # the same ramp in 1/speedup of the time needs speedup² the acceleration
        factor = speedup * speedup if key == "accel" else speedup
        out[key] = int(axis[key] * factor)
    return out
