"""camhost.bridge, the MQTT side every camera bridge shares, against real mosquitto."""
import json
import threading

import pytest

from broker_fixtures import (WAIT_S, Mosquitto, Watcher, mosquitto,  # noqa: F401
                             stop_leftovers, wait_until)
from camhost.bridge import Bridge, BridgeError
from camhost.errors import CamhostError

BASE = "camagent/b1"


class Cam:
    """The camera side of a minimal bridge: one command, one state."""

    def __init__(self, bridge):
        self.bridge = bridge
        self.done = []
        bridge.add_command("thing/set", self.set_thing)
        bridge.add_command("broken/set", self.broken)
        bridge.add_command("failing/set", self.failing)
        bridge.add_entity("button", "thing", {"name": "Thing", "command_topic": "~/thing/set"})

    def set_thing(self, payload):
        if payload != b"GO":
            raise BridgeError("thing/set takes GO")
        self.done.append(payload)

    def broken(self, payload):
        raise RuntimeError("a bug")

    def failing(self, payload):
        raise CamhostError("no answer from the camera")

    def publish(self):
        self.bridge.publish_state({"done": len(self.done),
                                   "commands": self.bridge.command_counts()})


@pytest.fixture
def bridged(mosquitto):
    bridge = Bridge(mosquitto.url, "b1", {"model": "test", "sw_version": "1"})
    cam = Cam(bridge)
    bridge.set_available(True)
    bridge.connect()
    thread = threading.Thread(target=bridge.run_forever, args=(cam.publish, 0.2, cam.publish),
                              daemon=True)
    thread.start()
    yield bridge, cam
    bridge.close()
    thread.join(WAIT_S)


@pytest.fixture
def watcher(mosquitto):
    w = Watcher(mosquitto, topics=("camagent/#", "homeassistant/#"))
    yield w
    w.close()


def errors(watcher):
    return [json.loads(p) for p, r in watcher.all(BASE + "/error")]


def test_commands_errors_and_a_bug_that_does_not_stop_the_bridge(bridged, watcher):
    bridge, cam = bridged
    wait_until(lambda: watcher.all(BASE + "/availability"), what="availability")
    for topic, payload in (("thing/set", b"NO"), ("broken/set", b"x"), ("failing/set", b"x"),
                           ("nothing/here", b"\x00\xff"), ("thing/set", b"GO")):
        watcher.publish("%s/%s" % (BASE, topic), payload)
    wait_until(lambda: cam.done == [b"GO"], what="the good command")
    wait_until(lambda: len(errors(watcher)) == 4, what="four errors")
    assert errors(watcher) == [
        {"topic": BASE + "/thing/set", "payload": "NO", "error": "thing/set takes GO"},
        {"topic": BASE + "/broken/set", "payload": "x",
         "error": "the bridge failed on this command: RuntimeError('a bug')"},
        {"topic": BASE + "/failing/set", "payload": "x",
         "error": "the camera did not do it: no answer from the camera"},
        {"topic": BASE + "/nothing/here", "payload": "\\x00\\xff",
         "error": "unknown command topic; accepted: broken/set, failing/set, thing/set"}]
    wait_until(lambda: bridge.command_counts() == {"accepted": 1, "rejected": 4},
               what="the counts")


def test_a_retained_command_is_not_run(mosquitto, watcher):
    watcher.publish(BASE + "/thing/set", b"GO", retain=True)
    bridge = Bridge(mosquitto.url, "b1", {"model": "test"})
    cam = Cam(bridge)
    bridge.connect()
    thread = threading.Thread(target=bridge.run_forever, args=(cam.publish, 0.2, cam.publish),
                              daemon=True)
    thread.start()
    try:
        watcher.wait_for(lambda t, p: t == BASE + "/state", "a state")
        watcher.publish(BASE + "/thing/set", b"GO")        # a live one is
        watcher.publish(BASE + "/thing/set", b"END")       # answered after it, in order
        wait_until(lambda: errors(watcher), what="the answer to END")
    finally:
        bridge.close()
        thread.join(WAIT_S)
    assert cam.done == [b"GO"]


