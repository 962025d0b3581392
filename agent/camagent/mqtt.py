"""The agent's MQTT session: umqtt.simple plus what it leaves to the application.

umqtt.simple speaks the protocol; this module adds a timeout on every socket
operation, keepalive pings, noticing a dead broker, reconnecting with capped
exponential backoff and jitter, subscribing, and republishing availability,
discovery and state. It is a device on the agent's loop: it never (re)connects
while a motor moves, and an idle connection costs one wakeup per keepalive
period, in which it pings and reads the answer.

Receiving never blocks: `_Client.wait_msg` reads only what the socket already
has, keeps a half-read packet across wakeups, caps the length field at MQTT's 4
bytes, skips a message too big to accept in small pieces without allocating it,
and gives each packet a deadline of its own, so a broker that stalls, trickles
or floods costs the motors nothing and is dropped.
"""
import json
import os
import select
import sys

from umqtt.simple import MQTTClient, MQTTException

from . import VERSION
from .commands import MAX_PAYLOAD, CommandError, Commands, error_document
from .compat import IS_MICROPYTHON, MinGap, const, ipoll, ticks_add, ticks_diff, ticks_ms
from .discovery import Discovery, camera_ip, video_urls
from .instance import Instance
from .presets import Presets
from .status import Status

# const() (compat): the values are written where they are used, and the names starting
# with _ are not even stored (tests import the others)
IO_TIMEOUT_S = const(5)           # connect, TLS handshake, a write; and a packet's deadline
_RX_MIN_RATE = const(32768)       # B/s: a big packet gets IO_TIMEOUT_S plus its size at this
_RX_MAX_EXTRA_S = const(300)      # rate, but no more (ticks_add reaches ~537 s ahead)
_RX_CHUNK = const(256)            # a message too big to accept is skipped this much at a time
_RX_READS_PER_WAKEUP = const(32)  # then back to the loop: skipping 8 MB must not starve motors
_RX_READS_BUSY = const(4)         # ... and fewer while a motor steps, so that no step waits
_TOPIC_ROOM = const(32)           # topic bytes kept beyond our own "<base>/": more is not ours
_RX_PAYLOAD = const(2048)         # payload bytes kept: a state document (commands: MAX_PAYLOAD)
_PUBLISH_GAP_US = const(200000)   # state at most ~5 times a second while something changes
_PING_WAIT_MS = const(50)         # idle: wait this long for the ping answer in the same wakeup
_MAX_HEARTBEAT_S = const(300)     # ticks_add() reaches ~537 s ahead; longer periods are split
_BACKOFF_MIN_S = const(1)
BACKOFF_MAX_S = const(60)
HEALTHY_S = const(60)             # a connection must last this long before the backoff resets
_BUSY_RETRY_US = const(250000)    # no (blocking) reconnect while a motor moves: look again soon
_MAX_PACKETS_PER_WAKEUP = const(20)  # a flood of commands must not starve the motors
_PUBLISH = const(0x30)            # packet types, as the first byte has them
_SUBACK = const(0x90)
_PINGRESP = const(0xd0)
_IPPROTO_TCP = const(6)           # socket options (Linux; MicroPython has no names for them)
_TCP_NODELAY = const(1)
_TCP_QUICKACK = const(12)         # ACK what was read at once, not after ~40 ms
_CONNACK = {1: "unsupported protocol version", 2: "client id rejected",
            3: "broker unavailable", 4: "bad username or password", 5: "not authorised"}


class ProtocolError(Exception):
    """The broker sent something that is not MQTT 3.1.1: the connection is dropped."""


