"""camagent.compat's CPython half: what MicroPython has built in, for development.

Outside the camagent package on purpose, so it is never compiled into the .mpy files
that go onto the camera. On MicroPython compat only re-exports the built-ins; on
CPython it imports these: wrapping ticks_* (same 2**30 period and the same
ticks_add() limit as a 32-bit MicroPython build, so wrap-around and overflow code
paths run in development too), an ipoll() shim, and the u-prefixed module aliases
that umqtt.simple 1.3.4 imports.
"""
import binascii
import signal
import socket
import struct
import sys
import time
import types

_PERIOD = 1 << 30
_MASK = _PERIOD - 1
_HALF = _PERIOD >> 1


def const(value):
    """micropython.const: on CPython just the value."""
    return value


def ticks_us():
    return (time.monotonic_ns() // 1000) & _MASK


def ticks_ms():
    return (time.monotonic_ns() // 1000000) & _MASK


def ticks_diff(a, b):
    return ((a - b + _HALF) & _MASK) - _HALF


def ticks_add(t, delta):
    # as extmod/modtime.c: a delta ticks_diff() could not take back is refused
    if not -_HALF < delta < _HALF:
        raise OverflowError("ticks interval overflow")
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


class _Stream:
    """MicroPython's socket stream methods, as umqtt.simple calls them.

    read(n) returns n bytes (fewer only at end of stream), None when a
    non-blocking socket has nothing; write(buf, n) sends buf[:n] whole; and,
    as on the unix port (SO_RCVTIMEO), setblocking(True) keeps a timeout set
    by settimeout() instead of clearing it.
    """
    _timeout = None
    _recv = None  # the class's own receive primitive

    def settimeout(self, t):
        self._timeout = t
        self._base.settimeout(self, t)

    def setblocking(self, flag):
        self._base.settimeout(self, self._timeout if flag else 0.0)

    def read(self, n):
        buf = b""
        while len(buf) < n:
            try:
                chunk = self._recv(n - len(buf))
            except _WOULD_BLOCK:
                return buf or None
            if not chunk:
                break
            buf += chunk
        return buf

    def readinto(self, buf, n=None):
        # as MicroPython's on a non-blocking socket: what is there, None for nothing
        try:
            return self._recv_into(buf, len(buf) if n is None else n)
        except _WOULD_BLOCK:
            return None

    def write(self, data, n=None):
        if n is not None:
            data = memoryview(data)[:n]
        self.sendall(data)
        return len(data)


class _StreamSocket(_Stream, socket.socket):
    _base = socket.socket

    def _recv(self, n):
        return self.recv(n)

    def _recv_into(self, buf, n):
        return self.recv_into(buf, n)


def _getaddrinfo(host, port, *args):
    # umqtt makes an AF_INET socket, so only IPv4 answers are any use to it
    return socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)


_usocket = types.ModuleType("usocket")
_usocket.__dict__.update((k, v) for k, v in socket.__dict__.items() if k.isupper())
_usocket.socket = _StreamSocket
_usocket.getaddrinfo = _getaddrinfo
_WOULD_BLOCK = (BlockingIOError,)

# umqtt.simple imports these MicroPython names
for _name, _mod in (("usocket", _usocket), ("ustruct", struct), ("ubinascii", binascii),
                    ("utime", time)):
    sys.modules.setdefault(_name, _mod)
try:
    import ssl
except ImportError:
    ssl = None
if ssl is not None:
    _WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError)

    class _StreamSSLSocket(_Stream, ssl.SSLSocket):
        _base = ssl.SSLSocket

        def _recv(self, n):
            # SSLSocket.recv() calls self.read(): go to the TLS layer directly
            return ssl.SSLSocket.read(self, n)

        def _recv_into(self, buf, n):
            return ssl.SSLSocket.read(self, n, buf)

    def _wrap_socket(sock, keyfile=None, certfile=None, cert_reqs=ssl.CERT_NONE,
                     ca_certs=None, server_hostname=None):
        """ssl.wrap_socket() as Python 3.11 had it (3.12 removed it), returning
        a socket with the stream methods above."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = server_hostname is not None
        ctx.verify_mode = cert_reqs
        if ca_certs:
            ctx.load_verify_locations(ca_certs)
        if certfile:
            ctx.load_cert_chain(certfile, keyfile)
        ctx.sslsocket_class = _StreamSSLSocket
        return ctx.wrap_socket(sock, server_hostname=server_hostname)

    _ussl = types.ModuleType("ussl")
    _ussl.__dict__.update((k, v) for k, v in ssl.__dict__.items() if k.isupper())
    _ussl.wrap_socket = _wrap_socket
    sys.modules.setdefault("ussl", _ussl)
