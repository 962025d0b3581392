"""Snapshot relay: heap, throughput, and the motors' timing while a picture flows.

A simulated majestic (camhost.simmajestic) serves a ~500 KB JPEG of noise (what a
detailed 4 MP scene compresses to) and a private mosquitto takes the relay.
- Heap (snapdriver.py heap, per runtime): the live heap after a full collection,
  idle and after every 2 KB chunk of the relay; the figure is the peak beside idle.
  Also the bytes allocated per chunk (MicroPython's counter).
- Throughput: `<base>/snapshot/get` to the last byte at a subscriber, the real agent
  (`-m camagent`) per runtime, against `busybox wget -O - URL | mosquitto_pub -s`
  on the same machine (spawn to last byte). Medians of REPEATS.
- Steps (snapdriver.py steps): a pan move at TARGET_RATE half-steps/s with the
  snapshot relayed during it, against the same move without one: achieved/commanded
  rate and p99 jitter of the cruise intervals.
"""
import json
import os
import shutil
import statistics
import subprocess
import threading
import time

import common
from broker import Mosquitto
from common import ShmSysfs, percentile, runtimes
from table import figure, section

from camhost import tools
from camhost.simmajestic import SimMajestic, make_jpeg

SNAPDRIVER = os.path.join(common.BENCH, "snapdriver.py")
IMAGE = (1152, 648, 100)       # noise at this size and quality: ~500 KB
TARGET_RATE = 1000
STEPS = 3000                   # 3 s of stepping
REPEATS = 5
HEAP_TARGET = 16384            # bytes over idle (issue 10)


def _driver(rt, mode, params, timeout=180):
    proc = subprocess.run(rt.command([SNAPDRIVER, mode, json.dumps(params)]),
                          env=rt.env([common.AGENT, common.VENDOR]), cwd=common.BENCH,
                          capture_output=True, timeout=timeout)
    out = proc.stdout.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0 or not out:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError("%s snapdriver %s: %s" % (rt.name, mode, err[-1] if err else "?"))
    return json.loads(out[-1])


