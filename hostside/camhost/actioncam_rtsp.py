#!/usr/bin/python3
"""The RTSP server of `camhost actioncam serve`: GStreamer's gst-rtsp-server.

Runs as a child process under the system's Python (/usr/bin/python3), which has
Debian's GObject bindings (python3-gi, gir1.2-gst-rtsp-server-1.0); camhost's venv
need not see them. It reads access units from stdin, each framed as
    length u32 | 90 kHz camera clock u64   (big-endian), then the Annex-B bytes
and serves them as one shared media:
    appsrc ! h264parse ! rtph264pay (RFC 6184: FU-A, marker bit, SPS/PPS in the SDP)
to any number of clients, over TCP-interleaved and UDP. It prints
"ready rtsp://HOST:PORT/PATH" once listening, and ends when stdin closes.

    /usr/bin/python3 actioncam_rtsp.py [--host 127.0.0.1] [--port 8554] [--path /preview]
"""
import argparse
import struct
import sys
import threading

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
gi.require_version("GstRtsp", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

FRAME = struct.Struct(">IQ")
MAX_UNIT = 8 << 20   # an access unit larger than this means the framing is lost
NS_PER_TICK = 1e9 / 90000

# SPS/PPS go in-band once per keyframe from h264parse; rtph264pay's own config-interval
# would repeat them before every IDR slice, and clients then split a multi-slice
# keyframe into two broken pictures.
PIPELINE = ("( appsrc name=src is-live=true format=time do-timestamp=false "
            "caps=video/x-h264,stream-format=byte-stream,alignment=au "
            "! h264parse config-interval=-1 "
            "! rtph264pay name=pay0 pt=96 mtu=%d aggregate-mode=zero-latency )")


def _is_keyframe(unit):
    """An IDR slice or SPS in the unit: where a new client's decoder can start."""
    i = unit.find(b"\x00\x00\x01")
    while i >= 0 and i + 3 < len(unit):
        if unit[i + 3] & 0x1F in (5, 7):
            return True
        i = unit.find(b"\x00\x00\x01", i + 3)
    return False


class Feed:
    """Hands access units to the media's appsrc, on the camera's clock.

    The media (one, shared by every client) is made when the first client arrives and
    dropped when the last leaves. A new appsrc gets units from the next keyframe on; its
    first unit is stamped with the pipeline's running time and the camera's clock spaces
    the rest, so RTP timestamps follow the camera.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.src = None
        self.offset_ns = None
        self.units = 0
        self.pushed = 0

    def attach(self, src):
        with self.lock:
            self.src, self.offset_ns = src, None

    def detach(self, src):
        with self.lock:
            if self.src is src:
                self.src = None

    def push(self, clock, unit):
        self.units += 1
        with self.lock:
            src = self.src
            if src is None:
                return
            if self.offset_ns is None:
                if not _is_keyframe(unit):
                    return
                now = src.get_current_running_time()
                now = 0 if now in (None, Gst.CLOCK_TIME_NONE) else now
                self.offset_ns = now - int(clock * NS_PER_TICK)
            pts = int(clock * NS_PER_TICK) + self.offset_ns
        if pts < 0:
            return
        buf = Gst.Buffer.new_wrapped(unit)
        buf.pts = pts
        buf.dts = pts
        if src.emit("push-buffer", buf) == Gst.FlowReturn.OK:
            self.pushed += 1


def serve(host, port, path, mtu, stream):
    Gst.init(None)
    feed = Feed()
    server = GstRtspServer.RTSPServer()
    server.set_address(host)
    server.set_service(str(port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE % mtu)
    factory.set_shared(True)
    factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP | GstRtsp.RTSPLowerTrans.UDP)

    def configured(_factory, media):
        src = media.get_element().get_by_name("src")
        feed.attach(src)
        media.connect("unprepared", lambda _m: feed.detach(src))

    factory.connect("media-configure", configured)
    server.get_mount_points().add_factory(path, factory)
    if server.attach(None) == 0:
        sys.stderr.write("actioncam_rtsp: cannot listen on %s:%s\n" % (host, port))
        return 1
    loop = GLib.MainLoop()

    def read():
        try:
            while True:
                head = stream.read(FRAME.size)
                if len(head) < FRAME.size:
                    break
                length, clock = FRAME.unpack(head)
                if length > MAX_UNIT:
                    sys.stderr.write("actioncam_rtsp: access unit of %d bytes: framing lost\n" % length)
                    break
                unit = stream.read(length)
                if len(unit) < length:
                    break
                feed.push(clock, unit)
        finally:
            GLib.idle_add(loop.quit)

    threading.Thread(target=read, daemon=True).start()
    print("ready rtsp://%s:%d%s" % (host, server.get_bound_port(), path), flush=True)
    loop.run()
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="actioncam_rtsp.py", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=8554, help="RTSP port, 0 for any free one")
    p.add_argument("--path", default="/preview", help="mount point (default %(default)s)")
    p.add_argument("--mtu", type=int, default=1400, help="largest RTP packet (default %(default)s)")
    args = p.parse_args(argv)
    return serve(args.host, args.port, args.path, args.mtu, sys.stdin.buffer)


if __name__ == "__main__":
    sys.exit(main())
