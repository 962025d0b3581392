"""The agent's MQTT session: umqtt.simple plus what it leaves to the application.

umqtt.simple speaks the protocol; this module adds a timeout on every socket
operation, keepalive pings, noticing a dead broker, reconnecting with capped
exponential backoff and jitter, resubscribing, and republishing availability,
discovery and state. It is a device on the agent's loop: it reads only when the
socket has data, never (re)connects while a motor moves, and an idle connection
costs one wakeup per heartbeat, in which it pings and reads the answer.
"""
import json
import os
import select
import sys

from umqtt.simple import MQTTClient, MQTTException

from . import VERSION
from .commands import CommandError, Commands, error_document
from .compat import IS_MICROPYTHON, MinGap, ipoll, ticks_add, ticks_diff, ticks_ms
from .discovery import Discovery, camera_ip, video_urls
from .instance import Instance
from .presets import Presets
from .status import Status

IO_TIMEOUT_S = 5            # connect, TLS handshake, one packet: a stalled broker costs no more
PUBLISH_GAP_US = 200000     # state at most ~5 times a second while something changes
PING_WAIT_MS = 50           # idle: wait this long for the ping answer inside the same wakeup
MAX_HEARTBEAT_S = 300       # ticks_add() reaches ~537 s ahead; longer periods are split
BACKOFF_MIN_S = 1
BACKOFF_MAX_S = 60
BUSY_RETRY_US = 250000      # no (blocking) reconnect while a motor moves: look again soon
MAX_PACKETS_PER_WAKEUP = 20  # a flood of commands must not starve the motors
_OWN = (b"state", b"availability", b"error")   # our own topics, echoed by <base>/#
_CONNACK = {1: "unsupported protocol version", 2: "client id rejected",
            3: "broker unavailable", 4: "bad username or password", 5: "not authorised"}


class _Client(MQTTClient):
    """umqtt.simple's client with IO_TIMEOUT_S on every socket it opens.

    umqtt assigns `self.sock` for the TCP socket and again for the TLS wrapper;
    catching the assignment puts the timeout in place before connect() and the
    TLS handshake, which umqtt runs with no timeout of its own.
    """

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
        self._sock = s


