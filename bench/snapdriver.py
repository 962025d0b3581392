"""The snapshot benchmark's inner half: the agent's Camera, Session and snapshot relay
in one process (CPython or MicroPython), against a real mosquitto and the simulated
majestic that bench/snapshot.py runs.

    python snapdriver.py MODE JSON      (PYTHONPATH=agent:build/vendor)
    micropython snapdriver.py MODE JSON

MODE steps: a pan move at `rate` half-steps/s, with a snapshot relayed during it or
not; the step intervals come back. MODE heap: the live heap idle and at every relayed
chunk (after a full collection, so only live objects count), and the bytes allocated
per chunk. The last line printed is the JSON result.
"""
import gc
import json
import sys

from timedgpio import Opener, intervals

try:
    import micropython
except ImportError:
    micropython = None


def heap_live():
    gc.collect()
    if micropython:
        return gc.mem_alloc()
    import tracemalloc
    return tracemalloc.get_traced_memory()[0]


def allocated():
    return micropython.mem_total() if micropython and hasattr(micropython, "mem_total") \
        else None


def build(p, opener=None):
    from camagent import config
    from camagent.camera import Camera
    from camagent.gpio import Gpio
    from camagent.mqtt import Session
    axis = {"min_steps": 0, "max_steps": 10000000, "park": 0, "speed": p["rate"],
            "max_speed": max(p["rate"], 4000), "start_speed": min(200, p["rate"]),
            "accel": 1000000}
    doc = {"gpio_root": p["gpio_root"], "state_dir": p["state_dir"], "device_id": "benchsnapdrv",
           "sd_reset_on_start": False, "overrides": {"pan": axis, "tilt": axis},
           "night": {"gain_poll_s": 0}, "majestic": {"port": p["majestic"], "timeout_s": 60},
           "mqtt": {"host": "127.0.0.1", "port": p["port"], "keepalive": 60,
                    "discovery": False}}
    cfg = config.parse(json.dumps(doc))
    gpio = Gpio(cfg["gpio_root"], opener=opener) if opener else None
    cam = Camera(cfg, gpio=gpio)
    session = Session(cam, cfg)
    cam.start()
    run_until(cam.loop, lambda: session.connected and not cam.majestic.busy, 5000000)
    return cam, session


class Deadline:
    """Due every POKE_US until `at`: the loop cannot sleep long past a condition that
    became true inside a tick (an idle agent would otherwise sleep to its heartbeat)."""

    def __init__(self, at):
        from camagent.compat import ticks_add, ticks_diff
        self._add, self._diff = ticks_add, ticks_diff
        self.at = at
        self.due = at
        self.passed = False

    def tick(self, now):
        if self._diff(now, self.at) >= 0:
            self.passed = True
        self.due = self._add(now, POKE_US)


POKE_US = 25000   # over the loop's 20 ms socket check: waits are spent in poll()


def run_until(loop, condition, limit_us):
    from camagent.compat import ticks_add, ticks_us
    d = Deadline(ticks_add(ticks_us(), limit_us))
    d.due = ticks_us()
    loop.add(d)
    try:
        while not condition():
            if d.passed:
                raise SystemExit("condition not reached in %d us" % limit_us)
            loop.run_once()
    finally:
        loop.remove(d)


def mode_steps(p):
    from camagent import boards
    from camagent.compat import ticks_diff, ticks_us
    pins = boards.profile("imou-ranger-rc-4mp")["pins"]["pan"]
    opener = Opener(pins, (), p["steps"] + 16, ticks_us)   # pan's writes only
    cam, session = build(p, opener)
    relay = cam.snapshot
    try:
        opener.arm(True)
        pan = cam.pan
        start = pan.steps
        t0 = ticks_us()
        if p["snapshot"]:
            relay.request_snapshot("bench")
        pan.move_to(start + p["steps"], p["rate"])
        run_until(cam.loop, lambda: not cam.moving, 120000000)
        move_us = ticks_diff(ticks_us(), t0)
        run_until(cam.loop, lambda: not cam.majestic.busy, 120000000)
        relay_us = ticks_diff(ticks_us(), t0)
        opener.arm(False)
        return {"intervals": intervals(opener.logs[0], ticks_diff),
                "move_us": move_us, "relay_us": relay_us,
                "published": relay.published, "failed": relay.failed,
                "connects": session.connects}
    finally:
        session.close()
        cam.close()


def mode_heap(p):
    if not micropython:
        import tracemalloc
        tracemalloc.start()
    cam, session = build(p)
    relay = cam.snapshot
    try:
        cap = p["max_chunks"]
        samples = [0] * cap      # preallocated: the sampling itself must not grow the heap
        counts = [0] * cap
        seen = [0]
        chunk = relay.chunk

        def sampled(buf, n):   # after each chunk: the live heap, and the bytes allocated
            chunk(buf, n)
            i = seen[0]
            if i < cap:
                counts[i] = allocated() or 0
                samples[i] = heap_live()
            seen[0] = i + 1
        relay.chunk = sampled
        idle = heap_live()
        a0 = allocated()
        relay.request_snapshot("bench")
        run_until(cam.loop, lambda: not cam.majestic.busy and relay._reason is None, 120000000)
        n = min(seen[0], cap)
        per_chunk = None
        if a0 is not None and n > 2:
            # median bytes allocated from one chunk to the next (gc.collect() allocates
            # nothing; heap_live() on MicroPython neither)
            gaps = sorted(counts[i + 1] - counts[i] for i in range(n - 1))
            per_chunk = gaps[len(gaps) // 2]
        return {"idle": idle, "peak": max(samples[:n]) if n else None,
                "chunks": seen[0], "published": relay.published, "failed": relay.failed,
                "alloc_per_chunk": per_chunk}
    finally:
        session.close()
        cam.close()


MODES = {"steps": mode_steps, "heap": mode_heap}


def main(argv):
    if len(argv) != 3 or argv[1] not in MODES:
        print("usage: snapdriver.py steps|heap JSON", file=sys.stderr)
        return 2
    result = MODES[argv[1]](json.loads(argv[2]))
    result["runtime"] = sys.implementation.name
    print(json.dumps(result))
    return 0


sys.exit(main(sys.argv))
