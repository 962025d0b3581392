"""A misbehaving MQTT broker for the tests and the bench: a real TCP server on loopback.

It speaks just enough MQTT 3.1.1 to get an agent connected (CONNACK, SUBACK,
PINGRESP), records what the agent publishes, and then, on every connection, runs
a `script(conn)` that sends what a broken or hostile broker would: garbage, a
length field that never ends, a packet trickled a byte at a time, or a huge
PUBLISH. Real brokers cannot be made to do these things; everything else the
tests need a real mosquitto for.
"""
import socket
import threading
import time


def remaining_length(n):
    """MQTT's variable-length encoding of `n`."""
    out = bytearray()
    while True:
        b, n = n & 0x7f, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish_packet(topic, payload, qos=0, retain=False, pid=1):
    """A whole PUBLISH packet (for payloads small enough to hold)."""
    t = topic.encode() if isinstance(topic, str) else topic
    body = len(t).to_bytes(2, "big") + t + (pid.to_bytes(2, "big") if qos else b"") + payload
    return bytes([0x30 | qos << 1 | int(retain)]) + remaining_length(len(body)) + body


def publish_header(topic, size, qos=0):
    """The start of a PUBLISH whose payload is `size` bytes, sent separately."""
    t = topic.encode() if isinstance(topic, str) else topic
    rest = len(t).to_bytes(2, "big") + t + (b"\x00\x01" if qos else b"")
    return bytes([0x30 | qos << 1]) + remaining_length(len(rest) + size) + rest


class Connection:
    """One agent connection, as a script sees it."""

    def __init__(self, broker, sock):
        self.broker = broker
        self.sock = sock
        self.closed = threading.Event()
        self.subscribed = threading.Event()
        self.online = threading.Event()   # the agent said "online": its connect is complete
        self._lock = threading.Lock()

    def send(self, data):
        """False once the agent has gone (the script should then end)."""
        try:
            with self._lock:
                self.sock.sendall(data)
            return True
        except OSError:
            self.closed.set()
            return False

    def trickle(self, data, every_s):
        """Send `data` one byte every `every_s` seconds while the agent stays."""
        for i in range(len(data)):
            if not self.send(data[i:i + 1]) or self.closed.wait(every_s):
                return False
        return True

    def send_payload(self, size, chunk=65536):
        """`size` bytes of payload, streamed (never held whole)."""
        block = b"x" * chunk
        while size > 0:
            n = min(size, chunk)
            if not self.send(block[:n]):
                return False
            size -= n
        return True


class HostileBroker:
    """Listens on 127.0.0.1; `script(conn)` runs on each connection once the agent is
    online on it (CONNACK, SUBACK, its availability published)."""

    def __init__(self, script=None, answer_pings=True):
        self.script = script
        self.answer_pings = answer_pings
        self.host = "127.0.0.1"
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind((self.host, 0))
        self._server.listen(8)
        self.port = self._server.getsockname()[1]
        self.connections = []          # Connection per accepted CONNECT, in order
        self.connect_times = []        # time.monotonic() of each CONNECT
        self.published = []            # (topic, payload) the agents published
        self.subscriptions = []        # topic filters asked for
        self.cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def close(self):
        self._stopping = True
        self._server.close()
        for c in self.connections:
            c.closed.set()
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.sock.close()

    kill = close

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def wait(self, condition, timeout=20, what="condition"):
        end = time.monotonic() + timeout
        with self.cond:
            while not condition():
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError("hostile broker: timed out waiting for " + what)
                self.cond.wait(left)

    def errors(self, base):
        with self.cond:
            return [p for t, p in self.published if t == base + "/error"]

    # --- serving ----------------------------------------------------------------------
    def _accept(self):
        while not self._stopping:
            try:
                sock, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock):
        conn = Connection(self, sock)
        reader = _Reader(sock)
        try:
            op, body = reader.packet()
            if op >> 4 != 1:
                return
            conn.send(b"\x20\x02\x00\x00")
        except OSError:
            sock.close()
            return
        with self.cond:
            self.connections.append(conn)
            self.connect_times.append(time.monotonic())
            self.cond.notify_all()
        threading.Thread(target=self._listen, args=(conn, reader), daemon=True).start()
        if self.script:
            conn.online.wait(10)
            self.script(conn)

    def _listen(self, conn, reader):
        """The agent's packets: answered as a broker would, PUBLISHes recorded."""
        try:
            while True:
                op, body = reader.packet()
                kind = op >> 4
                if kind == 8:        # SUBSCRIBE: grant QoS 1 to every filter
                    filters, i = [], 2
                    while i < len(body):
                        n = int.from_bytes(body[i:i + 2], "big")
                        filters.append(body[i + 2:i + 2 + n].decode())
                        i += 3 + n
                    with self.cond:
                        self.subscriptions.extend(filters)
                    conn.send(b"\x90" + remaining_length(2 + len(filters)) + body[:2]
                              + b"\x01" * len(filters))
                    conn.subscribed.set()
                elif kind == 12 and self.answer_pings:
                    conn.send(b"\xd0\x00")
                elif kind == 3:
                    n = int.from_bytes(body[:2], "big")
                    start = 2 + n + (2 if op & 6 else 0)
                    topic, payload = body[2:2 + n].decode(), bytes(body[start:])
                    if topic.endswith("/availability") and payload == b"online":
                        conn.online.set()
                    with self.cond:
                        self.published.append((topic, payload))
                        self.cond.notify_all()
                elif kind == 14:
                    break
        except (OSError, ValueError):
            pass
        finally:
            conn.closed.set()
            with self.cond:
                self.cond.notify_all()


class _Reader:
    def __init__(self, sock):
        self.sock = sock

    def _exactly(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise OSError("closed")
            buf += chunk
        return buf

    def packet(self):
        op = self._exactly(1)[0]
        n, shift = 0, 0
        while True:
            b = self._exactly(1)[0]
            n |= (b & 0x7f) << shift
            shift += 7
            if not b & 0x80:
                break
        return op, self._exactly(n)
