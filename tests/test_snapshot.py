"""The PUBLISH header the snapshot relay writes before streaming the image."""
import os
import subprocess

import pytest

from camagent.snapshot import publish_head
from mpvm import vm_fixture

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
vm = vm_fixture()


def _decode(head):
    """Independent reading of the header: (flags byte, remaining, topic)."""
    mult, remaining, i = 1, 0, 1
    while True:
        b = head[i]
        remaining += (b & 0x7F) * mult
        mult *= 128
        i += 1
        if not b & 0x80:
            break
    tlen = head[i] * 256 + head[i + 1]
    return head[0], remaining, head[i + 2:i + 2 + tlen], len(head) - (i + 2 + tlen)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 16383, 500_000, 2_097_151, 2_097_152])
def test_remaining_length(size):
    flags, remaining, topic, extra = _decode(publish_head("cam/snapshot", size))
    assert (flags, topic, extra) == (0x30, b"cam/snapshot", 0)
    assert remaining == 2 + len(b"cam/snapshot") + size


def test_retain_flag_and_limit():
    assert publish_head(b"t", 1, retain=True)[0] == 0x31
    with pytest.raises(ValueError):
        publish_head("t", 268435455)


@pytest.mark.micropython
def test_same_bytes_under_micropython(vm):
    vm.run('from camagent.snapshot import publish_head\nh = list(publish_head("cam/snapshot", 500000))')
    assert bytes(vm.eval("h")) == publish_head("cam/snapshot", 500000)


RELAY_RIG = '''
from camagent.snapshot import Relay
class Loop:
    def __init__(self):
        self.devices = []
    def add(self, dev):
        self.devices.append(dev)
class Cam:
    loop = Loop()
    def now(self):
        return 0
class Session:
    base = "camagent/t"
    t_error = b"camagent/t/error"
    cam = Cam()
    connected = True
    client = None
    held = None
    def __init__(self):
        self.out = []
        self.lost = []
        self.logged = []
    def _publish(self, topic, payload, retain=False):
        self.out.append([topic.decode(), payload.decode(), retain])
        return True
    def _lost(self, why):
        self.lost.append(why)
        self.connected = False
    def _log(self, text):
        self.logged.append(text)
    def _schedule(self):
        pass
class Http:
    def get(self, path, handler):
        self.path = path
        return True
session = Session()
http = Http()
relay = Relay(session, http, {"snapshot": {"interval_s": 0, "retain": False,
                                          "query": "width=640"}})
'''

HOLD_SCRIPT = RELAY_RIG + '''
first = relay.request_snapshot("mqtt")
second = relay.request_snapshot("motion")     # one at a time: answered by the first
session.held = relay                          # as head() leaves it mid-packet
relay.hold(b"camagent/t/state", b"s1", True)
relay.hold(b"camagent/t/error", b"e1", False)
relay.hold(b"camagent/t/state", b"s2", True)  # a newer state replaces the held one
for i in range(9):
    relay.hold(b"camagent/t/error", b"x%d" % i, False)
relay.done(None)
flushed = session.out
held_after = session.held
'''


def test_publications_held_mid_packet_are_flushed_after_it():
    scope = {}
    exec(HOLD_SCRIPT, scope)
    assert scope["first"] is True and scope["second"] is False
    assert scope["http"].path == "/image.jpg?width=640"
    out = scope["flushed"]
    assert out[0] == ["camagent/t/state", "s2", True]
    # at most 8 held: beyond, the oldest error reply goes, never the state
    assert [o[1] for o in out[1:]] == ["x%d" % i for i in range(2, 9)]
    assert scope["held_after"] is None and scope["relay"].published == 1
    assert "dropped a publication" in scope["session"].logged[0]


FAIL_SCRIPT = RELAY_RIG + '''
class Sock:
    def __init__(self):
        self.data = []
    def write(self, data, n=None):
        self.data.append(bytes(data) if n is None else bytes(data[:n]))
class Client:
    sock = Sock()
session.client = Client()
relay.request_snapshot("mqtt")
real = session.client.sock
relay.head(5000)                 # the PUBLISH header goes out with the full length
sent_head = real.data[0]
relay.chunk(bytearray(b"abc"), 2)
session.client.sock.write(bytes([64, 2, 0, 1]))   # umqtt's PUBACK mid-packet: deferred
deferred = list(real.data)
relay.done("majestic closed the connection after 2 of 5000 bytes")
lost = session.lost
kept = relay._error
session.connected = True              # back: the next tick publishes the error
relay.tick(0)
published = session.out
'''


def test_a_short_body_mid_packet_drops_the_session_and_reports_later():
    scope = {}
    exec(FAIL_SCRIPT, scope)
    assert scope["sent_head"] == publish_head("camagent/t/snapshot", 5000)
    assert scope["deferred"] == [scope["sent_head"], b"ab"]   # no PUBACK inside the packet
    assert scope["session"].client.sock is scope["real"]    # umqtt has its socket back
    assert scope["lost"] == ["snapshot stopped mid-packet"]
    assert "cannot be completed" in scope["session"].logged[0]
    topic, payload, retain = scope["published"][0]
    doc = __import__("json").loads(payload)
    assert topic == "camagent/t/error" and doc["topic"] == "camagent/t/snapshot/get"
    assert doc["error"] == "snapshot: majestic closed the connection after 2 of 5000 bytes"


@pytest.mark.micropython
def test_relay_logic_under_micropython(vm):
    vm.run(HOLD_SCRIPT)
    assert vm.eval("[first, second]") == [True, False]
    out = vm.eval("flushed")
    assert out[0] == ["camagent/t/state", "s2", True] and len(out) == 8
    vm.run(FAIL_SCRIPT[len(RELAY_RIG):].replace("session.client = Client()", """
session = Session()
relay = Relay(session, Http(), {"snapshot": {"interval_s": 0, "retain": False, "query": ""}})
session.client = Client()"""))
    assert vm.eval("lost") == ["snapshot stopped mid-packet"]
    assert "majestic closed the connection after 2 of 5000 bytes" in vm.eval("published[0][1]")
