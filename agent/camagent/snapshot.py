"""Relaying majestic's /image.jpg to MQTT without holding the image.

The MQTT PUBLISH header needs the whole length first: it is taken from the
HTTP Content-Length, written to the broker, and the body then follows in the
2 KB pieces majestic.Http reads, straight from one socket to the other. The
image is never in memory and the step loop never waits: a piece moves only
when the HTTP socket has data and the MQTT socket has room (poll, not a wait).

While the packet is half-written the MQTT stream belongs to the relay: the
session's other publications are held here (the latest per retained topic)
and its pings wait, until the last byte is out. Commands are still read and
carried out at once (a stop must not wait for a picture); only what umqtt
writes back for them, a PUBACK, waits too (_Deferred). If majestic stops mid-body the
packet cannot be completed (padding would publish a broken picture as if it
were whole), so the MQTT connection is closed and reopened, and the error is
published on <base>/error once it is back.
"""
import select

from .commands import error_document
from .compat import ipoll, ticks_add
from .majestic import MajesticError


def publish_head(topic, body_len, retain=False):
    """Fixed header + topic of a QoS 0 PUBLISH carrying body_len bytes."""
    if isinstance(topic, str):
        topic = topic.encode()
    remaining = 2 + len(topic) + body_len
    if remaining > 268435455:
        raise ValueError("snapshot too big for one MQTT packet")
    head = bytearray((0x31 if retain else 0x30,))
    while remaining > 0x7F:           # the remaining length, 7 bits a byte
        head.append(remaining & 0x7F | 0x80)
        remaining >>= 7
    head.append(remaining)
    head.append(len(topic) >> 8)
    head.append(len(topic) & 0xFF)
    head.extend(topic)
    return bytes(head)


class _Deferred:
    """The MQTT socket as the client sees it while a snapshot is half-written: reads
    go straight through, its own writes (PUBACKs) wait for the end of the packet. The
    broker sends at most its in-flight limit of QoS 1 messages unacknowledged, so
    what waits stays small."""

    def __init__(self, sock):
        self.sock = sock
        self.later = bytearray()
        pending = getattr(sock, "pending", None)   # CPython's TLS buffer, for the session
        if pending is not None:
            self.pending = pending

    def read(self, n):
        return self.sock.read(n)

    def readinto(self, buf, n=-1):
        return self.sock.readinto(buf) if n < 0 else self.sock.readinto(buf, n)

    def setblocking(self, flag):
        self.sock.setblocking(flag)

    def settimeout(self, t):
        self.sock.settimeout(t)

    def write(self, data, n=None):
        self.later.extend(data if n is None else data[:n])
        return len(data) if n is None else n

    def close(self):
        self.sock.close()


