"""Action camera relay: CPU per Mbit/s, memory, clients at full frame rate, and latency.

The simulated camera streams a real 720p H.264 stream; `camhost actioncam serve`
(session + gst-rtsp-server child) relays it to RTSP clients that copy without
decoding (`ffmpeg -c copy -f null`), so the clients' cost stays out of the figure.
Baseline: the same H.264 sent over UDP at the same rate into
`ffmpeg -f h264 -i udp://... -c copy -f rtp`, the plain relay of the issue (its input
probe cut from 5 s to 0.5 s, else a short run is mostly probing).

Glass-to-client latency: every frame of the stream carries its index in the picture
(encode_test_stream(marks=True)); the simulator (or the baseline's sender) notes when
it starts sending each frame, and an ffmpeg client decodes the relayed stream to a
pipe, a strip with the marks per frame, timed as each strip arrives. Both clients are
the same ffmpeg with the same low-delay options; the relay's reads RTSP over TCP, the
baseline's reads the RTP its relay sends, from the SDP it writes.
"""
import bisect
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
from camhost.simactioncam import MARK_BITS, MARK_CELL, SimActionCam, encode_test_stream, read_mark

FPS = 25
HZ = os.sysconf("SC_CLK_TCK")
WARM_FRAMES = FPS       # decoded frames left out of the latency: probing's burst, the first GOP
# A latency client decodes as it receives: no probe buffer, one decoder thread (frame
# threads would hold frames back), and only the strip with the frame marks goes to the pipe,
# each frame as soon as it is decoded.
STRIP = (MARK_BITS * MARK_CELL, MARK_CELL // 2)
CLIENT_IN = ["ffmpeg", "-nostdin", "-loglevel", "error", "-fflags", "nobuffer",
             "-flags", "low_delay", "-threads", "1"]
CLIENT_OUT = ["-vf", "crop=%d:%d:0:0,format=gray" % STRIP, "-fps_mode", "passthrough",
              "-f", "rawvideo", "-flush_packets", "1", "-"]


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


class _Serving:
    """The simulated camera and `camhost actioncam serve` relaying it; .url is the RTSP URL.
    With `timed`, sim.send_times has the send time of every preview frame."""

    def __init__(self, h264, timed=False):
        self.sim = SimActionCam(h264, preview_port=_free_udp())
        if timed:
            self.sim.send_times = []
        self.sim.start()
        env = dict(os.environ, PYTHONPATH=os.path.join(common.ROOT, "hostside"))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "camhost", "actioncam", "--host", "127.0.0.1",
             "--control-port", str(self.sim.control_port), "serve", "--rtsp-port", "0",
             "--preview-port", str(self.sim.preview_port)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)

    def __enter__(self):
        try:
            self.url = self.proc.stdout.readline().decode().split()[1]
        except IndexError:
            self.__exit__()
            raise RuntimeError("camhost actioncam serve did not start")
        time.sleep(1.0)
        return self

    def __exit__(self, *exc):
        _end(self.proc)
        self.sim.close()


