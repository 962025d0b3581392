"""Section: a misbehaving broker costs the motors nothing, and a huge message no memory.

Stall: both axes step at 1000 half-steps/s through the agent's Camera, Loop and
MQTT session (driver.py stall), once against mosquitto (the baseline) and once
against camhost.simbroker trickling a PUBLISH one byte every 50 ms (each read
finds a byte, the packet never completes, then misses its deadline), and once
while the agent skips an 8 MB message sent 0.7 s into the move. The figure is the
worst step delay: the largest step interval minus the commanded one, over
both axes, ramp steps left out.

Skip: the agent connected and idle for a while, then the broker sends one 8 MB
PUBLISH to a command topic, which the agent skips in 256 B reads and answers on
<base>/error (driver.py skip). The figures are the most heap in use, sampled
every 2 ms, while idle and while skipping, and (MicroPython) the bytes allocated
over the whole skip.
"""
from broker import Mosquitto
from common import ShmSysfs, runtimes
from table import figure, section

from camhost.simbroker import HostileBroker, publish_header

RATE = 1000
STEPS = 3000             # half-steps per axis: 3 s at RATE
ACCEL = 1000000
TRICKLE_S = 0.05
BIG = 8 * 1024 * 1024


def worst_delay(run):
    interval = 1000000 // RATE
    late = [d - interval for axis in run["intervals"] for d in axis[run["skip"]:]]
    return max(late) if late else None


def trickler(conn):
    packet = publish_header("camagent/bench/led_red/set", 1000) + b"O" * 1000
    conn.trickle(packet, TRICKLE_S)


def sender(size):
    """A script: one `size` B command, a second after the agent is online (its idle window)."""
    def script(conn):
        if not conn.closed.wait(1.0):
            conn.send(publish_header("camagent/bench/led_red/set", size, qos=1))
            conn.send_payload(size)
    return script


def _size(n):
    return "%d MB" % (n >> 20) if n >= 1 << 20 else "%d KB" % (n >> 10)


def _driver(rt, mode, params, out, key):
    with ShmSysfs() as fs:
        p = dict(params, gpio_root=fs.gpio_root, state_dir=fs.state_dir, device_id="bench")
        out[key] = rt.driver(mode, p, timeout=300)


def run(steps=STEPS, big=BIG):
    figures, notes, raw = [], [], {}
    stall = {"rate": RATE, "steps": steps, "accel": ACCEL, "settle_us": 300000}
    for rt, why in runtimes():
        if rt is None:
            notes.append("MicroPython: skipped: %s" % why)
            continue
        results = {}
        with Mosquitto() as broker:
            _driver(rt, "stall", dict(stall, port=broker.port), results, "normal")
        with HostileBroker(trickler) as broker:
            _driver(rt, "stall", dict(stall, port=broker.port), results, "stalling")
        with HostileBroker(sender(big)) as broker:      # arrives 0.7 s into the move
            _driver(rt, "stall", dict(stall, port=broker.port), results, "skipping")
        with HostileBroker(sender(big)) as broker:
            _driver(rt, "skip", {"port": broker.port, "idle_us": 900000, "sample_us": 2000,
                                 "limit_us": 120000000}, results, "skip")
        raw[rt.name] = results
        normal, stalling = worst_delay(results["normal"]), worst_delay(results["stalling"])
        figures.append(figure("%s worst step delay, broker trickling a packet" % rt.name,
                              stalling, "us", normal, "mosquitto"))
        figures.append(figure("%s worst step delay, skipping a message of %s" % (rt.name,
                              _size(big)), worst_delay(results["skipping"]), "us", normal,
                              "mosquitto"))
        skip = results["skip"]
        figures.append(figure("%s heap in use while skipping a message of %s (peak)"
                              % (rt.name, _size(big)), skip["peak_skipping"], "B",
                              skip["peak_idle"], "idle"))
        if skip["allocated_skipping"] is not None:
            figures.append(figure("%s heap allocated over the whole skip" % rt.name,
                                  skip["allocated_skipping"], "B"))
        notes.append("%s: connection %s during the trickled packet; %d connect(s) while "
                     "skipping" % (rt.name, "dropped (deadline)" if results["stalling"]["lost"]
                                   else "kept", skip["connects"]))
    notes.append("stall: %d half-steps per axis at %d/s; trickle: one byte every %d ms; "
                 "delay = step interval - commanded interval, worst over both axes"
                 % (steps, RATE, TRICKLE_S * 1000))
    notes.append("skip: heap sampled every 2 ms (MicroPython: gc.mem_alloc(), garbage "
                 "included; CPython: tracemalloc); idle window 0.9 s before the message")
    return section("Misbehaving broker", figures, notes), raw
