"""The benchmarks' inner half: runs agent code, and its floors, inside CPython or MicroPython.

    python driver.py MODE JSON          (PYTHONPATH=agent:build/vendor)
    micropython driver.py MODE JSON     (MICROPYPATH=agent:build/vendor, or .mpy dirs)

MODE is steps, memory, idle, stall or skip; the last line printed is the JSON result. The
host half (steps.py, footprint.py, idle.py) builds the fake sysfs and the broker
and does the statistics, so this file uses only what both runtimes have.
Counters come from the kernel (/proc/self/io, /proc/self/schedstat,
/proc/self/status), read outside the measured windows.
"""
import gc
import json
import sys

from timedgpio import Opener, intervals

try:
    import micropython
except ImportError:
    micropython = None


# --- kernel counters ------------------------------------------------------------------
def _proc_fields(name):
    with open("/proc/self/" + name) as f:
        text = f.read()
    fields = {}
    for line in text.split("\n"):
        key, _, value = line.partition(":")
        if value:
            fields[key.strip()] = value.strip()
    return fields


def write_syscalls():
    """write(2) calls this process has made (kernel task I/O accounting)."""
    return int(_proc_fields("io")["syscw"])


def cpu_ns():
    """CPU time this process has used, in ns (scheduler statistics)."""
    with open("/proc/self/schedstat") as f:
        return int(f.read().split()[0])


def status_kb(key):
    return int(_proc_fields("status")[key].split()[0])


def allocated():
    """Heap bytes allocated so far (MicroPython's memory statistics), else None."""
    return micropython.mem_total() if micropython and hasattr(micropython, "mem_total") \
        else None


def _delta(a, b):
    return None if a is None else b - a


def voluntary_switches():
    return int(_proc_fields("status")["voluntary_ctxt_switches"])


# --- agent config ---------------------------------------------------------------------
def bench_config(p, axis=None, mqtt=None):
    from camagent import config
    doc = {"gpio_root": p["gpio_root"], "state_dir": p["state_dir"],
           "device_id": p.get("device_id", "bench"), "sd_reset_on_start": False}
    if axis:
        doc["overrides"] = {"pan": axis, "tilt": axis}
    if mqtt:
        doc["mqtt"] = mqtt
    return config.parse(json.dumps(doc))


def fast_axis(rate, accel):
    """Axis settings for timing runs: a long soft range and a ramp of a few steps."""
    return {"min_steps": 0, "max_steps": 10000000, "park": 0, "speed": rate,
            "max_speed": max(rate, 4000), "start_speed": min(200, rate), "accel": accel}


# --- steps ----------------------------------------------------------------------------
def steps_agent(p, rate, n):
    """Both axes through the agent's Camera and Loop at `rate` for `n` half-steps each."""
    from camagent import boards
    from camagent.camera import Camera
    from camagent.compat import ticks_us, ticks_diff
    from camagent.gpio import Gpio
    from camagent.stepper import ramp_table
    cfg = bench_config(p, fast_axis(rate, p["accel"]))
    pins = boards.profile(cfg["board"], cfg["overrides"])["pins"]
    opener = Opener(pins["pan"], pins["tilt"], n + 8, ticks_us)
    cam = Camera(cfg, gpio=Gpio(cfg["gpio_root"], opener=opener))
    channel = None
    if p.get("local_port"):   # bench/localchan.py floods it while the axes step
        from camagent.localchan import start
        cfg["local_port"] = p["local_port"]
        channel = start(cam, cfg, None)
    try:
        pan, tilt, loop = cam.pan, cam.tilt, cam.loop
        start_pan, start_tilt = pan.steps, tilt.steps
        pan.move_to(start_pan + n + 16, rate)   # beyond the window: no braking inside it
        tilt.move_to(start_tilt + n + 16, rate)
        gc.collect()
        opener.arm(True)
        w0 = write_syscalls()
        m0 = allocated()
        while pan.steps - start_pan < n or tilt.steps - start_tilt < n:
            loop.run_once()
        m1 = allocated()
        w1 = write_syscalls()
        opener.arm(False)
        steps = pan.steps - start_pan + tilt.steps - start_tilt
    finally:
        if channel is not None:
            channel.close()
        cam.close()
    skip = len(ramp_table(min(200, rate), rate, p["accel"])) + 1
    return {"served": channel.served + channel.failed if channel else None,
            "half_steps": steps, "writes": w1 - w0, "skip": skip, "allocated": _delta(m0, m1),
            "logged": opener.logs[0].n + opener.logs[1].n,
            "intervals": [intervals(log, ticks_diff) for log in opener.logs]}


