"""Hostile network input: a broker that sends garbage, a length field that never ends, a
packet trickled a byte at a time, and 8 MB messages (retained, too).

The misbehaving broker is camhost.simbroker (a real TCP server); the 8 MB messages go
through a real mosquitto. Agent processes run on CPython and, when MICROPYTHON names a
MicroPython 1.22 binary, on MicroPython too (where an 8 MB read is a MemoryError).
"""
import json
import os
import threading

import pytest

from agent_rig import Rig
from broker_fixtures import (Agent, Watcher, mosquitto, send, still,  # noqa: F401
                             stop_leftovers, wait_until)
from camagent.compat import ticks_diff
from camagent.mqtt import HEALTHY_S, Session
from camhost.simbroker import HostileBroker, publish_header, publish_packet

MICROPYTHON = os.environ.get("MICROPYTHON")
RUNTIMES = [pytest.param(None, id="cpython"),
            pytest.param(MICROPYTHON, id="micropython",
                         marks=pytest.mark.skipif(not MICROPYTHON, reason="MICROPYTHON not set"))]
# slow enough that the move is still running while the broker misbehaves (~2.7 s)
SLOW = {"speed": 1500, "max_speed": 3000, "start_speed": 500, "accel": 20000, "home_speed": 3000}
BIG = 8 * 1024 * 1024


@pytest.fixture
def hostile():
    brokers = []

    def make(script=None):
        brokers.append(HostileBroker(script).start())
        return brokers[-1]
    yield make
    for b in brokers:
        b.close()


def start_agent(tmp_path, broker, runtime, **cfg):
    cfg.setdefault("sd_reset_on_start", False)
    return Agent(tmp_path, broker, micropython=runtime, persist_min_interval_s=0,
                 **cfg).start()


