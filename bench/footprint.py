"""Section 3: what the agent costs in flash and RAM.

Flash: every agent module compiled by mpy-cross 1.22 as `camhost image mpy`
compiles it (common.compile_agent), each size, the total, and the total
xz-compressed (xz's default preset, all modules in one stream: close to what the
xz squashfs does).

RAM, per runtime (driver.py memory): live heap after import, connected and idle,
and mid-move (after a full collection), bytes allocated per half-step while both
axes move (MicroPython's mem_total), and RSS. CPython figures are tracemalloc's
and are labelled CPython.

GC heap high-water (MicroPython): the smallest `-X heapsize` with which the real
agent (`micropython -m camagent`, the .mpy files) connects, carries out a pan/tilt
move to the end and publishes its state, without a reconnect or an error. The
heap limit is found by bisection, to 1 KiB; every try starts from the park
position with an empty state_dir, so every try moves. Only a MemoryError says a
heap is too small: any other failure (a lost connection, another exception, no
move) is tried once more and, if it happens again, ends the search with that
reason instead of passing for "does not fit". What ended each try is reported.
"""
import glob
import json
import lzma
import os
import shutil
import subprocess
import tempfile
import time

import paho.mqtt.client as paho

from broker import Mosquitto
import interpreters
from common import (AGENT, VENDOR, DriverError, ShmSysfs, Skip, compile_agent, cpython,
                    micropython)
from camhost import repack  # after common, which puts hostside/ on sys.path
from table import figure, section

XZ_TARGET = 16 * 1024
HEAP_TARGET = 64 * 1024
HEAP_SEARCH = (4 * 1024, 512 * 1024)
MOVE = {"pan": 200.0, "tilt": 20.0}   # degrees; park is 177.5/45: a move on both axes


# --- flash ----------------------------------------------------------------------------
def package_files(out, package):
    return sorted(glob.glob(os.path.join(out, package, "*.mpy")))


def xz_size(paths):
    data = b"".join(open(p, "rb").read() for p in paths)
    return len(lzma.compress(data, preset=6))


def module_xz(paths):
    """{module: what it adds to xz_size(paths)}: the bytes a module costs in the
    squashfs, shared strings and names counted once."""
    whole = xz_size(paths)
    return {os.path.basename(p): whole - xz_size([q for q in paths if q != p])
            for p in paths}


def source_lines():
    total = code = 0
    for path in glob.glob(os.path.join(AGENT, "camagent", "*.py")):
        with open(path) as f:
            for line in f:
                total += 1
                s = line.strip()
                if s and not s.startswith("#"):
                    code += 1
    return total, code


# --- RAM through the driver -----------------------------------------------------------
def driver_memory(rt, port, paths, device_id):
    with ShmSysfs() as fs:
        return rt.driver("memory", {"gpio_root": fs.gpio_root, "state_dir": fs.state_dir,
                                    "port": port, "device_id": device_id, "rate": 1000,
                                    "accel": 10000, "steps": 1000, "settle_us": 500000}, paths)


