"""Talking to OpenIPC's majestic (the streamer) over its HTTP port on loopback.

Http is a loop device that runs one GET at a time and never waits: the
connect is non-blocking, and the answer is read as the socket becomes readable,
one buffer (2 KB) per wakeup, so motor steps keep their timing. What to do with
an answer is the job's handler's business (an answer other than 200 OK is
refused before it sees one):

    handler.head(length)          the answer's Content-Length (None if absent);
                                  raises MajesticError to refuse it
    handler.ready()               True when it can take a chunk now
    handler.chunk(buf, n)         buf[:n] is the next piece of the body
    handler.done(error)           the job ended: None, or a sentence saying why not

Also here: the pure parsing of an answer's head and of `/metrics/isp` lines.
"""
import sys

from .compat import IS_MICROPYTHON, const, ticks_add, ticks_diff

_CHUNK = const(2048)  # the one read buffer: an answer head must fit in it
_CONNECT_CHECK_US = const(2000)  # how often a connect in progress is looked at


class MajesticError(Exception):
    pass


def parse_head(head):
    """(status, content_length) from the bytes before the blank line; the length is
    None when there is none (the snapshot relay, which needs it for the MQTT header
    before the first byte of the image arrives, refuses that answer)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        raise MajesticError("majestic answered something that is not HTTP")
    try:
        status = int(parts[1])
    except ValueError:
        raise MajesticError("majestic sent a bad HTTP status line")
    length = None
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                length = -1
            if length < 0:
                raise MajesticError("majestic sent a bad Content-Length")
    return status, length


def gain_from_line(line):
    """The value of an `isp_again` sample line, or None for any other line."""
    line = line.strip()
    if not line.startswith(b"isp_again"):
        return None
    rest = line[9:]
    if rest[:1] == b"{":
        end = rest.find(b"}")
        if end < 0:
            return None
        rest = rest[end + 1:]
    elif rest[:1] not in (b" ", b"\t"):
        return None  # another metric whose name starts with isp_again
    fields = rest.split()
    if not fields:
        return None
    try:
        return float(fields[0])
    except ValueError:
        return None


class Http:
    """GETs to majestic on 127.0.0.1:port, queued and run one at a time."""

    def __init__(self, camera, port, timeout_s, username="", password=""):
        import socket   # here, not at the top: the parsers above need no network
        self._cam = camera
        self._auth = b""
        if username:   # majestic's web login, when its API asks for one
            from binascii import b2a_base64
            token = b2a_base64(("%s:%s" % (username, password)).encode()).strip()
            self._auth = b"Authorization: Basic " + token + b"\r\n"
        self._loop = camera.loop
        self.port = port
        self._addr = socket.getaddrinfo("127.0.0.1", port)[0][-1]
        self._timeout_us = timeout_s * 1000000
        self.buf = bytearray(_CHUNK)
        self._queue = []        # [path, handler] waiting their turn
        self._job = None        # the [path, handler] running
        self._sock = None
        self._recv_into = None
        self._poller = None
        self._phase = None      # "connect", "head", "body" or "blocked"
        self._fill = 0          # head bytes in buf
        self._left = None       # body bytes still to come (None: until the end)
        self.got = 0            # body bytes of the running job so far
        self._deadline = None
        self.due = None
        self._loop.add(self)

    @property
    def busy(self):
        return self._job is not None

    def get(self, path, handler):
        """Queue a GET; a handler already queued just gets the newer path (the
        colour asked for last wins). False if that very GET is already running."""
        if self._job is not None and self._job[1] is handler and self._job[0] == path:
            return False
        for job in self._queue:
            if job[1] is handler:
                job[0] = path
                return True
        self._queue.append([path, handler])
        if self._job is None:
            self._start()
        return True

    # --- one job ----------------------------------------------------------------------
    def _start(self):
        import select
        import socket
        if not self._queue:
            return
        self._job = job = self._queue.pop(0)
        now = self._cam.now()
        self._deadline = ticks_add(now, self._timeout_us)
        self._fill = 0
        self.got = 0
        self._left = None
        sock = socket.socket()
        self._sock = sock
        # MicroPython's readinto answers None when nothing is there; CPython raises
        self._recv_into = sock.readinto if IS_MICROPYTHON else _cpython_reader(sock)
        sock.setblocking(False)
        try:
            sock.connect(self._addr)
        except OSError as e:
            if e.args[0] not in (115, 36):   # EINPROGRESS: Linux, and a developer's BSD
                self._finish("majestic is not running (127.0.0.1:%d: %s)"
                             % (self.port, _why(e)))
                return
        self._poller = select.poll()
        self._poller.register(sock, select.POLLOUT)
        self._phase = "connect"
        self.due = ticks_add(now, _CONNECT_CHECK_US)

    def tick(self, now):
        if self._job is None:
            self.due = None
            return
        if ticks_diff(now, self._deadline) >= 0:
            self._finish("majestic did not answer %s within %d s (%s)" % (
                self._job[0], self._timeout_us // 1000000,
                "no answer yet" if self._phase in ("connect", "head") else
                "%d bytes of the body so far" % self.got))
            return
        if self._phase == "connect":
            self._connecting(now)
        elif self._phase == "blocked":
            self._phase = "body"
            self._loop.watch(self._sock, self._readable)
            self.due = self._deadline
        else:
            self.due = self._deadline

    def _connecting(self, now):
        import select
        event = 0
        for obj, event in self._poller.poll(0):
            break
        if not event:
            self.due = ticks_add(now, _CONNECT_CHECK_US)
            if ticks_diff(self.due, self._deadline) > 0:
                self.due = self._deadline
            return
        request = b"GET " + self._job[0].encode() + b" HTTP/1.0\r\nHost: 127.0.0.1\r\n" + \
            self._auth + b"\r\n"
        try:
            # tens of bytes: fits the empty send buffer; after POLLERR or POLLHUP, send
            # raises the connect's error (ECONNREFUSED)
            self._sock.send(request)
            if event & (select.POLLERR | select.POLLHUP):
                raise OSError(111)
        except OSError as e:
            self._finish("majestic is not running (127.0.0.1:%d: %s)" % (self.port, _why(e)))
            return
        self._poller = None
        self._phase = "head"
        self._loop.watch(self._sock, self._readable)
        self.due = self._deadline

    # The per-chunk path allocates nothing: no `except ... as e` in it (MicroPython puts
    # a frame with one on the heap at every call), and no lists.
    def _readable(self):
        try:
            self._pump()
        except Exception:
            self._failed()

    def _pump(self):
        if self._phase == "head":
            self._read_head()
        burst = 1 if self._cam.busy else 8   # chunks per wakeup: 8 while nothing is timed
        while burst and self._phase == "body" and self._read_body():
            burst -= 1

    def _failed(self):
        e = sys.exc_info()[1] if hasattr(sys, "exc_info") else None
        if isinstance(e, MajesticError):
            self._finish(str(e))
        else:
            self._finish("relaying %s failed: %s" % (
                self._job[0], _why(e) if isinstance(e, OSError) else repr(e)))

    def _read_head(self):
        buf = self.buf
        mv = memoryview(buf)
        n = self._recv_into(mv[self._fill:], _CHUNK - self._fill)
        if n is None:
            return
        if n == 0:
            raise MajesticError("majestic closed the connection before answering"
                                if not self._fill else
                                "majestic answered something that is not HTTP")
        self._fill += n
        end = buf.find(b"\r\n\r\n", 0, self._fill)
        if end < 0:
            if self._fill == _CHUNK:
                raise MajesticError("majestic's answer head is longer than %d bytes" % _CHUNK
                                    if buf.startswith(b"HTTP/") else
                                    "majestic answered something that is not HTTP")
            return
        handler = self._job[1]
        status, length = parse_head(bytes(mv[:end]))
        if status != 200:
            raise MajesticError("majestic answered HTTP %d for %s" % (status, self._job[0]))
        handler.head(length)
        self._left = length
        self._phase = "body"
        start = end + 4
        extra = self._fill - start
        if self._left is not None and extra > self._left:
            extra = self._left
        if extra > 0:   # the first body bytes came with the head: to the front
            buf[:extra] = bytes(mv[start:start + extra])
            self._deliver(extra)
        elif self._left == 0:
            self._finish(None)

    def _read_body(self):
        """Move one chunk; True if it did and the body goes on."""
        handler = self._job[1]
        if not handler.ready():
            # leave the data in the socket: watched, it would wake the loop at once
            self._loop.unwatch(self._sock)
            self._phase = "blocked"
            self.due = ticks_add(self._cam.now(), 5000)   # then ask it again
            return False
        want = _CHUNK if self._left is None or self._left > _CHUNK else self._left
        n = self._recv_into(self.buf, want)
        if n is None:
            return False
        if n == 0:
            if self._left is None:
                self._finish(None)
                return False
            raise MajesticError("majestic closed the connection after %d of %d bytes"
                                % (self.got, self.got + self._left))
        self._deliver(n)
        return True

    def _deliver(self, n):
        self.got += n
        if self._left is not None:
            self._left -= n
        self._job[1].chunk(self.buf, n)
        if self._left == 0 and self._job is not None:
            self._finish(None)

    def _finish(self, error):
        job, self._job = self._job, None
        sock, self._sock = self._sock, None
        self._poller = None
        self._recv_into = None
        self._phase = None
        self.due = None
        if sock is not None:
            self._loop.unwatch(sock)
            try:
                sock.close()
            except OSError:
                pass
        if job is not None:
            job[1].done(error)
        if self._job is None:
            self._start()


def _cpython_reader(sock):
    def recv_into(buf, n):
        try:
            return sock.recv_into(buf, n)
        except OSError as e:
            if e.args[0] in (11, 35):   # EAGAIN (Linux, BSD)
                return None
            raise
    return recv_into


def _why(e):
    text = {111: "connection refused", 104: "connection reset", 32: "broken pipe",
            113: "no route"}.get(e.args[0] if e.args else None)
    return text or "%s %s" % (type(e).__name__, e)