def saved_position(agent):
    try:
        with open(os.path.join(agent.sim.state_dir, "position.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def move_then(base, misbehave):
    """A script: on the first connection, start a long pan move, then misbehave."""
    def script(conn):
        if conn is conn.broker.connections[0]:
            conn.send(publish_packet(base + "/pan/set", b"355", qos=1))
            misbehave(conn)
    return script


def assert_move_finishes(agent):
    """The move goes on whatever the broker does, and ends with the coils released."""
    wait_until(lambda: (saved_position(agent) or {}).get("at_rest") is True and
               saved_position(agent)["pan"]["steps"] == 4039, what="the move to end")
    assert agent.sim.levels("pan") == (0, 0, 0, 0)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_length_field_that_never_ends_is_a_protocol_error(tmp_path, hostile, runtime):
    # 300,000 bytes of 0xFF: MQTT allows 4 length bytes; the 5th continuation is an error
    base = "camagent/testcam"
    broker = hostile(move_then(base, lambda conn: conn.send(b"\x30" + b"\xff" * 300000)))
    agent = start_agent(tmp_path, broker, runtime, overrides={"pan": SLOW, "tilt": SLOW})
    wait_until(lambda: "remaining length of more than 4 bytes" in agent.log(),
               what="the protocol error")
    assert_move_finishes(agent)
    broker.wait(lambda: len(broker.connections) >= 2, what="a reconnect")
    assert agent.alive() and "Traceback" not in agent.log()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_trickling_broker_neither_freezes_a_move_nor_keeps_the_connection(
        tmp_path, hostile, runtime):
    # a PUBLISH sent one byte every 0.5 s: each read gets a byte long before any
    # per-read timeout, but the packet misses its own deadline
    base = "camagent/testcam"
    packet = publish_header(base + "/led_red/set", 200) + b"O" * 200
    broker = hostile(move_then(base, lambda conn: conn.trickle(packet, 0.5)))
    agent = start_agent(tmp_path, broker, runtime, overrides={"pan": SLOW, "tilt": SLOW})
    broker.wait(lambda: broker.connections and broker.connections[0].subscribed.is_set(),
                what="the first connection")
    assert_move_finishes(agent)          # during the trickle, not after it
    assert not broker.connections[0].closed.is_set()   # ...which is still going on
    wait_until(lambda: "did not arrive whole in time" in agent.log(), what="the deadline")
    broker.wait(lambda: len(broker.connections) >= 2, what="a reconnect")
    assert agent.alive() and "Traceback" not in agent.log()


def test_a_broker_that_accepts_then_sends_garbage_is_retried_ever_more_slowly(tmp_path, capsys):
    """In-process, on virtual time: the backoff grows over connections that fail at
    once, and starts again from 1 s only after a connection stayed healthy."""
    healthy = threading.Event()

    def script(conn):
        if len(conn.broker.connections) == 3:
            healthy.wait(30)             # the third one behaves until the test says so
        conn.send(b"\x00garbage")
    broker = HostileBroker(script).start()
    rig = Rig(tmp_path, sd_reset_on_start=False, mqtt={"host": "127.0.0.1", "port": broker.port})
    session = Session(rig.cam, rig.cfg)
    try:
        def lose_it():
            # the virtual loop never polls: poll the socket for real until it is lost
            wait_until(lambda: rig.loop._poll(100) and not session.connected,
                       what="the agent to read the garbage")
            return ticks_diff(session.due, rig.loop.t)
        for attempt in range(2):
            rig.loop.run_until(lambda: session.connects > attempt, limit_us=100 * 1000000)
            delay = lose_it()
            base = 2 ** attempt * 1000000    # not reset by the connect that just worked
            assert base // 2 <= delay <= base, (attempt, delay)
        rig.loop.run_until(lambda: session.connects == 3, limit_us=100 * 1000000)
        rig.loop.run_for((HEALTHY_S + 1) * 1000000)      # pings answered: a healthy minute
        assert session.connected and session.pings >= 1
        healthy.set()
        delay = lose_it()
        assert 500000 <= delay <= 1000000    # healthy for a minute: back to the first step
    finally:
        session.close()
        rig.close()
        broker.close()
    assert "protocol error: unexpected packet type 0x00" in capsys.readouterr().err


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_an_8_mb_command_is_skipped_and_answered(tmp_path, mosquitto, runtime):
    agent = start_agent(tmp_path, mosquitto, runtime)
    # not <base>/#: a failure message quoting the 8 MB command would be 8 MB long
    w = Watcher(mosquitto, [agent.base + t for t in ("/state", "/error", "/availability")])
    try:
        w.wait_for(lambda t, p: t == agent.base + "/availability" and p == b"online", "online")
        kind, err = send(w, agent.base, "led_red/set", b"O" * BIG)
        assert kind == "error" and err["payload"] == "O" * 64
        assert err["error"] == "payload is %d bytes; at most 512 accepted" % BIG
        kind, st = send(w, agent.base, "led_red/set", "ON")   # the same connection goes on
        assert kind == "state" and st["led_red"] == "ON"
        assert agent.log().count("connected to") == 1 and "Traceback" not in agent.log()
    finally:
        w.close()
    assert agent.stop() == 0


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_an_8_mb_retained_message_costs_one_error_per_connect(tmp_path, mosquitto, runtime):
    base = "camagent/testcam"
    w = Watcher(mosquitto, [base + "/error", base + "/availability"])
    try:
        # retained on a command topic (answered) and on our own error topic (not ours to read)
        w.publish(base + "/pan/set", b"9" * BIG, retain=True)
        w.publish(base + "/error", b"E" * BIG, retain=True)
        start = w.mark()
        for run in (1, 2):
            agent = start_agent(tmp_path / ("run%d" % run), mosquitto, runtime)
            w.wait_for(lambda t, p: t == base + "/availability" and p == b"online", "online",
                       start=start)
            answers = lambda: [json.loads(p) for p, r in w.all(base + "/error", start)  # noqa
                               if len(p) < 1000]
            wait_until(lambda: len(answers()) == run, what="the error for connect %d" % run)
            assert answers()[-1]["topic"] == base + "/pan/set"
            assert answers()[-1]["error"] == "payload is %d bytes; at most 512 accepted" % BIG
            agent_w = Watcher(mosquitto, [base + "/state"])
            try:
                kind, st = send(agent_w, base, "pan/set", "10", still)   # and it works
                assert kind == "state" and st["pan"]["position"] == 10.0
            finally:
                agent_w.close()
            assert agent.log().count("connected to") == 1 and "Traceback" not in agent.log()
            assert agent.stop() == 0
            agent.close()
        assert len(answers()) == 2          # one per connect, nothing for <base>/error
    finally:
        w.close()


# --- the receive path itself, inside the MicroPython VM (tests/mpvm.py) ---------------------
VM_SETUP = '''
import gc
import sys


class _Absent:
    pass


for _name in ("usocket", "select"):     # the VM has neither; the receive path needs neither
    try:
        __import__(_name)
    except ImportError:
        sys.modules[_name] = _Absent()
from camagent import mqtt


class Wire:
    """The socket as the receive path sees it. `virtual` bytes are counted, not stored:
    they stand for a huge payload (their contents do not matter to a skip)."""

    def __init__(self):
        self.data = b""
        self.pos = 0
        self.virtual = 0
        self.sent = []

    def arrive(self, data=b"", virtual=0):
        self.data = self.data[self.pos:] + bytes(data)
        self.pos = 0
        self.virtual += virtual

    def setblocking(self, flag):
        pass

    def readinto(self, buf, n=None):
        if n is None:
            n = len(buf)
        left = len(self.data) - self.pos
        if left:
            k = min(n, left)
            for i in range(k):
                buf[i] = self.data[self.pos + i]
            self.pos += k
            return k
        if self.virtual:
            k = min(n, self.virtual)
            self.virtual -= k
            return k
        return None

    def write(self, buf, n=None):
        self.sent.append(list(bytes(buf)[:n] if n else bytes(buf)))


got, skipped = [], []
client = mqtt._Client(bytearray(2 + 40 + 2 + mqtt.MAX_PAYLOAD), 40, lambda: 0, b"vm", "h", 1883)
client.set_callback(lambda t, m: got.append((t.decode(), m.decode())))
client.on_skipped = lambda t, n, head, size: skipped.append((t.decode(), n, head[:4].decode(),
                                                               size))
wire = Wire()
client._sock = wire


def pump():
    """wait_msg() until the wire has nothing more: the packet kinds completed."""
    kinds = []
    while True:
        kind = client.wait_msg()
        if kind is not None:
            kinds.append(kind)
        elif client.drained:
            return kinds


def protocol_error():
    try:
        pump()
    except mqtt.ProtocolError as e:
        return str(e)
'''


@pytest.fixture
def rx_vm():
    from mpvm import MicroVM
    vendor = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "build", "vendor", "umqtt", "simple.py")
    with open(vendor) as f:
        files = {"umqtt/__init__.py": "", "umqtt/simple.py": f.read()}
    with MicroVM(files=files) as vm:
        vm.run(VM_SETUP)
        yield vm


@pytest.mark.micropython
def test_a_packet_arriving_a_byte_at_a_time_is_kept_across_wakeups_in_the_vm(rx_vm):
    packet = publish_packet("camagent/vm/pan/set", b"90", qos=1, pid=7)
    kinds = []
    for b in packet:
        rx_vm.put("byte", [b])
        kinds += rx_vm.eval("wire.arrive(byte) or pump()")
    assert kinds == [0x30]                              # one PUBLISH, complete at the end
    assert rx_vm.eval("got") == [["camagent/vm/pan/set", "90"]]
    assert rx_vm.eval("wire.sent") == [[0x40, 2, 0, 7]]  # its PUBACK


@pytest.mark.micropython
def test_length_and_qos_violations_are_protocol_errors_in_the_vm(rx_vm):
    rx_vm.run("wire.arrive(b'\\x30\\xff\\xff\\xff\\xff\\x01')")
    assert rx_vm.eval("protocol_error()") == "a remaining length of more than 4 bytes"
    rx_vm.run("wire.data = b''; wire.pos = 0; client._next_packet()")
    rx_vm.run("wire.arrive(b'\\x34\\x05\\x00\\x01a\\x00\\x01')")
    assert rx_vm.eval("protocol_error()") == "a PUBLISH with QoS 2"


@pytest.mark.micropython
def test_skipping_8_mb_allocates_no_more_than_skipping_64_kb_in_the_vm(rx_vm):
    """The VM never collects (mpvm disables gc), so gc.mem_alloc() counts every byte
    allocated: skipping must cost the same whatever the size."""
    cost = {}
    for size in (64 * 1024, BIG):
        rx_vm.put("head", list(publish_header("camagent/vm/led_red/set", size, qos=1)))
        rx_vm.run("before = gc.mem_alloc()\nwire.arrive(head, %d)\nkinds = pump()\n"
                  "cost = gc.mem_alloc() - before" % size)
        assert rx_vm.eval("kinds") == [0x30]
        cost[size] = rx_vm.eval("cost")
    # (topic, topic length, payload size) of each: both reported, neither delivered
    assert [(t, n, size) for t, n, head, size in rx_vm.eval("skipped")] == \
        [("camagent/vm/led_red/set", 23, 64 * 1024), ("camagent/vm/led_red/set", 23, BIG)]
    assert rx_vm.eval("got") == []
    assert abs(cost[BIG] - cost[64 * 1024]) <= 64, cost
