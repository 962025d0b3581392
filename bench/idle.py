"""Section 4: what an idle, connected agent costs: wakeups and CPU time.

driver.py idle builds the camera and the MQTT session on a fake sysfs, connects to
a private mosquitto, waits a moment, then counts over a window that opens and
closes on a wakeup: loop iterations (camera.loop.wakeups), voluntary context
switches (every time the process blocked and was woken, kernel-counted) and CPU
time (/proc/self/schedstat). A short keepalive makes the window short.

Scaling: an idle agent only wakes for its heartbeat, whose period follows from
the keepalive (camagent.mqtt.heartbeat_s). The figures are measured per
heartbeat, then projected to the default keepalive (60 s) by that relation:
per minute = per heartbeat x 60 / heartbeat(60).
"""
import threading

from broker import Mosquitto
from common import DriverError, ShmSysfs, runtimes
from table import figure, section

from camagent.config import MQTT_DEFAULTS
from camagent.mqtt import heartbeat_s

KEEPALIVE_S = 5          # the measuring keepalive (the config's minimum)
WINDOW_S = 10.0
WARM_S = 1.0
DEFAULT_KEEPALIVE_S = MQTT_DEFAULTS["keepalive"]
STATE_INTERVAL_S = MQTT_DEFAULTS["state_interval"]


def measure(rt, port, device_id, window_s, warm_s, align, results):
    with ShmSysfs() as fs:
        params = {"gpio_root": fs.gpio_root, "state_dir": fs.state_dir, "port": port,
                  "device_id": device_id, "keepalive": KEEPALIVE_S,
                  "window_us": int(window_s * 1e6), "warm_us": int(warm_s * 1e6),
                  "align": align}
        try:
            results[rt.name] = (rt.driver("idle", params), None)
        except DriverError as e:
            results[rt.name] = (None, str(e))


def run(window_s=WINDOW_S, warm_s=WARM_S, align=True):
    """`align`: open the window on a wakeup (exact per-period counts; up to one heartbeat
    longer). Off only for the smoke test."""
    figures, notes, raw = [], [], {}
    found = runtimes()
    results = {}
    with Mosquitto() as broker:
        # the runtimes idle side by side: an idle agent hardly touches the CPU
        threads = [threading.Thread(target=measure, args=(rt, broker.port, "idle%d" % i,
                                                          window_s, warm_s, align, results))
                   for i, (rt, why) in enumerate(found) if rt]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    beat_60 = heartbeat_s(DEFAULT_KEEPALIVE_S, STATE_INTERVAL_S)[0]
    for rt, why in found:
        if rt is None:
            notes.append("MicroPython: skipped: %s" % why)
            continue
        r, error = results[rt.name]
        if r is None:
            notes.append("%s: failed: %s" % (rt.name, error))
            continue
        beats = r["window_us"] / 1e6 / r["heartbeat_s"]
        per_beat = {"wakeups": r["wakeups"] / beats, "switches": r["switches"] / beats,
                    "cpu_ms": r["cpu_ns"] / 1e6 / beats}
        per_min = dict((k, v * 60.0 / beat_60) for k, v in per_beat.items())
        raw[rt.name] = {"measured": r, "per_heartbeat": per_beat,
                        "per_minute_at_default_keepalive": per_min}
        measured_per_period = r["wakeups"] / (r["window_us"] / 1e6 / KEEPALIVE_S)
        figures.append(figure("%s loop wakeups per keepalive period (keepalive %d s, measured)"
                              % (rt.name, KEEPALIVE_S), measured_per_period, "",
                              target=("<=", 1.0)))
        figures.append(figure("%s loop wakeups per minute = per keepalive period at %d s "
                              "(projected)" % (rt.name, DEFAULT_KEEPALIVE_S), per_min["wakeups"],
                              "", target=("<=", 60.0 / DEFAULT_KEEPALIVE_S)))
        figures.append(figure("%s process wakeups per minute (voluntary switches, projected)"
                              % rt.name, per_min["switches"]))
        figures.append(figure("%s CPU time per minute (projected)" % rt.name,
                              per_min["cpu_ms"], "ms"))
        notes.append("%s: %d loop wakeups, %d voluntary switches, %.2f ms CPU in %.2f s at "
                     "keepalive %d s (heartbeat %d s); x 60/%d per minute at keepalive %d s "
                     "(heartbeat %d s)" % (rt.name, r["wakeups"], r["switches"], r["cpu_ns"] / 1e6,
                                          r["window_us"] / 1e6, KEEPALIVE_S, r["heartbeat_s"],
                                          beat_60, DEFAULT_KEEPALIVE_S, beat_60))
    notes.append("not in the window: the periodic state (every %d s by default), one publish "
                 "per %d s" % (STATE_INTERVAL_S, STATE_INTERVAL_S))
    return section("Idle cost (connected, nothing moving)", figures, notes), raw