class Relay:
    """`<base>/snapshot/get`, the periodic and the motion snapshots, one at a time."""

    def __init__(self, session, http, cfg):
        self._session = session
        self._http = http
        snap = cfg["snapshot"]
        self.path = "/image.jpg" + ("?" + snap["query"] if snap["query"] else "")
        self.retain = snap["retain"]
        self.topic = (session.base + "/snapshot").encode()
        self._request_topic = self.topic + b"/get"
        self._interval_us = snap["interval_s"] * 1000000
        self.published = 0       # snapshots sent whole, for the tests and the log
        self.failed = 0
        self._reason = None      # what asked for the running snapshot
        self._sock = None        # the MQTT socket the packet is being written to
        self._poller = None
        self._held = []          # [topic, payload, retain] waiting for the packet's end
        self._error = None       # an error to publish once MQTT is back
        cam = session.cam
        self.due = ticks_add(cam.now(), self._interval_us) if self._interval_us else None
        cam.loop.add(self)

    def request_snapshot(self, reason):
        """Fetch and publish one snapshot (reason: "mqtt", "interval", "motion"...).
        False if one is already on its way (it answers this request too)."""
        if self._reason is not None:
            return False
        self._reason = reason
        return self._http.get(self.path, self)

    @property
    def holding(self):
        return self._sock is not None

    # --- loop device: periodic snapshots, and an error kept across a reconnect ----------
    def tick(self, now):
        s = self._session
        self.due = ticks_add(now, self._interval_us) if self._interval_us else None
        if self._interval_us and s.connected:
            self.request_snapshot("interval")
        if self._error is not None:
            if s.connected and not self.holding:
                error, self._error = self._error, None
                s._publish(s.t_error, error)
            elif self.due is None:
                self.due = ticks_add(now, 1000000)   # look again when MQTT is back

    # --- majestic.Http handler ------------------------------------------------------
    def head(self, length):
        if length is None:
            raise MajesticError("majestic sent no Content-Length")
        s = self._session
        if not s.connected:
            raise MajesticError("MQTT is not connected")
        sock = s.client.sock
        try:
            sock.write(publish_head(self.topic, length, self.retain))
        except OSError as e:
            s._lost("publish failed: %s" % e)
            raise MajesticError("MQTT write failed")
        self._sock = sock
        s.held = self
        s.client.sock = _Deferred(sock)

    def ready(self):
        if not self._current():
            return True   # chunk() says what went wrong
        if self._poller is None:
            self._poller = select.poll()
            self._poller.register(self._sock, select.POLLOUT)
        for ready in ipoll(self._poller, 0):   # ipoll: no list allocated per chunk
            return True
        return False

    def chunk(self, buf, n):
        # no try here (see majestic.Http): a failed write ends the job, and done()
        # closes the half-written MQTT session
        if not self._current():
            raise MajesticError("the MQTT connection was lost mid-snapshot")
        self._sock.write(buf, n)

    def _current(self):
        """The packet is being written on the session's live connection."""
        client = self._session.client
        return self._sock is not None and client is not None and \
            isinstance(client.sock, _Deferred) and client.sock.sock is self._sock

    def abandon(self, client):
        """The session is closing the connection mid-packet: its own socket back."""
        if client is not None and isinstance(client.sock, _Deferred):
            client.sock = client.sock.sock

    def done(self, error):
        reason, self._reason = self._reason, None
        s = self._session
        mid_packet = self._sock is not None and error is not None
        current = self._current()
        later = None
        if current:
            later = s.client.sock.later
            s.client.sock = self._sock
        self._sock = None
        self._poller = None
        if s.held is self:
            s.held = None
        if later and not mid_packet:
            try:   # the PUBACKs that waited for the packet's end
                s.client.sock.write(later)
            except OSError as e:
                s._lost("publish failed: %s" % e)
        if error is None:
            self.published += 1
        else:
            self.failed += 1
            doc = error_document(self._request_topic if reason == "mqtt" else self.topic,
                                 reason.encode() if reason != "mqtt" else b"",
                                 "snapshot: " + error).encode()
            if mid_packet and current:
                s._log("snapshot stopped mid-packet (%s): the MQTT packet cannot be "
                       "completed, so the connection is closed and reopened" % error)
                s._lost("snapshot stopped mid-packet")
            if s.connected:
                s._publish(s.t_error, doc)
            else:
                self._error = doc   # published once the session is back
                if self.due is None:
                    self.due = ticks_add(s.cam.now(), 1000000)
        held, self._held = self._held, []
        if s.connected:
            for topic, payload, retain in held:
                s._publish(topic, payload, retain)
            s._schedule()

    # --- the session's publications while the packet is half-written ------------------
    def hold(self, topic, payload, retain):
        if retain:
            for entry in self._held:
                if entry[0] == topic:
                    entry[1] = payload
                    return
        if len(self._held) >= 8:
            # 8 held: the oldest that is not retained (an error reply) goes, the state
            # must get out
            i = 0
            while i < len(self._held) - 1 and self._held[i][2]:
                i += 1
            self._session._log("dropped a publication on %s held behind a snapshot"
                               % self._held.pop(i)[0].decode())
        self._held.append([topic, payload, retain])