def steps_floor(p, rate, n):
    """The floor: a bare loop writing the same coil changes to the same files."""
    from camagent import boards
    from camagent.compat import ticks_us, ticks_diff, ticks_add, sleep_us
    from camagent.stepper import PHASES
    pins = boards.profile("imou-ranger-rc-4mp")["pins"]
    opener = Opener(pins["pan"], pins["tilt"], n + 8, ticks_us)
    axes = []
    for name in ("pan", "tilt"):
        files = [opener("%s/gpio%d/value" % (p["gpio_root"], pin), "wb", 0) for pin in pins[name]]
        axes.append(files)
    # phase k -> (line, level) written to reach phase k+1, as the agent half-steps
    lines, levels = [], []
    for k in range(8):
        diff = PHASES[k] ^ PHASES[(k + 1) & 7]
        line = 0
        while not diff >> line & 1:
            line += 1
        lines.append(line)
        levels.append(b"1" if PHASES[(k + 1) & 7] & diff else b"0")
    pan, tilt = axes
    for files in axes:                       # energise phase 0, outside the window
        for i in range(4):
            files[i].seek(0)
            files[i].write(b"1" if PHASES[0] >> i & 1 else b"0")
    interval = 1000000 // rate
    gc.collect()
    opener.arm(True)
    w0 = write_syscalls()
    m0 = allocated()
    due = ticks_add(ticks_us(), interval)
    phase = 0
    for _ in range(n):
        wait = ticks_diff(due, ticks_us())
        if wait > 0:
            sleep_us(wait)
        now = ticks_us()
        line, level = lines[phase], levels[phase]
        f = pan[line]
        f.seek(0)
        f.write(level)
        f = tilt[line]
        f.seek(0)
        f.write(level)
        phase = (phase + 1) & 7
        due = ticks_add(due, interval)
        if ticks_diff(due, now) <= 0:        # late by more than a step: no burst (as the agent)
            due = ticks_add(now, interval)
    m1 = allocated()
    w1 = write_syscalls()
    opener.arm(False)
    for files in axes:
        for f in files:
            f.seek(0)
            f.write(b"0")
            f.close()
    return {"half_steps": 2 * n, "writes": w1 - w0, "skip": 1, "allocated": _delta(m0, m1),
            "logged": opener.logs[0].n + opener.logs[1].n,
            "intervals": [intervals(log, ticks_diff) for log in opener.logs]}


def mode_steps(p):
    """Agent and floor alternately, `repeats` times per rate, so both see the same noise."""
    runs = []
    base_state = p["state_dir"]
    for rate in p["rates"]:
        n = max(16, int(rate * p["duration_s"]))
        for rep in range(p.get("repeats", 1)):
            p["state_dir"] = "%s/steps-%d-%d" % (base_state, rate, rep)  # a fresh position file
            runs.append({"rate": rate, "agent": steps_agent(p, rate, n),
                         "floor": steps_floor(p, rate, n)})
    return {"runs": runs}


# --- memory ---------------------------------------------------------------------------
def heap_live():
    """Bytes of live heap objects now (after a full collection)."""
    gc.collect()
    if micropython:
        return gc.mem_alloc()
    import tracemalloc
    return tracemalloc.get_traced_memory()[0]


class Deadline:
    """A loop device due at one moment: the loop cannot sleep past it.

    Once passed it stays due, so the loop pass that runs it returns without waiting.
    """

    def __init__(self, at):
        self.due = at
        self.passed = False

    def tick(self, now):
        self.passed = True


def run_loop_until(loop, condition, limit_us):
    """Run the loop until condition() holds (True) or limit_us have passed (False)."""
    from camagent.compat import ticks_add, ticks_us
    deadline = Deadline(ticks_add(ticks_us(), limit_us))
    loop.add(deadline)
    try:
        while not condition():
            if deadline.passed:
                return False
            loop.run_once()
        return True
    finally:
        loop.remove(deadline)


