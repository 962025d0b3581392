"""paho-mqtt plumbing for camhost: broker URLs, and a client that records what arrives.

Broker URL: mqtt://[user[:password]@]host[:port] or mqtts://... (TLS, default port
8883) with optional ?ca=FILE&cert=FILE&key=FILE. The CAMHOST_BROKER environment
variable supplies the default, else mqtt://127.0.0.1:1883.
"""
import os
import ssl
import threading
import time
import uuid
from urllib.parse import parse_qs, unquote, urlsplit

import paho.mqtt.client as mqtt

from .errors import CamhostError

DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
BROKER_ENV = "CAMHOST_BROKER"
CONNECT_TIMEOUT_S = 10


class BrokerURL:
    def __init__(self, url):
        parts = urlsplit(url if "://" in url else "mqtt://" + url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise CamhostError("broker URL %r: use mqtt://host[:port] or mqtts://host[:port]" % url,
                               exit_code=2)
        self.url = url
        self.tls = parts.scheme == "mqtts"
        self.host = parts.hostname or "127.0.0.1"
        try:
            self.port = parts.port or (8883 if self.tls else 1883)
        except ValueError:
            raise CamhostError("broker URL %r: the port must be a number 1-65535" % url,
                               exit_code=2)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        query = parse_qs(parts.query)
        self.ca = query.get("ca", [None])[0]
        self.cert = query.get("cert", [None])[0]
        self.key = query.get("key", [None])[0]

    def __str__(self):
        return "%s://%s:%d" % ("mqtts" if self.tls else "mqtt", self.host, self.port)


def default_broker():
    return os.environ.get(BROKER_ENV) or DEFAULT_BROKER


# CONNACK codes as paho reports them (MQTT 5 numbering; 3.1.1's 4 and 5 map to 134, 135)
_REFUSALS = {
    128: "refused the connection for an unspecified reason",
    129: "did not accept the connection request (malformed)",
    132: "does not speak this MQTT version",
    133: "refused this client id",
    134: "rejected the user name or password: check them in the broker URL "
         "(mqtt://user:password@host)",
    # mosquitto answers 135 for a wrong password too (MQTT 3.1.1 has no finer code)
    135: "refused this login: a wrong user name or password, or a user that may not "
         "connect; check mqtt://user:password@host against the broker's password file",
    136: "is unavailable (it said so)",
    137: "is busy (it said so)",
    138: "has banned this client",
}


def open_connection(client, broker, keepalive):
    """paho's connect(), with each way it fails before MQTT starts as a sentence the user
    can act on (exit code 4); what the broker answers is connect_failure's."""
    try:
        client.connect(broker.host, broker.port, keepalive=keepalive)
    except ConnectionRefusedError:
        raise CamhostError("nothing is listening at %s: start the broker or pass "
                           "--broker URL" % broker, exit_code=4)
    except ssl.SSLError as e:
        raise CamhostError("TLS with %s failed (%s): check mqtts:// against the port, "
                           "and ?ca= for the broker's certificate" % (broker, e), exit_code=4)
    except OSError as e:
        raise CamhostError("cannot reach the MQTT broker at %s (%s); start it or pass "
                           "--broker URL" % (broker, e), exit_code=4)


def connect_failure(broker, rc, dropped):
    """The sentence for a connection that did not come up, one per cause."""
    if dropped is not None and rc is None:
        return ("%s is not an MQTT broker, or not one on this port: it closed the "
                "connection instead of answering (%s); is it an HTTP or other server?"
                % (broker, dropped))
    if rc is None:
        return ("%s accepted the connection but sent no MQTT answer in %d s: not an MQTT "
                "broker, a stalled one, or mqtt:// to a TLS port (use mqtts://)"
                % (broker, CONNECT_TIMEOUT_S))
    if rc == 135 and not broker.username:
        return ("the MQTT broker at %s requires a user name and password: "
                "mqtt://user:password@host" % broker)
    return "the MQTT broker at %s %s" % (
        broker, _REFUSALS.get(rc, "refused the connection (reason code %s)" % rc))


class Link:
    """A connected paho client; keeps every message and the last one per topic."""

    def __init__(self, broker, client_name="camhost"):
        self.broker = broker if isinstance(broker, BrokerURL) else BrokerURL(broker)
        self.cond = threading.Condition()
        self.messages = []       # (topic, payload bytes), in arrival order
        self.last = {}           # topic -> payload
        self.listeners = []      # callables (topic, payload), called from paho's thread
        self._connected = threading.Event()
        self._connect_rc = None
        self._subscribed = {}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id="%s-%s" % (client_name, uuid.uuid4().hex[:8]))
        b = self.broker
        if b.username:
            self.client.username_pw_set(b.username, b.password)
        if b.tls:
            try:
                self.client.tls_set(ca_certs=b.ca, certfile=b.cert, keyfile=b.key,
                                    cert_reqs=ssl.CERT_REQUIRED)
            except (OSError, ssl.SSLError) as e:
                raise CamhostError("TLS setup for %s failed: %s" % (b, e))
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect
        self._dropped = None     # the broker closed the connection before answering
        open_connection(self.client, b, 30)
        self.client.loop_start()
        answered = self._connected.wait(CONNECT_TIMEOUT_S)
        if not answered or self._connect_rc != 0:
            rc, dropped = self._connect_rc, self._dropped   # before close() disconnects
            self.close()
            raise CamhostError(connect_failure(b, rc, dropped), exit_code=4)

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self._connect_rc = reason_code.value if hasattr(reason_code, "value") else reason_code
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        if not self._connected.is_set():
            self._dropped = str(reason_code)
            self._connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self.cond:
            self._subscribed[mid] = True
            self.cond.notify_all()

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.messages.append((msg.topic, msg.payload))
            self.last[msg.topic] = msg.payload
            self.cond.notify_all()
        for listener in list(self.listeners):
            listener(msg.topic, msg.payload)

    def subscribe(self, *topics):
        """Subscribe, then return once every retained message for them has arrived.

        A broker delivers one session's messages in order, so the echo of a probe
        published after the subscription comes after all retained messages.
        """
        probe = "camhost/probe/" + uuid.uuid4().hex
        result, mid = self.client.subscribe([(t, 1) for t in topics] + [(probe, 1)])
        if result != mqtt.MQTT_ERR_SUCCESS:
            raise CamhostError("subscribing on %s failed (code %s)" % (self.broker, result))
        self.wait(lambda: mid in self._subscribed, CONNECT_TIMEOUT_S, "the broker to confirm "
                  "the subscription")
        start = self.mark()
        self.client.publish(probe, b"sync", qos=1)
        self.wait(lambda: any(t == probe for t, p in self.messages[start:]), CONNECT_TIMEOUT_S,
                  "the broker to echo a probe message")
        self.client.unsubscribe(probe)

    def publish(self, topic, payload, retain=False):
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        try:
            info.wait_for_publish(CONNECT_TIMEOUT_S)
        except (RuntimeError, ValueError) as e:
            raise CamhostError("publishing to %s failed: %s" % (topic, e))
        if not info.is_published():
            raise CamhostError("the broker at %s did not acknowledge a message to %s"
                               % (self.broker, topic), exit_code=3)

    def mark(self):
        with self.cond:
            return len(self.messages)

    def wait(self, condition, timeout=None, what=None):
        """Block until condition() (called under the lock) is true; timeout None: no limit."""
        end = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while not condition():
                left = 0.5 if end is None else end - time.monotonic()
                if left <= 0:
                    raise CamhostError("timed out after %g s waiting for %s" % (timeout, what),
                                       exit_code=3)
                self.cond.wait(min(left, 0.5))

    def close(self):
        try:
            self.client.disconnect()   # first: it wakes paho's network thread at once
            self.client.loop_stop()
        except Exception:
            pass