# --- heap high-water with the real agent ----------------------------------------------
class HeapProbe:
    """`micropython -X heapsize=N -m camagent` driven over MQTT: does it do a move?"""

    def __init__(self, mp, mpy_dir, port, fs):
        self.mp, self.mpy_dir, self.port, self.fs = mp, mpy_dir, port, fs
        self.cfg = os.path.join(fs.dir, "heap.json")
        with open(self.cfg, "w") as f:
            json.dump({"gpio_root": fs.gpio_root, "state_dir": fs.state_dir,
                       "device_id": "benchheap", "sd_reset_on_start": False,
                       "mqtt": {"host": "127.0.0.1", "port": port}}, f)
        self.base = "camagent/benchheap"

    def runs(self, heapsize, timeout_s=10):
        """What this heap size did: FITS, or (MEMORY or OTHER, the line that says why)
        when the agent did not connect, move to the target and publish it, cleanly."""
        # the last try's clean stop saved the target as the position: start from park again
        shutil.rmtree(self.fs.state_dir, ignore_errors=True)
        states, online = [], []

        def on_message(client, userdata, msg):
            if msg.topic.endswith("/state"):
                try:
                    states.append(json.loads(msg.payload))
                except ValueError:
                    pass
            elif msg.payload == b"online" and not msg.retain:
                online.append(1)

        subscribed = []
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-heap-probe")
        client.on_message = on_message
        client.on_subscribe = lambda *args: subscribed.append(1)
        client.connect("127.0.0.1", self.port, 60)
        client.subscribe([(self.base + "/state", 0), (self.base + "/availability", 0)])
        client.loop_start()
        deadline = time.monotonic() + 5
        while not subscribed and time.monotonic() < deadline:
            time.sleep(0.01)
        log = os.path.join(self.fs.dir, "heap.log")
        with open(log, "wb") as err:
            proc = subprocess.Popen(self.mp.command(["-m", "camagent", "-c", self.cfg], heapsize),
                                    env=self.mp.env([self.mpy_dir]), stdout=subprocess.DEVNULL,
                                    stderr=err)
        ok = False
        try:
            deadline = time.monotonic() + timeout_s
            while not online and time.monotonic() < deadline and proc.poll() is None \
                    and not _trouble(log):
                time.sleep(0.02)
            if online:
                client.publish(self.base + "/ptz/set", json.dumps(MOVE))
                start = len(states)
                while time.monotonic() < deadline and proc.poll() is None and not _trouble(log):
                    ours = [s for s in states[start:]
                            if s.get("commands", {}).get("accepted", 0) >= 1]
                    # a try counts only if it moved: states while moving, then one at rest
                    moved = [s for s in ours if s["pan"]["moving"] or s["tilt"]["moving"]]
                    if moved and not ours[-1]["pan"]["moving"] and not ours[-1]["tilt"]["moving"]:
                        ok = True
                        break
                    time.sleep(0.02)
            ok = ok and proc.poll() is None
        finally:
            if proc.poll() is None:
                proc.send_signal(2)   # SIGINT: the agent's normal stop
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            client.loop_stop()
            client.disconnect()
        with open(log, "rb") as f:
            text = f.read().decode(errors="replace")
        if ok and not _trouble(log) and len(online) == 1:
            return FITS, ""
        kind, line = ended_by(text)
        if line:
            return kind, line
        if len(online) > 1:
            return OTHER, "reconnected %d times" % (len(online) - 1)
        if proc.returncode not in (0, -2):
            return OTHER, "exited with status %s" % proc.returncode
        return OTHER, "no %s within %d s" % ("move" if online else "connection", timeout_s)


# How each try ended. MicroPython says "MemoryError: memory allocation failed, ..." in a
# traceback, and the agent logs the message of one it survives ("connection lost: ...").
FITS, MEMORY, OTHER = "fits", "MemoryError", "other failure"
MEMORY_WORDS = ("MemoryError", "memory allocation failed")
RETRIES = 1   # a non-memory failure is tried once more before it ends the search


def ended_by(text):
    """(MEMORY or OTHER, the line that says so) for the log of a failed try; the line is
    empty when the log names no trouble."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if any(word in line for word in MEMORY_WORDS):
            return MEMORY, line
    for line in lines:
        if any(word in line for word in TROUBLE_WORDS):
            return OTHER, line
    return OTHER, ""


TROUBLE_WORDS = ("Error", "connection lost", "retrying")


def _trouble(log):
    """The agent reported an error: a traceback, a lost connection, a failed connect."""
    with open(log, "rb") as f:
        text = f.read()
    return any(word in text for word in (b"Error", b"Traceback", b"connection lost",
                                         b"retrying"))


def min_heap(probe, tries):
    """(smallest heap that fits, None) or (None, why the search stopped); every try
    is appended to `tries` as (heapsize, how it ended, the log line that says so)."""
    def attempt(size):
        for _ in range(RETRIES + 1):
            kind, line = probe.runs(size)
            tries.append((size, kind, line))
            if kind != OTHER:
                return kind
        return OTHER

    lo, hi = HEAP_SEARCH
    if attempt(hi) != FITS:
        return None, "does not run even with -X heapsize=%d: %s" % (hi, tries[-1][2])
    while hi - lo > 1024:
        mid = (lo + hi) // 2 // 1024 * 1024
        kind = attempt(mid)
        if kind == FITS:
            hi = mid
        elif kind == MEMORY:
            lo = mid
        else:
            return None, ("with -X heapsize=%d the agent failed %d times for a reason "
                          "other than memory, so the search cannot tell: %s"
                          % (mid, RETRIES + 1, tries[-1][2]))
    return hi, None


def describe_tries(tries):
    """One note: each try's heap size and what ended it."""
    return "heap bisection tries (-X heapsize: outcome): " + "; ".join(
        "%d: %s%s" % (size, kind, " (%s)" % line if line and kind != FITS else "")
        for size, kind, line in tries)