def never():
    return False


def mode_memory(p):
    """Live heap after import, idle (MQTT connected if a broker is given) and mid-move."""
    if not micropython:
        import tracemalloc
        tracemalloc.start()
    base = heap_live()
    from camagent.camera import Camera
    mqtt = None
    if p.get("port"):
        from camagent.mqtt import Session
        mqtt = {"host": "127.0.0.1", "port": p["port"], "keepalive": 60,
                "discovery": p.get("discovery", True)}
    out = {"heap_import": heap_live() - base}
    cfg = bench_config(p, fast_axis(p["rate"], p["accel"]), mqtt)
    cam = Camera(cfg)
    session = Session(cam, cfg) if mqtt else None
    loop = cam.loop
    try:
        cam.start()
        if session and not run_loop_until(loop, lambda: session.connected, 5000000):
            raise SystemExit("memory: no MQTT connection within 5 s")
        run_loop_until(loop, never, p["settle_us"])
        out["heap_idle"] = heap_live() - base
        out["rss_idle_kb"] = status_kb("VmRSS")
        n = p["steps"]
        pan, tilt = cam.pan, cam.tilt
        pan.move_to(pan.steps + n)
        tilt.move_to(tilt.steps + n)
        first = pan.steps
        run_loop_until(loop, lambda: pan.steps - first >= 8, 5000000)
        mark = pan.steps
        total0 = allocated()
        run_loop_until(loop, lambda: pan.steps - first >= n // 2, 60000000)
        if total0 is not None:
            # bytes allocated over the window, per half-step of either axis
            out["alloc_per_half_step"] = (allocated() - total0) / (2.0 * (pan.steps - mark))
        out["heap_moving"] = heap_live() - base
        out["rss_moving_kb"] = status_kb("VmRSS")
        if not run_loop_until(loop, lambda: not cam.moving, 60000000):
            raise SystemExit("memory: the moves did not finish")
        if session:
            run_loop_until(loop, lambda: session._publish_at is None, 2000000)
            out["mqtt_connects"] = session.connects
            out["mqtt_connected"] = session.connected
        out["heap_end"] = heap_live() - base
        out["rss_hwm_kb"] = status_kb("VmHWM")
        if not micropython:
            import tracemalloc
            out["heap_peak"] = tracemalloc.get_traced_memory()[1] - base
    finally:
        if session:
            session.close()
        cam.close()
    return out


# --- idle -----------------------------------------------------------------------------
def mode_idle(p):
    """Connected and idle: loop wakeups, voluntary context switches and CPU over a window."""
    from camagent.camera import Camera
    from camagent.compat import ticks_us, ticks_diff
    from camagent.mqtt import Session, heartbeat_s
    mqtt = {"host": "127.0.0.1", "port": p["port"], "keepalive": p["keepalive"],
            "discovery": p.get("discovery", True)}
    cfg = bench_config(p, None, mqtt)
    cam = Camera(cfg)
    session = Session(cam, cfg)
    loop = cam.loop
    try:
        cam.start()
        if not run_loop_until(loop, lambda: session.connected, 5000000):
            raise SystemExit("idle: no MQTT connection within 5 s")
        run_loop_until(loop, never, p["warm_us"])
        if p.get("align", True):
            loop.run_once()   # up to the next wakeup: the window starts with a whole period
        # each loop pass ends in a wait and its wakeup: the window counts whole periods
        wakeups0, cpu0, switches0 = loop.wakeups, cpu_ns(), voluntary_switches()
        t0 = ticks_us()
        while ticks_diff(ticks_us(), t0) < p["window_us"]:
            loop.run_once()
        t1 = ticks_us()
        wakeups1, cpu1, switches1 = loop.wakeups, cpu_ns(), voluntary_switches()
        connects = session.connects
    finally:
        session.close()
        cam.close()
    return {"wakeups": wakeups1 - wakeups0, "window_us": ticks_diff(t1, t0),
            "cpu_ns": cpu1 - cpu0, "switches": switches1 - switches0,
            "heartbeat_s": heartbeat_s(p["keepalive"], cfg["mqtt"]["state_interval"])[0],
            "connects": connects}


# --- stall and skip: a misbehaving broker (bench/stall.py) --------------------------------
def connected_session(p, axis=None):
    """Camera and MQTT session (no discovery) connected to the broker at p["port"]."""
    from camagent.camera import Camera
    from camagent.mqtt import Session
    from camagent.gpio import Gpio
    from camagent import boards
    from camagent.compat import ticks_us
    cfg = bench_config(p, axis, {"host": "127.0.0.1", "port": p["port"], "keepalive": 60,
                                 "discovery": False})
    pins = boards.profile(cfg["board"], cfg["overrides"])["pins"]
    opener = Opener(pins["pan"], pins["tilt"], p.get("steps", 0) + 8, ticks_us)
    cam = Camera(cfg, gpio=Gpio(cfg["gpio_root"], opener=opener))
    session = Session(cam, cfg)
    if not run_loop_until(cam.loop, lambda: session.connected, 5000000):
        session.close()
        cam.close()
        raise SystemExit("no MQTT connection within 5 s")
    return cam, session, opener


def mode_stall(p):
    """Both axes step at p["rate"] while the broker does whatever its script does."""
    from camagent.compat import ticks_diff
    cam, session, opener = connected_session(p, fast_axis(p["rate"], p["accel"]))
    try:
        n = p["steps"]
        pan, tilt, loop = cam.pan, cam.tilt, cam.loop
        run_loop_until(loop, never, p["settle_us"])   # the broker's script gets going
        start_pan, start_tilt = pan.steps, tilt.steps
        pan.move_to(start_pan + n + 16, p["rate"])
        tilt.move_to(start_tilt + n + 16, p["rate"])
        opener.arm(True)
        while pan.steps - start_pan < n or tilt.steps - start_tilt < n:
            loop.run_once()
        opener.arm(False)
        lost = session.connects > 1 or not session.connected
    finally:
        session.close()
        cam.close()
    from camagent.stepper import ramp_table
    return {"skip": len(ramp_table(min(200, p["rate"]), p["rate"], p["accel"])) + 1,
            "intervals": [intervals(log, ticks_diff) for log in opener.logs], "lost": lost}


class HeapSampler:
    """A loop device that records the most heap in use, every `every_us`."""

    def __init__(self, clock, every_us):
        from camagent.compat import ticks_add
        self._add = ticks_add
        self.clock = clock
        self.every = every_us
        self.due = clock()
        self.peak = 0

    def tick(self, now):
        if micropython:
            used = gc.mem_alloc()
        else:
            import tracemalloc
            used = tracemalloc.get_traced_memory()[0]
        if used > self.peak:
            self.peak = used
        self.due = self._add(now, self.every)


def mode_skip(p):
    """Heap while idle, then while a huge message (the broker's script) is skipped."""
    if not micropython:
        import tracemalloc
        tracemalloc.start()
    cam, session, opener = connected_session(p)
    loop = cam.loop
    try:
        gc.collect()
        sampler = HeapSampler(loop.clock, p["sample_us"])
        loop.add(sampler)
        run_loop_until(loop, never, p["idle_us"])        # before the message comes
        idle, sampler.peak = sampler.peak, 0
        sampler.tick(loop.clock())
        total0 = allocated()
        if not run_loop_until(loop, lambda: session.commands.rejected > 0, p["limit_us"]):
            raise SystemExit("skip: the message was not answered in time")
        total1 = allocated()
        sampler.tick(loop.clock())
        out = {"peak_idle": idle, "peak_skipping": sampler.peak,
               "allocated_skipping": _delta(total0, total1),
               "connects": session.connects, "rss_hwm_kb": status_kb("VmHWM")}
    finally:
        session.close()
        cam.close()
    return out


MODES = {"steps": mode_steps, "memory": mode_memory, "idle": mode_idle, "stall": mode_stall,
         "skip": mode_skip}


def main(argv):
    if len(argv) != 3 or argv[1] not in MODES:
        print("usage: driver.py %s JSON" % "|".join(MODES), file=sys.stderr)
        return 2
    result = MODES[argv[1]](json.loads(argv[2]))
    result["runtime"] = sys.implementation.name
    print(json.dumps(result))
    return 0


sys.exit(main(sys.argv))
