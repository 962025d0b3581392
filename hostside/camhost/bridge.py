"""The MQTT side of every camhost bridge: another camera on MQTT in the agent's style.

A bridge is one host process between a camera that only speaks its own protocol and
the broker. This module is the part all of them share, written once:

  <prefix>/<device_id>/availability  "online" / "offline", retained; the Last Will says
                                     "offline" if the bridge dies, set_available(False)
                                     says it when the camera goes away
  <prefix>/<device_id>/state         the camera's state document, retained
  <prefix>/<device_id>/error         one JSON document per rejected command, in the
                                     agent's shape: {"topic", "payload", "error"}
  <prefix>/<device_id>/<command>     commands, registered with add_command()
  <discovery_prefix>/<component>/<node>/<object_id>/config
                                     Home Assistant discovery, retained, all on one device

paho's network thread only queues what arrives; commands and the camera's poll run on
the thread that calls run_forever(), so camera I/O is never concurrent and a slow camera
never stalls the MQTT keepalive. paho reconnects with backoff (RECONNECT_MIN_S up to
RECONNECT_MAX_S); every (re)connection resubscribes and republishes availability,
discovery and the last state, so a broker restarted without persistence is whole again.
"""
import json
import queue
import re
import socket
import ssl
import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt

from . import __version__
from .ctl import preview
from .errors import CamhostError
from .mqttclient import CONNECT_TIMEOUT_S, BrokerURL, connect_failure, open_connection

RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30
KEEPALIVE_S = 30
MAX_PAYLOAD = 512              # command payloads are words and numbers
_OWN = ("state", "availability", "error")
ORIGIN = {"name": "camhost", "sw_version": __version__}


class BridgeError(CamhostError):
    """A rejected command: str(e) is the sentence published on <base>/error."""


def node_id(device_id):
    """The device id as HA accepts it in a discovery topic: [a-zA-Z0-9_-]."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", device_id)


def _no_delay(client, userdata, sock):
    """A command's PUBACK and the state after it are two small writes: without this,
    Nagle holds the state until the broker's delayed ACK (about 40 ms)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass    # not a TCP socket (a proxy, a test double): only slower