def heartbeat_s(keepalive, state_interval):
    """(heartbeat period, ping answer deadline) in seconds.

    A ping goes out every heartbeat and must be answered within the deadline;
    heartbeat + deadline <= keepalive, so a dead broker is noticed within one
    keepalive period. The periodic state rides on the same wakeups.
    """
    answer = min(3, max(1, keepalive // 4))
    period = min(keepalive - answer, state_interval, MAX_HEARTBEAT_S)
    return max(1, period), answer


class Session:
    def __init__(self, camera, cfg):
        m = cfg["mqtt"]
        self.cam = camera
        self.cfg = m
        self.device_id = cfg["device_id"]
        self.base = "%s/%s" % (m["prefix"], self.device_id)
        self._prefix_b = (self.base + "/").encode()
        self.t_state = (self.base + "/state").encode()
        self.t_avail = (self.base + "/availability").encode()
        self.t_error = (self.base + "/error").encode()
        self.t_ha_status = (m["discovery_prefix"] + "/status").encode()
        self.client_id = m["client_id"] or "camagent-" + self.device_id
        self.presets = Presets(camera.state_dir + "/presets.json")
        self.commands = Commands(camera, self.presets, m["move_increment_deg"])
        self.status = Status(cfg["proc_root"])
        self._proc_root = cfg["proc_root"]
        self.instance = Instance(self.device_id, self.base)   # another agent on our base?
        self.discovery = None
        if m["discovery"]:
            self.discovery = Discovery(m["discovery_prefix"], self.base, self.device_id,
                                       camera.board["model"], VERSION, self.status.mac())
        period, answer = heartbeat_s(m["keepalive"], m["state_interval"])
        self._beat_us = period * 1000000
        self._answer_us = answer * 1000000
        self._beats_per_state = max(1, (m["state_interval"] + period // 2) // period)
        self._beats = 0
        self._started_s = self.status.uptime()
        self._read_status()
        self.client = None
        self.connected = False
        self.connects = 0          # successful connections, for tests and the log
        self.pings = 0             # heartbeats sent, for tests and the idle-cost benchmark
        self._poller = None
        self._attempts = 0
        self._problem = None
        self._beat_at = None       # next heartbeat (ping, maybe periodic state)
        self._answer_by = None     # outstanding ping must be answered by then
        self._pong = False         # the last packet read was the ping's answer
        self._delivered = False    # the last packet read was a message for us
        self._publish_at = None    # coalesced state publication
        self._publish_gap = MinGap(PUBLISH_GAP_US)
        self._head = bytearray(7)   # a PUBLISH's fixed header and topic length
        self._presets_seen = self.presets.changes
        self._retry_at = camera.now()   # first connection attempt on the first loop pass
        self.due = self._retry_at
        camera.on_change = self._changed
        camera.loop.add(self)

    # --- loop device ----------------------------------------------------------------
    def tick(self, now):
        if not self.connected:
            if ticks_diff(now, self._retry_at) >= 0:
                if self.cam.busy:
                    # connect() blocks for up to IO_TIMEOUT_S: never while the motors step
                    # or an IR-cut coil is energised
                    self._retry_at = ticks_add(now, BUSY_RETRY_US)
                else:
                    self._connect(now)
            self._schedule()
            return
        if self._answer_by is not None and ticks_diff(now, self._answer_by) >= 0:
            self._lost("no answer to ping within %d s" % (self._answer_us // 1000000))
            return
        if self._publish_at is not None and ticks_diff(now, self._publish_at) >= 0:
            self._publish_state(now)
        if self.connected and ticks_diff(now, self._beat_at) >= 0:
            self._heartbeat(now)
        self._schedule()

    def _schedule(self):
        if not self.connected:
            self.due = self._retry_at
            return
        due = self._beat_at
        for t in (self._answer_by, self._publish_at):
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
        client = _Client(self.client_id.encode(), m["host"], m["port"],
                         m["username"].encode() if m["username"] else None,
                         m["password"].encode(), m["keepalive"], tls["enabled"],
                         _ssl_params(tls, m["host"]) if tls["enabled"] else {})
        client.set_callback(self._on_message)
        client.set_last_will(self.t_avail, b"offline", retain=True, qos=1)
        self.client = client
        try:
            client.connect(True)   # clean session: commands queued while away are dropped
            # the session is live from here: commands that arrive while subscribing
            # are handled and answered normally
            self.connected = True
            self._answer_by = None
            self._beat_at = ticks_add(now, self._beat_us)
            self._beats = 0
            client.subscribe(self._prefix_b + b"#", 1)
            if self.discovery:
                client.subscribe(self.t_ha_status, 1)
        except Exception as e:
            self._close_socket()
            self._retry(now, _describe(e))
            return
        self.connects += 1
        self._attempts = 0
        self._problem = None
        self._log("connected to %s:%d as %s" % (m["host"], m["port"], self.client_id))
        self.cam.loop.watch(client.sock, self._on_readable)
        self._poller = select.poll()
        self._poller.register(client.sock, select.POLLIN)
        self._publish(self.t_avail, b"online", True)
        self._read_status()
        self._publish_discovery()
        self._publish_state(now)

    def _retry(self, now, why):
        """Schedule the next attempt: capped exponential backoff, each delay drawn
        between half and the whole of 1, 2, 4 ... BACKOFF_MAX_S seconds."""
        delay_us = min(BACKOFF_MAX_S, BACKOFF_MIN_S << min(self._attempts, 16)) * 1000000
        half = delay_us // 2
        delay_us = half + (half * _jitter16(now) >> 16)
        self._attempts += 1
        self._retry_at = ticks_add(now, delay_us)
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
        self._answer_by = None
        self._publish_at = None
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
        if getattr(self.cam, "on_change", None) == self._changed:
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
        self._pong = False
        if not self.cam.busy:
            # idle: take the answer in this same wakeup instead of a second one (our
            # own periodic state, echoed back by <base>/#, may come first)
            end = ticks_add(ticks_ms(), PING_WAIT_MS)
            while self.connected and not self._pong:
                left = ticks_diff(end, ticks_ms())
                ready = False
                for obj, event in ipoll(self._poller, max(left, 0)):
                    ready = True
                    break
                if not ready:
                    break
                self._on_readable()

    # --- receiving ------------------------------------------------------------------
    def _on_readable(self):
        """The socket has data: handle the packets already there, then return."""
        count = 0
        while self.connected and count < MAX_PACKETS_PER_WAKEUP:
            self._delivered = False
            try:
                op = self.client.wait_msg()
            except Exception as e:
                self._lost("read failed: %s" % _describe(e))
                return
            if op is not None:   # umqtt left an unexpected packet half-read
                self._lost("unexpected packet type 0x%02x from broker" % op)
                return
            self._pong = not self._delivered   # umqtt returns None for both kinds
            self._answer_by = None   # any packet proves the broker alive
            count += 1
            if not self._more_buffered():
                break
        self._schedule()

    def _more_buffered(self):
        if not self.connected:
            return False
        pending = getattr(self.client.sock, "pending", None)   # CPython TLS buffers
        if pending is not None and pending():
            return True
        for obj, event in ipoll(self._poller, 0):
            return True
        return False

    def _on_message(self, topic, msg):
        self._delivered = True
        if topic.startswith(self._prefix_b):
            suffix = topic[len(self._prefix_b):]
            if suffix in _OWN:
                if suffix == b"state" and self.instance.seen(msg):
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
            self._changed()   # even a command that changed nothing: clients wait for its state
            if self.presets.changes != self._presets_seen:
                self._presets_seen = self.presets.changes
                if self.discovery:
                    topic, doc = self.discovery.preset_document(self.presets.names())
                    self._publish_pieces(topic, doc)
        elif topic == self.t_ha_status and msg.strip().lower() == b"online":
            # Home Assistant (re)started: it has lost nothing retained, but may have
            # dropped entities whose config it saw while not ready
            self._publish_discovery()
            self._publish_state(self.cam.now())

    # --- publishing -----------------------------------------------------------------
    def _publish(self, topic, payload, retain=False):
        if not self.connected:
            return False
        try:
            self.client.publish(topic, payload, retain)
        except Exception as e:
            self._lost("publish failed: %s" % _describe(e))
            return False
        return True

    def publish(self, topic, payload, retain=False):
        """For the agent's other publishers (motion): False when it did not go out."""
        return self._publish(topic, payload, retain)

    def after_local_command(self):
        """A command from the local channel (ONVIF) ran: publish as after an MQTT one."""
        self._changed()
        if self.presets.changes != self._presets_seen:
            self._presets_seen = self.presets.changes
            if self.discovery:
                topic, doc = self.discovery.preset_document(self.presets.names())
                self._publish_pieces(topic, doc)

    def _publish_pieces(self, topic, pieces):
        """A retained QoS 0 PUBLISH written piece by piece (the discovery documents):
        the payload is never joined into one copy on the heap, and the fixed header
        goes through one reused buffer."""
        if not self.connected:
            return False
        size = 2 + len(topic)
        for piece in pieces:
            size += len(piece)
        head = self._head
        head[0] = 0x31                 # PUBLISH, QoS 0, retained
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

    def _publish_discovery(self):
        if not self.discovery:
            return
        for topic, doc in self.discovery.documents(self.cam.axes, self.presets.names()):
            if not self._publish_pieces(topic, doc):
                return

    def _read_status(self):
        """The periodic figures and the camera's address; True if the address changed."""
        self._status = self.status.read()
        ip = camera_ip(self._proc_root)
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
                self._publish_at = ticks_add(now, PUBLISH_GAP_US)

    def _log(self, text):
        print("camagent: mqtt: " + text, file=sys.stderr)


def _jitter16(now):
    """0..65535, random so that cameras restarted together do not retry in step."""
    try:
        return int.from_bytes(os.urandom(2), "big")
    except OSError:   # no entropy device: the microsecond clock is random enough here
        return (now ^ (now >> 16)) & 0xffff


def _describe(e):
    if isinstance(e, MQTTException) and e.args:
        code = e.args[0]
        return "broker refused the connection: %s" % _CONNACK.get(code, "code %s" % code)
    text = str(e)
    return "%s%s" % (type(e).__name__, ": " + text if text else "")


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