# --- each way the agent ships: .mpy or frozen, on the lean interpreter ---------------
def measure_ship(rt, path_entry, port, device_id):
    """Heap high-water (bisection), live heap and RSS of one interpreter + agent."""
    got = {}
    try:
        m = driver_memory(rt, port, [path_entry], device_id)
    except DriverError as e:
        got["memory_failed"] = str(e)
    else:
        got.update(heap_after_move=m["heap_end"], rss_hwm_kb=m["rss_hwm_kb"],
                   rss_idle_kb=m["rss_idle_kb"])
    tries = []
    with ShmSysfs() as fs:
        got["min_heapsize"], got["heap_why"] = min_heap(HeapProbe(rt, path_entry, port, fs),
                                                        tries)
    got["heap_tries"] = describe_tries(tries)
    return got


# (what, key, unit, target on ARM)
SHIP_FIGURES = (("GC heap high-water, connect + discovery + move", "min_heapsize", "B",
                 ("<=", HEAP_TARGET)),
                ("live heap after the move", "heap_after_move", "B", None),
                ("RSS high-water", "rss_hwm_kb", "KiB", None))


def ship_rows(port, mpy_out, mpy_sizes, figures, notes):
    """Rows for (agent frozen into the interpreter) beside (agent as .mpy), per target."""
    raw = {}
    for target, cross, runner, why in interpreters.targets():
        if why is None:
            try:
                interpreters.source()
            except Skip as e:
                why = str(e)
        if why:
            notes.append("lean %s interpreter, .mpy vs frozen: skipped: %s" % (target, why))
            continue
        got = {}
        try:
            for way, entry in ((interpreters.MPY, mpy_out), (interpreters.FROZEN, ".frozen")):
                rt = interpreters.runtime(target, way)
                got[way] = measure_ship(rt, entry, port, "ship%s%s" % (target[0], way[0]))
                got[way]["interpreter_xz"] = interpreters.stripped_xz(rt.argv[-1], cross)
        except Skip as e:
            notes.append("lean %s interpreter, .mpy vs frozen: skipped: %s" % (target, e))
            continue
        raw[target] = got
        mpy, frozen = got[interpreters.MPY], got[interpreters.FROZEN]
        for way in (interpreters.MPY, interpreters.FROZEN):
            notes.append("lean %s, agent %s: %s" % (target, way, got[way]["heap_tries"]))
            if got[way]["heap_why"]:
                notes.append("lean %s, agent %s: GC heap high-water: failed: %s"
                             % (target, way, got[way]["heap_why"]))
            if "memory_failed" in got[way]:
                notes.append("lean %s, agent %s: live heap and RSS: failed: %s"
                             % (target, way, got[way]["memory_failed"]))
        for what, key, unit, target_op in SHIP_FIGURES:
            label = "%s%s" % (what, " (qemu-arm's own, emulator included)"
                              if runner and unit == "KiB" else "")
            figures.append(figure("lean %s, agent frozen: %s" % (target, label),
                                  frozen.get(key), unit, mpy.get(key), "agent as .mpy",
                                  target=target_op if target == "ARM" else None))
        # flash: what the squashfs holds either way
        loose = mpy["interpreter_xz"] + mpy_sizes["xz_with_umqtt"]
        figures.append(figure("lean %s, agent frozen: stripped interpreter, xz" % target,
                              frozen["interpreter_xz"], "B", loose,
                              "interpreter xz + agent and umqtt .mpy xz"))
    return raw