class Receiver:
    """A paho subscriber noting when each message on `topic` arrived, and its size."""

    def __init__(self, port, topic):
        import paho.mqtt.client as mqtt
        self.got = []
        self.cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id="bench-snap-rx-" + topic.rsplit("/", 1)[1])
        self.client.on_message = self._on
        ready = threading.Event()
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(topic, 0)
        ready.wait(10)

    def _on(self, client, userdata, msg):
        with self.cond:
            self.got.append((time.monotonic(), len(msg.payload)))
            self.cond.notify_all()

    def wait(self, count, timeout=60):
        end = time.monotonic() + timeout
        with self.cond:
            while len(self.got) < count:
                left = end - time.monotonic()
                if left <= 0:
                    raise RuntimeError("no snapshot arrived within %d s" % timeout)
                self.cond.wait(left)
            return self.got[count - 1]

    def publish(self, topic, payload):
        self.client.publish(topic, payload, qos=0)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def _agent_throughput(rt, port, maj, size, repeats):
    with ShmSysfs(prefix="camagent-bench-snap-") as fs:
        cfg = os.path.join(fs.dir, "agent.json")
        with open(cfg, "w") as f:
            json.dump({"gpio_root": fs.gpio_root, "state_dir": fs.state_dir,
                       "device_id": "benchsnap", "sd_reset_on_start": False,
                       "night": {"gain_poll_s": 0}, "majestic": {"port": maj.port},
                       "mqtt": {"host": "127.0.0.1", "port": port, "discovery": False}}, f)
        online = Receiver(port, "camagent/benchsnap/availability")
        rx = Receiver(port, "camagent/benchsnap/snapshot")
        proc = subprocess.Popen(rt.command(["-m", "camagent", "-c", cfg]),
                                env=rt.env([common.AGENT, common.VENDOR]),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # "online" (6 bytes), not a retained "offline" left by an earlier runtime's agent
            end = time.monotonic() + 20
            while not any(n == 6 for at, n in online.got) and time.monotonic() < end:
                time.sleep(0.02)
            online.close()
            time.sleep(0.2)
            times = []
            for i in range(repeats):
                t0 = time.monotonic()
                rx.publish("camagent/benchsnap/snapshot/get", b"")
                at, n = rx.wait(i + 1)
                if n != size:
                    raise RuntimeError("snapshot of %d bytes, %d expected" % (n, size))
                times.append(at - t0)
            return statistics.median(times)
        finally:
            proc.terminate()
            proc.wait(10)
            rx.close()


def _pipeline_throughput(port, maj, size, repeats):
    wget = shutil.which("busybox")
    if not wget or not shutil.which("mosquitto_pub"):
        return None
    rx = Receiver(port, "bench/pipeline")
    try:
        times = []
        for i in range(repeats):
            t0 = time.monotonic()
            subprocess.run(["sh", "-c", "busybox wget -q -O - %s/image.jpg | mosquitto_pub "
                            "-h 127.0.0.1 -p %d -t bench/pipeline -s" % (maj.url, port)],
                           check=True, timeout=60)
            at, n = rx.wait(i + 1)
            if n != size:
                raise RuntimeError("pipeline delivered %d bytes, %d expected" % (n, size))
            times.append(at - t0)
        return statistics.median(times)
    finally:
        rx.close()


def _cruise(run, skip=8):
    interval = 1000000 // TARGET_RATE
    cruise = run["intervals"][skip:-skip] or run["intervals"]
    achieved = len(cruise) * 1e6 / sum(cruise) / TARGET_RATE if cruise else None
    p99 = percentile([abs(d - interval) for d in cruise], 99) if cruise else None
    return achieved, p99


def run(repeats=REPEATS, steps=STEPS, image=IMAGE):
    for tool in ("ffmpeg", "mosquitto"):
        if not tools.which(tool):
            return section("Snapshot relay", skipped="%s is not installed" % tool), {}
    figures, notes, raw = [], [], {}
    jpeg = make_jpeg(*image, noise=True)
    size = len(jpeg)
    kb = size / 1024.0
    notes.append("snapshot: a %dx%d JPEG of noise, %d bytes" % (image[0], image[1], size))
    maj = SimMajestic(image=jpeg)
    broker = Mosquitto()
    try:
        base = _pipeline_throughput(broker.port, maj, size, repeats)
        raw["pipeline_s"] = base
        for rt, why in runtimes():
            if rt is None:
                notes.append("MicroPython: %s" % why)
                continue
            label = rt.name.split()[0]
            with ShmSysfs(prefix="camagent-bench-snap-") as fs:
                p = {"gpio_root": fs.gpio_root, "state_dir": fs.state_dir, "port": broker.port,
                     "majestic": maj.port, "rate": TARGET_RATE, "steps": steps,
                     "max_chunks": size // 2048 + 16}
                heap = _driver(rt, "heap", p)
                raw[label + "_heap"] = heap
                figures.append(figure("%s live heap relaying %.0f KB, peak over idle" % (label, kb),
                                      heap["peak"] - heap["idle"], "B", 0, "idle",
                                      ("<=", HEAP_TARGET)))
                if heap["alloc_per_chunk"] is not None:
                    figures.append(figure("%s bytes allocated per 2 KB chunk" % label,
                                          heap["alloc_per_chunk"], "B"))
                with_snap = _driver(rt, "steps", dict(p, snapshot=True,
                                                      state_dir=fs.state_dir + "/a"))
                without = _driver(rt, "steps", dict(p, snapshot=False,
                                                    state_dir=fs.state_dir + "/b"))
                raw[label + "_steps"] = {"with": {k: v for k, v in with_snap.items()
                                                  if k != "intervals"},
                                         "without": {k: v for k, v in without.items()
                                                     if k != "intervals"}}
                a1, j1 = _cruise(with_snap)
                a0, j0 = _cruise(without)
                figures.append(figure("%s steps at %d/s, achieved/commanded, snapshot flowing"
                                      % (label, TARGET_RATE), a1, "", a0, "no snapshot",
                                      (">=", 0.99)))
                figures.append(figure("%s step jitter p99, snapshot flowing" % label, j1, "us",
                                      j0, "no snapshot"))
                if with_snap["relay_us"] > with_snap["move_us"]:
                    notes.append("%s: the relay outlasted the move (%.1f s vs %.1f s): the "
                                 "move saw the snapshot flow throughout" % (
                                     label, with_snap["relay_us"] / 1e6,
                                     with_snap["move_us"] / 1e6))
                else:
                    notes.append("%s: the relay took %.1f s of the %.1f s move"
                                 % (label, with_snap["relay_us"] / 1e6, with_snap["move_us"] / 1e6))
            t = _agent_throughput(rt, broker.port, maj, size, repeats)
            raw[label + "_relay_s"] = t
            figures.append(figure("%s relay throughput" % label, size / t / 1e6, "MB/s",
                                  size / base / 1e6 if base else None, "wget | mosquitto_pub"))
    finally:
        broker.close()
        maj.close()
    notes.append("heap: live objects after a full collection, sampled after every chunk")
    return section("Snapshot relay", figures, notes), raw