def _relay(h264, seconds, clients):
    with _Serving(h264) as serving:
        sim, proc = serving.sim, serving.proc
        pids = [proc.pid] + _children(proc.pid)
        results = {}
        threads = [threading.Thread(target=_client, args=(serving.url, seconds, results, i))
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


def _send_units(units, port, done, send_times=None):
    """Sends the access units over UDP at FPS, in 1000-byte datagrams, until done() is true;
    returns the number of units sent."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    t0, n = time.monotonic(), 0
    try:
        while not done():
            unit = units[n % len(units)]
            if send_times is not None:
                send_times.append(time.monotonic())
            for at in range(0, len(unit), 1000):
                sock.sendto(unit[at:at + 1000], ("127.0.0.1", port))
            n += 1
            delay = t0 + n / FPS - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    finally:
        sock.close()
    return n


def _plain_relay(port_in, port_out, sdp_file=None):
    """The issue's baseline: ffmpeg copying H.264 from UDP into RTP."""
    return subprocess.Popen(["ffmpeg", "-nostdin", "-loglevel", "error", "-analyzeduration",
                             "500000", "-f", "h264", "-i",     # ends 1 s after the input does
                             "udp://127.0.0.1:%d?timeout=1000000" % port_in,
                             "-c", "copy", "-f", "rtp"]
                            + (["-sdp_file", sdp_file] if sdp_file else [])
                            + ["rtp://127.0.0.1:%d" % port_out],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _baseline(h264, seconds):
    units = wire.access_units(h264)
    port = _free_udp()
    proc = _plain_relay(port, _free_udp())
    try:
        time.sleep(0.5)
        cpu0, t0 = _cpu_s([proc.pid]), time.monotonic()
        n = _send_units(units, port, lambda: time.monotonic() - t0 >= seconds)
        return {"cpu_s": _cpu_s([proc.pid]) - cpu0, "wall_s": time.monotonic() - t0,
                "frames_sent": n, "hwm_kib": _hwm_kib([proc.pid])}
    finally:
        _end(proc)


# --- glass-to-client latency --------------------------------------------------------------
def _arrivals(input_args, frames):
    """(arrival time, frame mark) of each of `frames` frames an ffmpeg client decodes, timed
    as its pipe delivers them."""
    proc = subprocess.Popen(CLIENT_IN + input_args + ["-frames:v", str(frames)] + CLIENT_OUT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    watchdog = threading.Timer(frames / FPS + 30, proc.kill)   # a stream that stops
    watchdog.start()
    size, got = STRIP[0] * STRIP[1], []
    try:
        while True:
            strip = proc.stdout.read(size)
            if len(strip) < size:
                break
            got.append((time.monotonic(), read_mark(strip)))
    finally:
        watchdog.cancel()
        _end(proc)
    return got


def _latency(arrivals, send_times, length):
    """Each decoded frame's delay after its send time, past WARM_FRAMES. A frame marked m
    is the last frame n = m (mod length) sent before it arrived (the stream loops every
    `length` frames, far longer than any delay); frames sent between the first and the
    last one matched that never arrived are lost."""
    delays, seen, unreadable = [], set(), 0
    for at, mark in arrivals[WARM_FRAMES:]:
        last = bisect.bisect_right(send_times, at) - 1
        n = last - (last - mark) % length if mark is not None else -1
        if n < 0:
            unreadable += 1
            continue
        delays.append(1000.0 * (at - send_times[n]))
        seen.add(n)
    out = {"n": len(delays), "unreadable": unreadable, "decoded": len(arrivals),
           "lost": max(seen) - min(seen) + 1 - len(seen) if seen else 0, "p50": None, "p99": None}
    if delays:
        out["p50"], out["p99"] = common.percentile(delays, 50), common.percentile(delays, 99)
    return out


def _relay_latency(h264, seconds):
    """Simulator's send -> camhost serve -> ffmpeg RTSP client over TCP -> decoded frame."""
    frames = WARM_FRAMES + int(seconds * FPS)
    with _Serving(h264, timed=True) as serving:
        arrivals = _arrivals(["-rtsp_transport", "tcp", "-i", serving.url], frames)
        send_times = list(serving.sim.send_times)     # the simulator keeps appending
    return _latency(arrivals, send_times, len(serving.sim.units))


def _baseline_latency(h264, seconds, work):
    """Paced UDP send -> ffmpeg -c copy -f rtp -> ffmpeg client of its SDP -> decoded frame."""
    units = wire.access_units(h264)
    frames = WARM_FRAMES + int(seconds * FPS)
    port, sdp = _free_udp(), os.path.join(work, "baseline.sdp")
    if os.path.exists(sdp):
        os.unlink(sdp)
    proc = _plain_relay(port, _free_udp(), sdp)
    send_times, stop = [], threading.Event()
    sender = threading.Thread(target=_send_units, args=(units, port, stop.is_set, send_times))
    try:
        time.sleep(0.5)
        sender.start()
        deadline = time.monotonic() + 10
        while not os.path.exists(sdp) and time.monotonic() < deadline:   # after ffmpeg's probe
            time.sleep(0.05)
        time.sleep(0.2)       # let ffmpeg finish writing it
        arrivals = _arrivals(["-protocol_whitelist", "file,udp,rtp", "-i", sdp], frames)
    finally:
        stop.set()
        if sender.is_alive():
            sender.join()
        _end(proc)
    return _latency(arrivals, list(send_times), len(units))


def run(seconds=8, client_counts=(1, 4, 8)):
    """`seconds` of relaying per client count, and of latency for the relay and the
    baseline (2 and (1,) for the smoke test)."""
    import shutil
    for tool in ("ffmpeg", "/usr/bin/python3"):
        if not shutil.which(tool):
            return section("Action camera relay", skipped="%s is not installed" % tool), {}
    work = tempfile.mkdtemp(prefix="camagent-bench-actioncam-")
    try:
        return _run(work, seconds, client_counts)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(work, seconds, client_counts):
    h264 = encode_test_stream(os.path.join(work, "t.h264"), seconds=4, noise=12, marks=True)
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
    raw["latency"] = {"relay": _relay_latency(h264, seconds),
                      "baseline": _baseline_latency(h264, seconds, work)}
    lat = raw["latency"]
    for p in ("p50", "p99"):
        figures.append(figure("glass-to-client latency %s" % p, lat["relay"][p], "ms",
                              lat["baseline"][p], "ffmpeg -c copy -f rtp"))
    notes = ["relay = camhost session (venv Python) + gst-rtsp-server child (system Python); "
             "clients alternate TCP and UDP; the baseline serves no RTSP client at all",
             "latency: simulator's send of a frame to its decode by an ffmpeg client (RTSP over "
             "TCP; the baseline's client reads its RTP), frames told apart by marks in the "
             "picture; n = %d and %d frames, lost %d and %d"
             % (lat["relay"]["n"], lat["baseline"]["n"], lat["relay"]["lost"],
                lat["baseline"]["lost"])]
    return section("Action camera relay", figures, notes), raw


if __name__ == "__main__":
    import json
    sec, raw = run()
    print(json.dumps({"section": sec, "raw": raw}, indent=1, default=str))