class Bridge:
    def __init__(self, broker_url, device_id, device_info, prefix="camagent",
                 discovery_prefix="homeassistant", log=None, client_name="camhost-bridge"):
        if not re.match(r"^[a-zA-Z0-9_.-]+$", device_id):
            raise CamhostError("device id %r: use letters, digits, '.', '_' and '-' only "
                               "(it is part of MQTT topics)" % device_id, exit_code=2)
        self.broker = broker_url if isinstance(broker_url, BrokerURL) else BrokerURL(broker_url)
        self.device_id = device_id
        self.base = "%s/%s" % (prefix, device_id)
        self.discovery_prefix = discovery_prefix
        self.node = "camhost_" + node_id(device_id)
        self.device = {"identifiers": [self.node], "name": device_id}
        self.device.update(device_info)
        self.log = log or (lambda msg: sys.stderr.write("camhost bridge: %s\n" % msg))
        self.accepted = 0
        self.rejected = 0
        self.connects = 0
        self._commands = {}          # suffix -> handler(payload bytes)
        self._entities = []          # (component, object_id, doc)
        self._state = None           # the last state document, as published
        self._available = False
        self._inbox = queue.Queue()  # ("command", topic, payload) / ("discovery", None, None)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._first = threading.Event()
        self._subscribed = threading.Event()
        self._sub_mid = None
        self._first_rc = None
        self._dropped = None
        self.client = self._client(client_name)

    # --- setup ----------------------------------------------------------------------
    def add_command(self, suffix, handler):
        """handler(payload bytes) runs on run_forever's thread; raising BridgeError
        rejects the command with that sentence on <base>/error."""
        self._commands[suffix] = handler

    def add_entity(self, component, object_id, doc):
        """One HA entity on this device; doc may use "~" for the base topic."""
        self._entities.append((component, object_id, doc))

    def update_device(self, **info):
        """New device facts (a firmware version learnt later): discovery goes out again."""
        if all(self.device.get(k) == v for k, v in info.items()):
            return
        self.device.update(info)
        with self._lock:
            self._publish_discovery()

    def discovery_documents(self):
        for component, object_id, doc in self._entities:
            full = {"~": self.base, "unique_id": "%s_%s" % (self.node, object_id),
                    "availability_topic": "~/availability", "device": self.device,
                    "origin": ORIGIN}
            full.update(doc)
            yield ("%s/%s/%s/%s/config" % (self.discovery_prefix, component, self.node,
                                           object_id), json.dumps(full))

    def _client(self, client_name):
        b = self.broker
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id="%s-%s" % (client_name, uuid.uuid4().hex[:8]))
        if b.username:
            client.username_pw_set(b.username, b.password)
        if b.tls:
            try:
                client.tls_set(ca_certs=b.ca, certfile=b.cert, keyfile=b.key,
                               cert_reqs=ssl.CERT_REQUIRED)
            except (OSError, ssl.SSLError) as e:
                raise CamhostError("TLS setup for %s failed: %s" % (b, e))
        client.will_set(self.base + "/availability", b"offline", qos=1, retain=True)
        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        client.on_socket_open = _no_delay
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    # --- the session ------------------------------------------------------------------
    def connect(self):
        """The first connection must come up and subscribe (a wrong URL or password is
        an error, exit code 4); after that paho reconnects for as long as the bridge runs."""
        b = self.broker
        open_connection(self.client, b, KEEPALIVE_S)
        self.client.loop_start()
        if not self._first.wait(CONNECT_TIMEOUT_S) or self._first_rc != 0:
            rc, dropped = self._first_rc, self._dropped
            self.client.disconnect()
            self.client.loop_stop()
            raise CamhostError(connect_failure(b, rc, dropped), exit_code=4)
        # commands published once connect() has returned must be heard
        if not self._subscribed.wait(CONNECT_TIMEOUT_S):
            self.client.disconnect()
            self.client.loop_stop()
            raise CamhostError("the MQTT broker at %s did not confirm the subscription to %s/# "
                               "within %d s" % (b, self.base, CONNECT_TIMEOUT_S), exit_code=4)
        return self

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        rc = reason_code.value if hasattr(reason_code, "value") else reason_code
        if not self._first.is_set():
            self._first_rc = rc
            self._first.set()
        if rc != 0:
            self.log("the broker at %s refused the connection (reason %s)" % (self.broker, rc))
            return
        self.connects += 1
        if self.connects > 1:
            self.log("reconnected to %s" % self.broker)
        self._sub_mid = client.subscribe([(self.base + "/#", 1),
                                          (self.discovery_prefix + "/status", 1)])[1]
        # paho's thread: queue only, never wait here
        with self._lock:
            client.publish(self.base + "/availability",
                           b"online" if self._available else b"offline", qos=1, retain=True)
            self._publish_discovery()
            if self._state is not None:
                client.publish(self.base + "/state", self._state, qos=1, retain=True)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        if mid == self._sub_mid:
            self._subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        if not self._first.is_set():
            self._dropped = str(reason_code)
            self._first.set()
        elif not self._stop.is_set():
            self.log("lost the broker at %s (%s); reconnecting" % (self.broker, reason_code))

    def _on_message(self, client, userdata, msg):
        if msg.topic == self.discovery_prefix + "/status":
            if msg.payload.strip().lower() == b"online":
                self._inbox.put(("discovery", None, None))
            return
        suffix = msg.topic[len(self.base) + 1:]
        if suffix in _OWN or msg.retain:
            return   # our own documents, and retained leftovers are not commands
        self._inbox.put(("command", msg.topic, msg.payload))

    def _publish_discovery(self):
        for topic, payload in self.discovery_documents():
            self.client.publish(topic, payload, qos=1, retain=True)

    # --- publishing -------------------------------------------------------------------
    def publish(self, topic_suffix, payload, retain=False):
        """Queued for the broker; while disconnected paho keeps it for the reconnect."""
        if isinstance(payload, str):
            payload = payload.encode()
        self.client.publish("%s/%s" % (self.base, topic_suffix), payload, qos=1, retain=retain)

    def publish_state(self, doc):
        """Retained; the same document again is not republished."""
        text = json.dumps(doc, sort_keys=True)
        with self._lock:
            if text == self._state:
                return False
            self._state = text
            self.client.publish(self.base + "/state", text, qos=1, retain=True)
        return True

    def publish_error(self, topic, payload, message):
        doc = json.dumps({"topic": preview(topic.encode(), 200), "payload": preview(payload),
                          "error": message})
        self.client.publish(self.base + "/error", doc, qos=1)

    def set_available(self, available):
        """The camera side: True while the camera answers, False when it has gone."""
        with self._lock:
            changed = available != self._available
            self._available = available
            if changed:
                self.client.publish(self.base + "/availability",
                                    b"online" if available else b"offline", qos=1, retain=True)
        return changed

    @property
    def available(self):
        return self._available

    # --- commands -----------------------------------------------------------------------
    def dispatch(self, topic, payload):
        """Run one command; every rejection is answered on <base>/error."""
        suffix = topic[len(self.base) + 1:]
        try:
            if len(payload) > MAX_PAYLOAD:
                raise BridgeError("payload is %d bytes; at most %d accepted"
                                  % (len(payload), MAX_PAYLOAD))
            handler = self._commands.get(suffix)
            if handler is None:
                raise BridgeError("unknown command topic; accepted: %s"
                                  % ", ".join(sorted(self._commands)))
            handler(payload)
        except BridgeError as e:
            self.rejected += 1
            self.publish_error(topic, payload, str(e))
            return False
        except CamhostError as e:       # the camera failed it: still the user's answer
            self.rejected += 1
            self.publish_error(topic, payload, "the camera did not do it: %s" % e)
            return False
        except Exception as e:          # a bug: answered and logged, the bridge stays up
            self.rejected += 1
            self.log("%s failed: %r" % (topic, e))
            self.publish_error(topic, payload, "the bridge failed on this command: %r" % e)
            return False
        self.accepted += 1
        return True

    def command_counts(self):
        return {"accepted": self.accepted, "rejected": self.rejected}

    def run_forever(self, poll=None, interval=5.0, after_command=None):
        """Handle commands as they come and call poll() every `interval` seconds (and
        once at once), until stop(). poll() talks to the camera and publishes;
        after_command() publishes a command's effect at once (clients wait for it)."""
        next_poll = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if poll is not None and now >= next_poll:
                try:
                    poll()
                except Exception as e:   # a bug in the camera side: logged, not fatal
                    self.log("the camera poll failed: %r" % e)
                next_poll = time.monotonic() + interval
            wait = max(0.0, min(next_poll - time.monotonic(), 0.5)) if poll else 0.5
            try:
                kind, topic, payload = self._inbox.get(timeout=wait)
            except queue.Empty:
                continue
            if kind == "discovery":
                with self._lock:
                    self._publish_discovery()
                    if self._state is not None:
                        self.client.publish(self.base + "/state", self._state, qos=1,
                                            retain=True)
            else:
                self.dispatch(topic, payload)
                if after_command is not None:
                    after_command()

    def stop(self):
        self._stop.set()

    def close(self):
        """Say offline ourselves (a clean DISCONNECT does not fire the Will), then leave."""
        self._stop.set()
        if self.client.is_connected():
            info = self.client.publish(self.base + "/availability", b"offline", qos=1,
                                       retain=True)
            try:
                info.wait_for_publish(2)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()
