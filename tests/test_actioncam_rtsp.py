"""`camhost actioncam serve`: real ffmpeg clients read our RTSP stream over TCP and UDP at once.

The simulated camera streams a real 720p H.264 stream (ffmpeg's test source, I-frames
well over the 1500-byte MTU) as the documented preview packets; `camhost actioncam
serve` relays it through gst-rtsp-server; ffmpeg decodes it and every decoded frame
is checked for count and size (1280x720 yuv420p = 1382400 bytes).
"""
import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from camhost import actioncam_wire as wire
from camhost.simactioncam import MARK_BITS, MARK_CELL, SimActionCam, encode_test_stream, read_mark

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAME_BYTES = 1280 * 720 * 3 // 2
FRAMES = 40
BOUND_S = 60

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/bin/python3") or
                                subprocess.run(["/usr/bin/python3", "-c",
                                                "import gi; gi.require_version('GstRtspServer', '1.0')"],
                                               capture_output=True).returncode,
                                reason="needs Debian's python3-gi and gir1.2-gst-rtsp-server-1.0")


@pytest.fixture(scope="module")
def h264(tmp_path_factory):
    return encode_test_stream(str(tmp_path_factory.mktemp("h264") / "t.h264"), seconds=4)


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    """`camhost actioncam serve` as the user runs it, against `sim`."""

    def __init__(self, sim):
        env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "hostside"))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "camhost", "actioncam", "--host", "127.0.0.1",
             "--control-port", str(sim.control_port), "serve", "--rtsp-port", "0",
             "--preview-port", str(sim.preview_port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        lines = []
        t = threading.Thread(target=lambda: lines.append(self.proc.stdout.readline()), daemon=True)
        t.start()
        t.join(30)
        line = lines[0].decode() if lines else ""
        if not line.startswith("serving "):
            self.close()
            raise AssertionError("serve did not start: %r %s" % (line, self.proc.stderr.read()))
        self.url = line.split()[1]

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(params=["ms"])
def served(h264, request):
    sim = SimActionCam(h264, preview_port=free_udp_port(), clock=request.param)
    with sim:
        serve = Serve(sim)
        try:
            yield sim, serve
        finally:
            serve.close()


def decode(url, transport, frames=FRAMES, result=None):
    """Sizes of `frames` decoded frames (framecrc: one line per frame)."""
    p = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-rtsp_transport", transport,
                        "-i", url, "-frames:v", str(frames), "-f", "framecrc", "-"],
                       capture_output=True, text=True, timeout=BOUND_S)
    sizes = [int(line.split(",")[4]) for line in p.stdout.splitlines()
             if line and not line.startswith("#")]
    out = (p.returncode, sizes, p.stderr)
    if result is not None:
        result[transport] = out
    return out


def describe(url):
    host, port = re.match(r"rtsp://([^:/]+):(\d+)", url).groups()
    with socket.create_connection((host, int(port)), timeout=BOUND_S) as s:
        s.sendall(("DESCRIBE %s RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n" % url).encode())
        data = b""
        while b"\r\n\r\n" not in data or not re.search(rb"m=video.*\r\n(.*\r\n)*a=", data, re.S):
            block = s.recv(4096)
            if not block:
                break
            data += block
            if b"a=control" in data.split(b"m=video")[-1]:
                break
        return data.decode(errors="replace")


def test_the_test_stream_has_frames_over_the_mtu(h264):
    units = wire.access_units(h264)
    assert len(units) == 100 and max(len(u) for u in units) > 1500


def test_tcp_and_udp_clients_decode_at_the_same_time(served):
    sim, serve = served
    results = {}
    clients = [threading.Thread(target=decode, args=(serve.url, t, FRAMES, results))
               for t in ("tcp", "udp")]
    for c in clients:
        c.start()
    for c in clients:
        c.join(BOUND_S + 5)
    for transport in ("tcp", "udp"):
        rc, sizes, err = results[transport]
        assert rc == 0, err
        assert len(sizes) == FRAMES and set(sizes) == {FRAME_BYTES}, (transport, sizes[:3], err)


