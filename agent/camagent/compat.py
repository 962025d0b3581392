"""The few MicroPython names the agent uses, made available on CPython too.

On MicroPython this module only re-exports. On CPython it supplies wrapping
ticks_* (same 2**30 period as a 32-bit MicroPython build, so wrap-around code
paths run in development too), an ipoll() shim, and the u-prefixed module
aliases that umqtt.simple 1.3.4 imports.
"""
import sys
import time

IS_MICROPYTHON = sys.implementation.name == "micropython"

if IS_MICROPYTHON:
    from time import ticks_us, ticks_ms, ticks_diff, ticks_add, sleep_us, sleep_ms

    def ipoll(poller, timeout_ms):
        # ipoll reuses one result tuple: no allocation per wakeup
        return poller.ipoll(timeout_ms)

    def poll_key(obj):
        return obj

    def install_term_handler():
        # The unix port has no signal module; the init script stops us with SIGINT,
        # which arrives as KeyboardInterrupt and runs the normal cleanup.
        pass

else:
    import binascii
    import signal
    import socket
    import struct

    _PERIOD = 1 << 30
    _MASK = _PERIOD - 1
    _HALF = _PERIOD >> 1

    def ticks_us():
        return (time.monotonic_ns() // 1000) & _MASK

    def ticks_ms():
        return (time.monotonic_ns() // 1000000) & _MASK

    def ticks_diff(a, b):
        return ((a - b + _HALF) & _MASK) - _HALF

    def ticks_add(t, delta):
        return (t + delta) & _MASK

    def sleep_us(us):
        time.sleep(us / 1e6)

    def sleep_ms(ms):
        time.sleep(ms / 1e3)

    def ipoll(poller, timeout_ms):
        return poller.poll(timeout_ms)

    def poll_key(obj):
        # CPython's poll() reports file descriptors, MicroPython's the objects
        return obj if isinstance(obj, int) else obj.fileno()

    def _raise_interrupt(signum, frame):
        raise KeyboardInterrupt

    def install_term_handler():
        signal.signal(signal.SIGTERM, _raise_interrupt)

    # umqtt.simple imports these MicroPython names
    for _name, _mod in (("usocket", socket), ("ustruct", struct), ("ubinascii", binascii),
                        ("utime", time)):
        sys.modules.setdefault(_name, _mod)
    try:
        import ssl
        sys.modules.setdefault("ussl", ssl)
    except ImportError:
        pass


def hostname():
    """The kernel's hostname (MicroPython's socket module has no gethostname)."""
    for path in ("/proc/sys/kernel/hostname", "/etc/hostname"):
        try:
            with open(path) as f:
                name = f.read().strip()
        except OSError:
            continue
        if name:
            return name
    return "camera"