# --- the section ----------------------------------------------------------------------
def run(heap_search=True):
    figures, notes, raw = [], [], {}
    out = tempfile.mkdtemp(prefix="camagent-bench-mpy-")
    try:
        compile_agent(out)
        agent = package_files(out, "camagent")
        dep = package_files(out, "umqtt")
        sizes = {os.path.basename(p): os.path.getsize(p) for p in agent}
        total = sum(sizes.values())
        xz = xz_size(agent)
        dep_bytes = sum(os.path.getsize(p) for p in dep)
        raw["mpy"] = {"modules": sizes, "total": total, "xz": xz,
                      "umqtt_bytes": dep_bytes, "xz_with_umqtt": xz_size(agent + dep)}
        lines_out = out + "-lines"
        compile_agent(lines_out, ())   # mpy-cross's defaults: with line numbers
        raw["mpy"]["xz_line_numbers"] = xz_size(package_files(lines_out, "camagent"))
        raw["mpy"]["module_xz"] = module_xz(agent)
        figures.append(figure("agent .mpy total (%d modules)" % len(sizes), total, "B"))
        figures.append(figure("agent .mpy xz-compressed, as shipped (%s)"
                              % " ".join(repack.MPY_OPTS), xz, "B",
                              raw["mpy"]["xz_line_numbers"], "with line numbers",
                              target=("<=", XZ_TARGET)))
        figures.append(figure("agent + umqtt.simple .mpy xz-compressed",
                              raw["mpy"]["xz_with_umqtt"], "B"))
        notes.append("what each module adds to the agent's xz bytes (all modules' xz less "
                     "theirs without it): %s" % ", ".join(
                         "%s %d" % kv for kv in sorted(raw["mpy"]["module_xz"].items(),
                                                       key=lambda kv: -kv[1])))
        biggest = sorted(sizes.items(), key=lambda kv: -kv[1])
        notes.append("compiled as `camhost image mpy` compiles; .mpy bytes per module: %s"
                     % ", ".join("%s %d" % kv for kv in biggest))
        lines, code = source_lines()
        raw["source_lines"] = {"total": lines, "code": code}
        figures.append(figure("agent source lines (non-blank, non-comment)", code, "",
                              lines, "all lines"))
        with Mosquitto() as broker:
            mem = {}
            paths = {"CPython": [AGENT, VENDOR]}
            rts = [cpython()]
            try:
                mp = micropython()
                rts.append(mp)
                paths[mp.name] = [out]
            except Skip as e:
                mp = None
                notes.append("MicroPython RAM figures: skipped: %s" % e)
            for i, rt in enumerate(rts):
                try:
                    m = driver_memory(rt, broker.port, paths[rt.name], "mem%d" % i)
                except DriverError as e:
                    notes.append("%s RAM figures: failed: %s" % (rt.name, e))
                    continue
                mem[rt.name] = m
                label = rt.name + (" (tracemalloc)" if rt.name == "CPython" else "")
                figures.append(figure("%s live heap after import" % label, m["heap_import"], "B"))
                figures.append(figure("%s live heap idle, MQTT connected" % label,
                                      m["heap_idle"], "B"))
                figures.append(figure("%s live heap mid-move" % label, m["heap_moving"], "B"))
                if "heap_peak" in m:
                    figures.append(figure("%s heap peak" % label, m["heap_peak"], "B"))
                if "alloc_per_half_step" in m:
                    figures.append(figure("%s bytes allocated per half-step, moving" % rt.name,
                                          m["alloc_per_half_step"], "B"))
                figures.append(figure("%s RSS idle" % rt.name, m["rss_idle_kb"], "KiB"))
                figures.append(figure("%s RSS mid-move" % rt.name, m["rss_moving_kb"], "KiB"))
                figures.append(figure("%s RSS high-water" % rt.name, m["rss_hwm_kb"], "KiB"))
            raw["memory"] = mem
            if mp and heap_search:
                for key, mpy_dir, what in (("min_heapsize", out, "as shipped"),
                                           ("min_heapsize_line_numbers", lines_out,
                                            "with line numbers")):
                    tries = []
                    with ShmSysfs() as fs:
                        need, why = min_heap(HeapProbe(mp, mpy_dir, broker.port, fs), tries)
                    raw[key] = need
                    raw[key.replace("min_heapsize", "heap_tries")] = [
                        {"heapsize": size, "ended_by": kind, "log": line}
                        for size, kind, line in tries]
                    notes.append("%s: %s" % (what, describe_tries(tries)))
                    if need is None:
                        notes.append("GC heap high-water, %s: failed: %s" % (what, why))
                figures.append(figure("%s GC heap high-water (smallest -X heapsize for "
                                      "connect + move), as shipped" % mp.name,
                                      raw["min_heapsize"], "B",
                                      raw["min_heapsize_line_numbers"], "with line numbers",
                                      target=("<=", HEAP_TARGET)))
            if heap_search:
                raw["ships"] = ship_rows(broker.port, out, raw["mpy"], figures, notes)
            else:
                notes.append("agent .mpy vs frozen on the lean interpreter: skipped (no heap "
                             "search in this run)")
    finally:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(out + "-lines", ignore_errors=True)
    return section("Footprint", figures, notes), raw