def test_sdp_carries_sps_pps_and_h264(served):
    _, serve = served
    sdp = describe(serve.url)
    assert "RTSP/1.0 200 OK" in sdp
    assert re.search(r"a=rtpmap:96 H264/90000", sdp)
    assert re.search(r"sprop-parameter-sets=[A-Za-z0-9+/=]+,[A-Za-z0-9+/=]+", sdp), sdp
    assert "packetization-mode=1" in sdp   # FU-A


def test_a_stream_with_garbage_types_still_decodes(served):
    sim, serve = served
    sim.preview_fault = "garbage_types"
    rc, sizes, err = decode(serve.url, "tcp", 20)
    assert rc == 0, err
    assert len(sizes) == 20 and set(sizes) == {FRAME_BYTES}


def test_several_clients_one_after_another(served):
    _, serve = served
    for _ in range(2):
        rc, sizes, err = decode(serve.url, "udp", 10)
        assert rc == 0 and len(sizes) == 10, err


def test_a_stalled_preview_is_restarted_and_clients_resume(served):
    sim, serve = served
    sim.preview_fault = "stall"
    deadline = time.monotonic() + BOUND_S
    while sim.logins < 2 and time.monotonic() < deadline:   # the relay logs in again
        time.sleep(0.05)
    assert sim.logins >= 2
    sim.preview_fault = None
    rc, sizes, err = decode(serve.url, "tcp", 10)
    assert rc == 0 and len(sizes) == 10 and set(sizes) == {FRAME_BYTES}, err


@pytest.mark.parametrize("served", ["ms", "ticks"], indirect=True)
def test_rtp_timestamps_are_the_camera_clock_in_either_unit(served):
    """Packet times straight from the RTP timestamps (90 kHz): exactly one 25 fps frame
    period apart, which arrival times on a shared machine never are."""
    _, serve = served
    p = subprocess.run(["ffprobe", "-loglevel", "error", "-rtsp_transport", "tcp", "-i", serve.url,
                        "-select_streams", "v", "-show_entries", "packet=pts",
                        "-read_intervals", "%+#12", "-of", "csv=p=0"],
                       capture_output=True, text=True, timeout=BOUND_S)
    pts = [int(x) for x in p.stdout.split() if x.isdigit()]
    assert len(pts) >= 10, p.stderr
    assert set(b - a for a, b in zip(pts, pts[1:])) == {90000 // 25}, pts


def test_multi_slice_frames_arrive_whole_and_in_order(tmp_path):
    """Every frame in three slices, its index drawn in the picture: each decoded frame must
    be the one after the last. A keyframe whose slices a client takes for two pictures (as
    when the payloader repeated SPS/PPS before each IDR slice) breaks the sequence."""
    h264 = encode_test_stream(str(tmp_path / "m.h264"), seconds=4, size="320x240",
                              marks=True, slices=3)
    units = wire.access_units(h264)
    assert all(sum(1 for n in wire.nal_units(u) if n and n[0] & 0x1F in (1, 5)) == 3
               for u in units)
    strip = (MARK_BITS * MARK_CELL, MARK_CELL // 2)
    with SimActionCam(h264, preview_port=free_udp_port()) as sim:
        serve = Serve(sim)
        try:
            p = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-rtsp_transport",
                                "tcp", "-i", serve.url, "-frames:v", "60", "-vf",
                                "crop=%d:%d:0:0,format=gray" % strip, "-f", "rawvideo", "-"],
                               capture_output=True, timeout=BOUND_S)
        finally:
            serve.close()
    size = strip[0] * strip[1]
    marks = [read_mark(p.stdout[at:at + size]) for at in range(0, len(p.stdout), size)]
    assert len(marks) == 60, p.stderr
    assert all(b == (a + 1) % len(units) for a, b in zip(marks, marks[1:])), marks
