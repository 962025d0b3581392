"""Action camera relay: CPU per Mbit/s, memory and clients at full frame rate.

The simulated camera streams a real 720p H.264 stream; `camhost actioncam serve`
(session + gst-rtsp-server child) relays it to RTSP clients that copy without
decoding (`ffmpeg -c copy -f null`), so the clients' cost stays out of the figure.
Baseline: the same H.264 sent over UDP at the same rate into
`ffmpeg -f h264 -i udp://... -c copy -f rtp`, the plain relay of the issue.
"""
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

import common  # noqa: F401  (import paths)
from table import figure, section

from camhost import actioncam_wire as wire
from camhost.simactioncam import SimActionCam, encode_test_stream

FPS = 25
HZ = os.sysconf("SC_CLK_TCK")


def _free_udp():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            kids = [int(x) for x in f.read().split()]
    except OSError:
        return []
    return kids + [k for c in kids for k in _children(c)]


def _cpu_s(pids):
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / HZ


def _hwm_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/status" % pid) as f:
                total += int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1))
        except (OSError, AttributeError):
            pass
    return total


def _client(url, seconds, out, key):
    p = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-stats", "-rtsp_transport",
                        "tcp" if key % 2 == 0 else "udp", "-i", url, "-t", str(seconds),
                        "-c", "copy", "-f", "null", "-"], capture_output=True, text=True,
                       timeout=seconds + 30)
    frames = re.findall(r"frame=\s*(\d+)", p.stderr)
    out[key] = int(frames[-1]) if frames else 0


def _end(proc):
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:   # ffmpeg blocked on its UDP input may ignore SIGTERM
        proc.kill()
        proc.wait()


def _relay(h264, seconds, clients):
    sim = SimActionCam(h264, preview_port=_free_udp()).start()
    env = dict(os.environ, PYTHONPATH=os.path.join(common.ROOT, "hostside"))
    proc = subprocess.Popen([sys.executable, "-m", "camhost", "actioncam", "--host", "127.0.0.1",
                             "--control-port", str(sim.control_port), "serve", "--rtsp-port", "0",
                             "--preview-port", str(sim.preview_port)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        url = proc.stdout.readline().decode().split()[1]
        time.sleep(1.0)
        pids = [proc.pid] + _children(proc.pid)
        results = {}
        threads = [threading.Thread(target=_client, args=(url, seconds, results, i))
                   for i in range(clients)]
        cpu0, t0, sent0 = _cpu_s(pids), time.monotonic(), sim.frames_sent
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        cpu, wall = _cpu_s(pids) - cpu0, time.monotonic() - t0
        frames = sim.frames_sent - sent0
        return {"cpu_s": cpu, "wall_s": wall, "frames_sent": frames, "hwm_kib": _hwm_kib(pids),
                "client_frames": [results.get(i, 0) for i in range(clients)]}
    finally:
        _end(proc)
        sim.close()


def _baseline(h264, seconds):
    units = wire.access_units(h264)
    port = _free_udp()
    proc = subprocess.Popen(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "h264", "-i",
                             "udp://127.0.0.1:%d" % port, "-c", "copy", "-f", "rtp",
                             "rtp://127.0.0.1:%d" % _free_udp()],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        time.sleep(0.5)
        cpu0, t0, n = _cpu_s([proc.pid]), time.monotonic(), 0
        while time.monotonic() - t0 < seconds:
            unit = units[n % len(units)]
            for at in range(0, len(unit), 1000):
                sock.sendto(unit[at:at + 1000], ("127.0.0.1", port))
            n += 1
            delay = t0 + n / FPS - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        return {"cpu_s": _cpu_s([proc.pid]) - cpu0, "wall_s": time.monotonic() - t0,
                "frames_sent": n, "hwm_kib": _hwm_kib([proc.pid])}
    finally:
        sock.close()
        _end(proc)


def run(seconds=8, client_counts=(1, 4, 8)):
    """`seconds` of relaying per client count (4 and (1,) for the smoke test)."""
    import shutil
    for tool in ("ffmpeg", "/usr/bin/python3"):
        if not shutil.which(tool):
            return section("Action camera relay", skipped="%s is not installed" % tool), {}
    work = tempfile.mkdtemp(prefix="camagent-bench-actioncam-")
    h264 = encode_test_stream(os.path.join(work, "t.h264"), seconds=4, noise=12)
    units = wire.access_units(h264)
    mbit_per_frame = sum(map(len, units)) * 8 / 1e6 / len(units)
    base = _baseline(h264, seconds)
    base_mbit = base["frames_sent"] * mbit_per_frame
    raw = {"baseline": base, "relay": {}}
    figures = [figure("stream bitrate", mbit_per_frame * FPS, "Mbit/s")]
    held = 0
    for n in client_counts:
        r = _relay(h264, seconds, n)
        raw["relay"][n] = r
        full = all(f >= 0.95 * FPS * seconds - FPS for f in r["client_frames"])
        if full:
            held = n
        if n == client_counts[0]:
            mbit = r["frames_sent"] * mbit_per_frame
            figures.append(figure("CPU per Mbit/s, 1 client", 1000 * r["cpu_s"] / mbit, "ms/Mbit",
                                  1000 * base["cpu_s"] / base_mbit, "ffmpeg -c copy -f rtp"))
            figures.append(figure("memory high-water, 1 client", r["hwm_kib"] / 1024.0, "MiB",
                                  base["hwm_kib"] / 1024.0, "ffmpeg -c copy -f rtp"))
    figures.append(figure("clients at full frame rate", held, "", target=(">=", 4)))
    notes = ["relay = camhost session (venv Python) + gst-rtsp-server child (system Python); "
             "clients alternate TCP and UDP; the baseline serves no RTSP client at all",
             "glass-to-client latency is not measured yet"]
    return section("Action camera relay", figures, notes), raw


if __name__ == "__main__":
    import json
    sec, raw = run()
    print(json.dumps({"section": sec, "raw": raw}, indent=1, default=str))