class _Client(MQTTClient):
    """umqtt.simple's client with IO_TIMEOUT_S and TCP_NODELAY on every socket it opens,
    one SUBSCRIBE for all our topics, and a receive path that never blocks.

    umqtt assigns `self.sock` for the TCP socket and again for the TLS wrapper;
    catching the assignment puts the timeout in place before connect() and the
    TLS handshake, which umqtt runs with no timeout of its own. Without
    TCP_NODELAY each of umqtt's small writes waits for the broker's (delayed) ACK
    of the one before.
    """

    def __init__(self, rx, topic_room, clock, *args):
        self._tcp = None               # the TCP socket (under TLS, the one beneath)
        MQTTClient.__init__(self, *args)
        self.rx = rx                   # body buffer: 2 + topic room + 2 + payload room
        self.rx_view = memoryview(rx)
        self.topic_room = topic_room
        self.payload_room = len(rx) - 4 - topic_room
        # header bytes and skipped bytes land here (and, between packets, the session's
        # PUBLISH headers)
        self.skip = bytearray(_RX_CHUNK)
        self.clock = clock
        self.on_skipped = None         # (topic, payload head, payload size) of a skipped message
        self.sub_count = 0
        self._next_packet()

    @property
    def sock(self):
        return self._sock

    @sock.setter
    def sock(self, s):
        if s is not None:
            try:
                s.settimeout(IO_TIMEOUT_S)
            except (AttributeError, OSError):
                pass  # a TLS wrapper without settimeout: the socket under it has one
            if self._tcp is None:
                self._tcp = s
                try:
                    s.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
                except (AttributeError, OSError):
                    pass  # not Linux TCP: Nagle stays on
        self._sock = s

    def ack_now(self):
        """Have the kernel ACK what we read at once (it drops back to delayed ACKs on
        its own, so this follows every read); with no TCP_QUICKACK, stop asking."""
        if self._tcp is not None:
            try:
                self._tcp.setsockopt(_IPPROTO_TCP, _TCP_QUICKACK, 1)
            except (AttributeError, OSError):
                self._tcp = None

    def subscribe_all(self, topics):
        """One SUBSCRIBE (QoS 1, packet id 1: the only one on this connection) for all
        `topics`; its SUBACK comes through wait_msg()."""
        body = bytearray(b"\0\1")
        for t in topics:
            body.append(len(t) >> 8)
            body.append(len(t) & 0xff)
            body.extend(t)
            body.append(1)
        self.sub_count = len(topics)
        n = len(body)
        head = bytearray(b"\x82")
        while n > 0x7f:
            head.append(n & 0x7f | 0x80)
            n >>= 7
        head.append(n)
        self.sock.write(head + body)

    # --- receiving: one packet at a time, across as many wakeups as it takes -------
    def _next_packet(self):
        self.op = 0            # the packet's first byte; 0 (reserved) until it comes
        self.length = 0        # its remaining length, as far as read
        self.shift = 0         # bits of the length read; -1 once it is complete
        self.got = 0           # body bytes read
        self.deadline = None   # clock() by which the whole packet must be in
        self.drained = True    # the last read found the socket empty (or the packet done)

    def wait_msg(self, reads=_RX_READS_PER_WAKEUP):
        """Read what the socket has now (at most `reads` reads), never waiting for more,
        and handle the packet once it is complete. Returns its type (PUBLISH, SUBACK,
        PINGRESP) or None while it is incomplete: `drained` then says whether the socket
        ran dry (else call again: the read budget was spent). ProtocolError for what is
        not MQTT, OSError when the broker closed the connection."""
        sock = self.sock
        sock.setblocking(False)
        try:
            done = self._read(sock, reads)
        finally:
            sock.setblocking(True)   # writes (answers, publications) may block, timed out
        if not done:
            return None
        op, length = self.op, self.length
        self._next_packet()
        kind = op & 0xf0
        if kind == _PUBLISH:
            self._publish_in(op, length)
        elif kind == _SUBACK:
            rx = self.rx
            if rx[0] << 8 | rx[1] != 1:
                raise ProtocolError("a SUBACK for a subscription never asked for")
            for i in range(self.sub_count):
                if rx[2 + i] & 0x80:
                    raise ProtocolError("the broker refused the subscription (is this "
                                        "client allowed to read the command topics?)")
        return kind

    def _read(self, sock, reads):
        """Advance the packet by at most `reads` reads; True once complete."""
        self.drained = False
        for _ in range(reads):
            if self.shift >= 0:          # the fixed header: type, then 1 to 4 length bytes
                if not self._arrived(sock.readinto(self.skip, 1)):
                    return False
                b = self.skip[0]
                if not self.op:
                    self._begin(b)
                    continue
                if self.shift == 21 and b & 0x80:
                    raise ProtocolError("a remaining length of more than 4 bytes")
                self.length |= (b & 0x7f) << self.shift
                if b & 0x80:
                    self.shift += 7
                    continue
                self._sized()
            elif self.got < self.length:
                n = self._window()
                if self.pos < 0:
                    n = sock.readinto(self.skip, min(n, _RX_CHUNK))
                elif self.pos:
                    n = sock.readinto(self.rx_view[self.pos:self.pos + n])
                else:
                    n = sock.readinto(self.rx, n)
                if not self._arrived(n):
                    return False
                self.got += n
            if self.shift < 0 and self.got >= self.length:
                self.drained = True
                return True
        return False

    def _arrived(self, n):
        if n is None:                    # nothing more there now
            self.drained = True
            return False
        if n == 0:
            raise OSError("connection closed by the broker")
        return True

    def _begin(self, b):
        kind = b & 0xf0
        if kind == _PUBLISH:
            if b & 4:                    # we subscribe with QoS 1: QoS 2 (or 3) is wrong
                raise ProtocolError("a PUBLISH with QoS %d" % (b >> 1 & 3))
        elif b != _SUBACK and b != _PINGRESP:
            raise ProtocolError("unexpected packet type 0x%02x" % b)
        self.op = b
        self.deadline = ticks_add(self.clock(), IO_TIMEOUT_S * 1000000)

    def _sized(self):
        self.shift = -1
        n = self.length
        kind = self.op & 0xf0
        if kind == _PUBLISH:
            if n < (4 if self.op & 6 else 2):
                raise ProtocolError("a PUBLISH of %d bytes" % n)
            extra = min(n // _RX_MIN_RATE, _RX_MAX_EXTRA_S)
            if extra:
                self.deadline = ticks_add(self.deadline, extra * 1000000)
        elif n != (2 + self.sub_count if kind == _SUBACK else 0):
            raise ProtocolError("a packet of type 0x%02x with %d bytes" % (self.op, n))

    def _window(self):
        """How many of the next body bytes to read in one go, and where to (self.pos in
        rx, or -1: skip them). A PUBLISH keeps its topic length, the first topic_room
        bytes of its topic, then its packet id and the first payload_room bytes of its
        payload (both at 2 + topic_room); the rest is skipped."""
        got = self.got
        self.pos = got
        if self.op & 0xf0 != _PUBLISH:
            return self.length - got
        if got < 2:
            return 2 - got
        rx = self.rx
        start = 2 + (rx[0] << 8 | rx[1])        # the packet id or the payload
        if start + (2 if self.op & 6 else 0) > self.length:
            raise ProtocolError("a PUBLISH whose topic runs past its end")
        if got < start:
            kept = min(start, 2 + self.topic_room)
            if got < kept:
                return kept - got
            self.pos = -1
            return start - got
        off = got - start
        kept = min(self.length - start, 2 + self.payload_room)
        if off < kept:
            self.pos = 2 + self.topic_room + off
            return kept - off
        self.pos = -1
        return self.length - got

    def _publish_in(self, op, length):
        """A complete PUBLISH: to the callback, or to on_skipped when it was too big."""
        rx, view = self.rx, self.rx_view
        topic_len = rx[0] << 8 | rx[1]
        at = 2 + self.topic_room
        size = length - 2 - topic_len
        if op & 6:
            pid = rx[at] << 8 | rx[at + 1]
            at += 2
            size -= 2
        topic = bytes(view[2:2 + min(topic_len, self.topic_room)])
        payload = bytes(view[at:at + min(size, self.payload_room)])
        if topic_len > self.topic_room or size > self.payload_room:
            self.on_skipped(topic, topic_len, payload, size)
        else:
            self.cb(topic, payload)
        if op & 6:                       # QoS 1: acknowledge, skipped or not
            ack = self.skip
            ack[0], ack[1], ack[2], ack[3] = 0x40, 2, pid >> 8, pid & 0xff
            self.sock.write(ack, 4)


def heartbeat_s(keepalive, state_interval):
    """(heartbeat period, ping answer deadline) in seconds.

    A ping goes out every heartbeat, at most one keepalive period after the last
    (the broker allows 1.5 periods), and must be answered within the deadline, so a
    dead broker is noticed within keepalive + deadline. One wakeup per keepalive
    period: the periodic state rides on the same wakeups.
    """
    answer = min(3, max(1, keepalive // 4))
    return min(keepalive, state_interval, _MAX_HEARTBEAT_S), answer


class Session:
    def __init__(self, camera, cfg):
        m = cfg["mqtt"]
        self.cam = camera
        self.cfg = m
        device_id = cfg["device_id"]
        self.base = "%s/%s" % (m["prefix"], device_id)
        self._prefix_b = (self.base + "/").encode()
        self.t_state = (self.base + "/state").encode()
        self.t_avail = (self.base + "/availability").encode()
        self.t_error = (self.base + "/error").encode()
        self.t_ha_status = (m["discovery_prefix"] + "/status").encode()
        self.client_id = m["client_id"] or "camagent-" + device_id
        # every command topic is <base>/<word>/<word>, and our own publications are
        # one level deep: <base>/+/+ takes every command (and typo) without their echo.
        # <base>/state shows another agent on our base (instance.py), and brings our
        # own states back: TCP_NODELAY and quick ACKs keep that echo from delaying
        # the commands behind it
        self._topics = [self._prefix_b + b"+/+", self.t_state]
        if m["discovery"]:
            self._topics.append(self.t_ha_status)
        # one receive buffer for the life of the agent: the topics we take, and a
        # payload as big as a state document
        self._topic_room = max(len(self._prefix_b) + _TOPIC_ROOM, len(self.t_ha_status))
        self._rx = bytearray(2 + self._topic_room + 2 + _RX_PAYLOAD)
        self.presets = Presets(camera.state_dir + "/presets.json")
        self.commands = Commands(camera, self.presets, m["move_increment_deg"])
        self.status = Status(cfg["proc_root"])
        self.instance = Instance(device_id, self.base)   # another agent on our base?
        self.discovery = None
        if m["discovery"]:
            self.discovery = Discovery(m["discovery_prefix"], self.base, device_id,
                                       camera.board["model"], VERSION, self.status.mac())
        period, answer = heartbeat_s(m["keepalive"], m["state_interval"])
        self._beat_us = period * 1000000
        self._answer_us = answer * 1000000
        self._beats_per_state = max(1, (m["state_interval"] + period // 2) // period)
        self._started_s = self.status.uptime()
        self._read_status()
        self.connects = 0          # successful connections, for tests and the log
        self.pings = 0             # heartbeats sent, for tests and the idle-cost benchmark
        self._attempts = 0
        self._problem = None
        self._awaited = None       # the packet type _wait_for() waits for, until it comes
        self._publish_gap = MinGap(_PUBLISH_GAP_US)
        self._presets_seen = self.presets.changes
        # held: a snapshot.Relay mid-packet: other publications wait for it
        self.client = self.held = None
        self._close_socket()       # not connected: no socket, no timers
        if camera.majestic is not None:
            from .snapshot import Relay   # only with majestic: no cost without one
            camera.snapshot = Relay(self, camera.majestic, cfg)
        # while disconnected, `due` is the next connection attempt: the first on the
        # first loop pass
        self.due = camera.now()
        camera.on_change = self._changed
        camera.loop.add(self)

    # --- loop device ----------------------------------------------------------------
    def tick(self, now):
        if not self.connected:
            if ticks_diff(now, self.due) >= 0:
                if self.cam.busy:
                    # connect() blocks for up to IO_TIMEOUT_S: never while the motors step
                    # or an IR-cut coil is energised
                    self.due = ticks_add(now, _BUSY_RETRY_US)
                else:
                    self._connect(now)
            self._schedule()
            return
        client = self.client
        if client.deadline is not None and ticks_diff(now, client.deadline) >= 0:
            self._lost("a packet from the broker did not arrive whole in time (%d of %d "
                       "bytes)" % (client.got, client.length))
            return
        if not client.drained:
            self._on_readable()   # a wakeup's read budget ran out: go on with the rest
            if not self.connected:
                return
        if self._answer_by is not None and ticks_diff(now, self._answer_by) >= 0:
            self._lost("no answer to ping within %d s" % (self._answer_us // 1000000))
            return
        if self._healthy_at is not None and ticks_diff(now, self._healthy_at) >= 0:
            self._healthy_at = None
            self._attempts = 0   # this broker works: the next trouble starts from 1 s
        if self.held is not None:   # a snapshot is mid-packet: pings and state wait
            self.due = ticks_add(now, _BUSY_RETRY_US)
            return
        if self._publish_at is not None and ticks_diff(now, self._publish_at) >= 0:
            self._publish_state(now)
        if self.connected and ticks_diff(now, self._beat_at) >= 0:
            self._heartbeat(now)
        self._schedule()

    def _schedule(self):
        if not self.connected:
            return   # due is the next connection attempt
        if not self.client.drained:
            self.due = self.cam.now()
            return
        due = self._beat_at
        for t in (self._answer_by, self._publish_at, self.client.deadline, self._healthy_at):
            if t is not None and ticks_diff(t, due) < 0:
                due = t
        self.due = due

    def _changed(self):
        """Camera.changed() hook: publish soon, at most every PUBLISH_GAP_US."""
        if self._publish_at is not None or not self.connected:
            return
        now = self.cam.now()
        self._publish_at = ticks_add(now, self._publish_gap.wait(now))
        self._schedule()

    # --- connection -----------------------------------------------------------------
    def _connect(self, now):
        m = self.cfg
        tls = m["tls"]
        client = _Client(self._rx, self._topic_room, self.cam.now, self.client_id.encode(),
                         m["host"], m["port"],
                         m["username"].encode() if m["username"] else None,
                         m["password"].encode(), m["keepalive"], tls["enabled"],
                         _ssl_params(tls, m["host"]) if tls["enabled"] else {})
        client.set_callback(self._on_message)
        client.on_skipped = self._on_skipped
        client.set_last_will(self.t_avail, b"offline", True, 1)   # retained, QoS 1
        self.client = client
        try:
            client.connect(True)   # clean session: commands queued while away are dropped
            # the session is live from here: commands that arrive while subscribing
            # are handled and answered normally
            self.connected = True
            self._beat_at = ticks_add(now, self._beat_us)   # next heartbeat (ping, maybe state)
            self._beats = 0
            self._poller = select.poll()
            self._poller.register(client.sock, select.POLLIN)
            client.subscribe_all(self._topics)
            if not self._wait_for(_SUBACK, IO_TIMEOUT_S * 1000):
                if not self.connected:
                    return   # lost while subscribing: logged and retried already
                raise OSError("no SUBACK within %d s" % IO_TIMEOUT_S)
        except Exception as e:
            self._close_socket()
            self._retry(now, _describe(e))
            return
        self.connects += 1
        # the backoff resets only once this connection has proved itself: a broker
        # that accepts and then misbehaves is retried ever more slowly
        self._healthy_at = ticks_add(now, HEALTHY_S * 1000000)
        self._problem = None
        self._log("connected to %s:%d as %s" % (m["host"], m["port"], self.client_id))
        self.cam.loop.watch(client.sock, self._on_readable)
        self._publish(self.t_avail, b"online", True)
        self._read_status()
        self._publish_discovery()
        self._publish_state(now)

    def _retry(self, now, why):
        """Schedule the next attempt: capped exponential backoff, each delay drawn
        between half and the whole of 1, 2, 4 ... BACKOFF_MAX_S seconds."""
        delay_us = min(BACKOFF_MAX_S, _BACKOFF_MIN_S << min(self._attempts, 16)) * 1000000
        half = delay_us // 2
        delay_us = half + (half * _jitter16(now) >> 16)
        self._attempts += 1
        self.due = ticks_add(now, delay_us)
        if why != self._problem:   # log a change of trouble, not every attempt
            self._problem = why
            self._log("broker %s:%d: %s; retrying with backoff (up to %d s)"
                      % (self.cfg["host"], self.cfg["port"], why, BACKOFF_MAX_S))

    def _lost(self, why):
        """The broker is gone: drop the socket and reconnect later. The loop, and any
        move in progress, carry on without it."""
        if not self.connected:
            return   # already handled (a write and then a read can both fail)
        self._close_socket()
        self._log("connection lost: %s" % why)
        self._problem = why
        self._retry(self.cam.now(), why)
        self._schedule()

    def _close_socket(self):
        client, self.client = self.client, None
        self.connected = False
        if self.held is not None:   # a snapshot mid-packet: give umqtt its socket back
            self.held.abandon(client)
            self.held = None
        self._answer_by = None     # outstanding ping must be answered by then
        self._publish_at = None    # coalesced state publication
        self._healthy_at = None    # the connection has lasted long enough: reset the backoff
        self._poller = None
        if client is None or client.sock is None:
            return
        self.cam.loop.unwatch(client.sock)
        try:
            client.sock.close()
        except Exception:
            pass

    def close(self):
        """Clean shutdown: say offline ourselves (a clean DISCONNECT cancels the Will)."""
        if self.connected:
            try:
                self.client.publish(self.t_avail, b"offline", True)
                self.client.disconnect()
            except Exception:
                pass
        self._close_socket()
        self.cam.loop.remove(self)
        if self.cam.on_change == self._changed:
            self.cam.on_change = None

    # --- keepalive ------------------------------------------------------------------
    def _heartbeat(self, now):
        self._beat_at = ticks_add(now, self._beat_us)
        self._publish_gap.wait(now)   # a look per heartbeat forgets the last publication in time
        self._beats += 1
        if self._beats >= self._beats_per_state:
            self._beats = 0
            if self._read_status():
                self._publish_discovery()   # the device's URLs follow a new address
            self._publish_state(now)
            if not self.connected:
                return
        try:
            self.client.ping()
            self.pings += 1
        except Exception as e:
            self._lost("ping failed: %s" % _describe(e))
            return
        self._answer_by = ticks_add(now, self._answer_us)
        if not self.cam.busy:
            # idle: take the answer in this same wakeup instead of a second one (a
            # command may come first)
            self._wait_for(_PINGRESP, _PING_WAIT_MS)

    def _wait_for(self, kind, wait_ms):
        """Read packets for up to wait_ms until one of type `kind` has come; True if it has."""
        self._awaited = kind
        end = ticks_add(ticks_ms(), wait_ms)
        while self.connected and self._awaited:
            for _ in ipoll(self._poller, max(ticks_diff(end, ticks_ms()), 0)):
                break
            else:
                break        # nothing more within wait_ms
            self._on_readable()
        came = not self._awaited
        self._awaited = None     # a late answer is an ordinary packet
        return came

    # --- receiving ------------------------------------------------------------------
    def _on_readable(self):
        """The socket has data: take what is there now, at most MAX_PACKETS_PER_WAKEUP
        packets, without waiting for the rest of a packet."""
        count = 0
        client = self.client
        reads = _RX_READS_BUSY if self.cam.busy else _RX_READS_PER_WAKEUP
        while self.connected and count < _MAX_PACKETS_PER_WAKEUP:
            try:
                kind = client.wait_msg(reads)
            except Exception as e:
                self._lost("read failed: %s" % _describe(e))
                return
            if kind is None:
                if client.op:
                    self._answer_by = None   # a packet is coming: the broker is alive
                break
            self._answer_by = None   # any packet proves the broker alive
            if kind == self._awaited:
                self._awaited = None
            count += 1
        if self.connected:
            client.ack_now()
        if count >= _MAX_PACKETS_PER_WAKEUP:
            client.drained = False   # more may be buffered (TLS): go on at the next tick
        self._schedule()

    def _on_message(self, topic, msg):
        if topic.startswith(self._prefix_b):
            suffix = topic[len(self._prefix_b):]
            if suffix == b"state":   # ours echoed, or another agent's on our base?
                if self.instance.seen(msg):
                    self._log(self.instance.problem)
                    self._changed()
                return
            try:
                name = suffix.decode()
            except UnicodeError:
                name = ""
            try:
                self.commands.handle(name, msg)
            except CommandError as e:
                # the error is the whole answer: the rejected count in the state
                # changes, but goes out with the next state, not as one of its own
                self._publish(self.t_error, error_document(topic, msg, str(e)).encode())
                return
            self.after_command()
        elif topic == self.t_ha_status and msg.strip().lower() == b"online":
            # Home Assistant (re)started: it has lost nothing retained, but may have
            # dropped entities whose config it saw while not ready
            self._publish_discovery()
            self._publish_state(self.cam.now())

    def _on_skipped(self, topic, topic_len, head, size):
        """A message too big to take was skipped unread: answer it, once per delivery."""
        if topic == self.t_state:
            return   # not a state we could read: no agent of ours sent it
        if topic_len > len(topic):
            why = "topic is %d bytes; at most %d accepted" % (topic_len, len(topic))
        else:
            why = "payload is %d bytes; at most %d accepted" % (size, MAX_PAYLOAD)
        if topic.startswith(self._prefix_b):
            self.commands.rejected += 1
        self._publish(self.t_error, error_document(topic, head, why).encode())

    # --- publishing -----------------------------------------------------------------
    def _publish(self, topic, payload, retain=False):
        """A QoS 0 PUBLISH; False when it did not go out. `payload` is bytes, or a tuple
        of bytes pieces written one after the other (the discovery documents: never
        joined into one copy on the heap). The fixed header goes through the client's
        scratch buffer, free between packets."""
        if not self.connected:
            return False
        if isinstance(payload, tuple):
            pieces = payload   # (mid-snapshot, the relay's socket keeps them for later)
        elif self.held is not None:
            self.held.hold(topic, payload, retain)   # a snapshot is mid-packet
            return True
        else:
            pieces = (payload,)
        size = 2 + len(topic)
        for piece in pieces:
            size += len(piece)
        head = self.client.skip
        head[0] = 0x30 | retain
        n = 1
        while True:                    # the remaining length, 7 bits a byte
            head[n] = size & 0x7f | (0x80 if size > 0x7f else 0)
            n += 1
            size >>= 7
            if not size:
                break
        head[n] = len(topic) >> 8
        head[n + 1] = len(topic) & 0xff
        try:
            write = self.client.sock.write
            write(head, n + 2)
            write(topic)
            for piece in pieces:
                if piece:
                    write(piece)
        except Exception as e:
            self._lost("publish failed: %s" % _describe(e))
            return False
        return True

    # for the agent's other publishers (motion): False when it did not go out
    publish = _publish

    def after_command(self):
        """A command ran (from MQTT or the local channel): the state goes out, even when
        nothing changed (clients wait for it), and the preset select when presets did."""
        self._changed()
        if self.presets.changes != self._presets_seen:
            self._presets_seen = self.presets.changes
            if self.discovery:
                topic, doc = self.discovery.preset_document(self.presets.names())
                self._publish(topic, doc, True)

    def _publish_discovery(self):
        if not self.discovery:
            return
        for topic, doc in self.discovery.documents(self.cam.axes, self.presets.names()):
            if not self._publish(topic, doc, True):
                return

    def _read_status(self):
        """The periodic figures and the camera's address; True if the address changed."""
        self._status = self.status.read()
        ip = camera_ip(self.status.proc_root)
        self._status.update(video_urls(ip))
        return self.discovery is not None and self.discovery.set_ip(ip)

    def state_document(self):
        doc = self.cam.hardware_state()
        for problem in (self.presets.load_error, self.instance.problem):
            if problem:
                doc["problems"].append(problem)
        self.instance.stamp(doc)
        presets = {}
        for name, pos in self.presets.items.items():
            presets[name] = {"pan": self.cam.pan.steps_to_deg(pos[0]),
                             "tilt": self.cam.tilt.steps_to_deg(pos[1])}
        doc["presets"] = presets
        # the preset the camera is at, for HA's preset select; None once it moves away
        doc["preset"] = None if self.cam.moving else \
            self.presets.at(self.cam.pan.steps, self.cam.tilt.steps)
        doc["light"] = self.cam.ir.light
        up = self.status.uptime()
        doc["uptime"] = up - self._started_s if up is not None and self._started_s is not None \
            else None
        doc["version"] = VERSION
        doc["commands"] = {"accepted": self.commands.accepted,
                           "rejected": self.commands.rejected}
        doc.update(self._status)
        return doc

    def publish_now(self):
        """Faults not yet reported, then the state, at once (the agent is stopping)."""
        self._publish_state(self.cam.now())

    def _report_faults(self):
        """Each device fault once on <base>/error, also those found before connecting."""
        pending = self.cam.unreported
        while pending:
            device, why = pending[0]
            doc = error_document(self._prefix_b + device.encode(), b"", why)
            if not self._publish(self.t_error, doc.encode()):
                return
            pending.pop(0)

    def _publish_state(self, now):
        self._publish_at = None
        self._report_faults()
        if self._publish(self.t_state, json.dumps(self.state_document()).encode(), True):
            self._publish_gap.mark(now)
            if self.cam.moving:
                # steps change the state without the hook: keep publishing while moving
                self._publish_at = ticks_add(now, _PUBLISH_GAP_US)

    def _log(self, text):
        print("camagent: mqtt: " + text, file=sys.stderr)


def _jitter16(now):
    """0..65535, random so that cameras restarted together do not retry in step."""
    try:
        r = os.urandom(2)
        return r[0] << 8 | r[1]
    except OSError:   # no entropy device: the microsecond clock is random enough here
        return (now ^ (now >> 16)) & 0xffff


def _describe(e):
    if isinstance(e, ProtocolError):
        return "protocol error: %s" % e
    if isinstance(e, (AssertionError, IndexError)):   # umqtt's CONNACK check
        return "no valid CONNACK: is it an MQTT broker?"
    if isinstance(e, MQTTException) and e.args:
        code = e.args[0]
        return "broker refused the connection: %s" % _CONNACK.get(code, "code %s" % code)
    text = str(e)
    return type(e).__name__ + (": " + text if text else "")


def _ssl_params(tls, host):
    """wrap_socket() keywords: MicroPython's ssl takes data, CPython's takes file names."""
    params = {}
    if IS_MICROPYTHON:
        params["server_hostname"] = host
        if tls["ca_file"]:
            params["cadata"] = _read(tls["ca_file"])   # PEM or DER
            params["cert_reqs"] = 2                     # ssl.CERT_REQUIRED
        if tls["cert_file"]:
            params["cert"] = _read(tls["cert_file"])
            params["key"] = _read(tls["key_file"])
    else:
        if tls["ca_file"]:
            params["ca_certs"] = tls["ca_file"]
            params["cert_reqs"] = 2
        if tls["cert_file"]:
            params["certfile"] = tls["cert_file"]
            params["keyfile"] = tls["key_file"] or None
    return params


def _read(path):
    with open(path, "rb") as f:
        return f.read()
