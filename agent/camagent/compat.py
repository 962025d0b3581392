"""The few MicroPython names the agent uses, made available on CPython too.

On MicroPython this module only re-exports. On CPython it takes the same names
from camagent_cpython (beside the package, not in it, so it never ships): wrapping
ticks_* (same 2**30 period and the same ticks_add() limit as a 32-bit MicroPython
build, so wrap-around and overflow code paths run in development too), an
ipoll() shim, and the u-prefixed module aliases that umqtt.simple 1.3.4 imports.
Both get MinGap, the one way the agent measures how long ago something happened,
and read_text(), the one way it reads a file that may be missing.
"""
import os
import sys

IS_MICROPYTHON = sys.implementation.name == "micropython"

if IS_MICROPYTHON:
    # const(): the compiler writes the value where the name is used, and stores no
    # name at all for one that starts with _ (the others stay importable)
    from micropython import const
    from time import ticks_us, ticks_ms, ticks_diff, ticks_add, sleep_us, sleep_ms

    def ipoll(poller, timeout_ms):
        # ipoll reuses one result tuple: no allocation per wakeup
        return poller.ipoll(timeout_ms)

    def poll_key(obj):
        return obj

    def install_term_handler():
        # The unix port has no signal module; the init script stops us with SIGINT.
        # Under `micropython -m` the port never arms its SIGINT handler (only code run
        # from a file or -c does), so SIGINT would kill us with the coils energised:
        # kbd_intr(3) arms it, and SIGINT then arrives as KeyboardInterrupt.
        import micropython
        micropython.kbd_intr(3)

else:
    # CPython (development): stand-ins kept outside the package, so they never ship
    from camagent_cpython import (const, ticks_us, ticks_ms, ticks_diff, ticks_add, sleep_us,
                                  sleep_ms, ipoll, poll_key, install_term_handler)

# The longest delta ticks_add() takes on a 32-bit build such as the camera's: it raises
# OverflowError from half the 2**30 us tick period (~537 s) on. Ages beyond it cannot be
# measured with ticks_diff() either.
MAX_DELAY_US = const((1 << 29) - 1)


class MinGap:
    """At least `gap_us` between two events, measured safely across the ticks wrap.

    ticks_diff(now, last) is only right while `last` is less than half the tick
    period old (~537 s on the camera): an older event looks like one in the future
    (a negative age) or, after a whole period, like a recent one. So a negative age
    counts as "the gap has passed", and the event is forgotten as soon as the gap is
    seen to have passed. The owner must look (call wait()) within ~537 s of mark(),
    typically from a deadline at the end of the gap.
    """

    def __init__(self, gap_us):
        if not 0 <= gap_us <= MAX_DELAY_US:
            raise ValueError("a gap of %d us is beyond the ticks range" % gap_us)
        self.gap_us = gap_us
        self.last = None   # ticks_us of the last event, None once the gap has passed

    def mark(self, now):
        """The event happens at `now`."""
        self.last = now

    def forget(self):
        self.last = None

    def wait(self, now):
        """Microseconds from `now` until the gap has passed: 0 when the next event may happen."""
        if self.last is None:
            return 0
        age = ticks_diff(now, self.last)
        if age < 0 or age >= self.gap_us:
            self.last = None
            return 0
        return self.gap_us - age


def read_text(path, limit):
    """The text of file `path`, or None when there is no such file.

    MicroPython 1.22's failed open() leaves a file object whose finaliser closes fd 0
    when collected, and on the camera fd 0 is often the MQTT socket by then (upstream
    issue 13672): so os.stat first, which makes no file object, and open only what is
    there. OSError and UnicodeError as open() and read() raise them; ValueError, unread,
    for more than `limit` bytes (a huge file must not take the heap) and for what is not
    a regular file (a FIFO would block the loop, a device never end).
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    kind = st[0] & 0o170000
    if kind == 0o040000:
        raise OSError(21, path)    # EISDIR: open() would fail, so it must not be tried
    if kind != 0o100000:
        raise ValueError("not a regular file")
    if st[6] > limit:
        raise ValueError("too big: %d bytes, more than the %d accepted" % (st[6], limit))
    with open(path) as f:
        text = f.read()    # /proc and sysfs files say 0 bytes; the kernel bounds them
    if len(text) > limit:
        raise ValueError("too big: more than the %d bytes accepted" % limit)
    return text


# Words for the errno values file and directory operations give: MicroPython's
# errno.errorcode has only some names, and a name is not a reason anyway.
_REASONS = {1: "operation not permitted", 2: "no such file or directory",
            5: "input/output error", 12: "out of memory", 13: "permission denied",
            17: "file exists", 20: "not a directory", 21: "is a directory",
            22: "invalid argument", 28: "no space left on device",
            30: "read-only file system", 36: "file name too long"}


def reason(exc):
    """An OSError's cause in words, as strerror() says it: "permission denied"."""
    code = exc.args[0] if exc.args else None
    if code in _REASONS:
        return _REASONS[code]
    return "error %s" % code if isinstance(code, int) else str(exc)


def hostname():
    """The kernel's hostname (MicroPython's socket module has no gethostname)."""
    for path in ("/proc/sys/kernel/hostname", "/etc/hostname"):
        try:
            name = (read_text(path, 256) or "").strip()
        except (OSError, ValueError):
            continue
        if name:
            return name
    return "camera"