def test_state_is_retained_and_not_repeated_and_discovery_has_the_device(bridged, mosquitto,
                                                                         watcher):
    bridge, cam = bridged
    watcher.wait_for(lambda t, p: t == BASE + "/state", "a state")
    assert bridge.publish_state({"done": 0, "commands": bridge.command_counts()}) is False
    late = Watcher(mosquitto, topics=("camagent/#", "homeassistant/#"))
    try:
        wait_until(lambda: late.all(BASE + "/state") and late.all(BASE + "/availability"),
                   what="the retained documents")
        assert late.all(BASE + "/availability") == [(b"online", 1)]
        doc = json.loads(late.all("homeassistant/button/camhost_b1/thing/config")[0][0])
        assert doc["device"] == {"identifiers": ["camhost_b1"], "name": "b1", "model": "test",
                                 "sw_version": "1"}
        assert doc["unique_id"] == "camhost_b1_thing" and doc["~"] == BASE
        assert doc["availability_topic"] == "~/availability"
        assert doc["origin"]["name"] == "camhost"
    finally:
        late.close()
    bridge.set_available(False)
    wait_until(lambda: watcher.all(BASE + "/availability")[-1][0] == b"offline", what="offline")
    bridge.update_device(sw_version="2")
    watcher.wait_for(lambda t, p: t.endswith("/thing/config") and
                     json.loads(p)["device"]["sw_version"] == "2", "the new sw_version")


def test_broker_refusals_and_bad_device_ids(tmp_path):
    broker = Mosquitto(tmp_path / "auth", users={"cam": "secret"}).start()
    with pytest.raises(CamhostError, match="requires a user name and password") as e:
        Bridge(broker.url, "b1", {}).connect()
    assert e.value.exit_code == 4
    with pytest.raises(CamhostError, match="refused this login"):
        Bridge("mqtt://cam:wrong@127.0.0.1:%d" % broker.port, "b1", {}).connect()
    ok = Bridge("mqtt://cam:secret@127.0.0.1:%d" % broker.port, "b1", {}).connect()
    ok.close()
    with pytest.raises(CamhostError, match="device id 'a/b': use letters") as e:
        Bridge(broker.url, "a/b", {})
    assert e.value.exit_code == 2


def test_a_command_sent_as_soon_as_connect_returns_is_heard(mosquitto, watcher):
    """connect() waits for the broker's SUBACK: before, a command published at once could
    reach the broker before the bridge's subscription did, and was lost."""
    for n in range(10):
        bridge = Bridge(mosquitto.url, "b1", {"model": "test"})
        cam = Cam(bridge)
        bridge.connect()
        watcher.publish(BASE + "/thing/set", b"GO")
        thread = threading.Thread(target=bridge.run_forever, args=(None, 1.0, cam.publish),
                                  daemon=True)
        thread.start()
        try:
            wait_until(lambda: cam.done == [b"GO"], what="command %d heard" % n)
        finally:
            bridge.close()
            thread.join(WAIT_S)


def test_tls_broker(tmp_path):
    from broker_fixtures import Certificates
    certs = Certificates(tmp_path / "certs")
    broker = Mosquitto(tmp_path / "tls", tls=certs).start()
    url = "mqtts://127.0.0.1:%d?ca=%s" % (broker.port, certs.ca)
    bridge = Bridge(url, "b1", {"model": "test"})
    bridge.set_available(True)
    bridge.connect()
    watcher = Watcher(broker, topics=(BASE + "/#",), tls=certs)
    try:
        wait_until(lambda: watcher.all(BASE + "/availability") == [(b"online", 1)],
                   what="online over TLS")
    finally:
        watcher.close()
        bridge.close()
    with pytest.raises(CamhostError, match="TLS with mqtts://127.0.0.1:%d failed" % broker.port):
        Bridge("mqtts://127.0.0.1:%d" % broker.port, "b1", {}).connect()   # no CA: untrusted
