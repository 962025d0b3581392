"""A simulated ToupCam wifi microscope camera, written from protocols/toupcam.md.

SimToupCam serves, on loopback and free ports unless told otherwise:
  snap      TCP (555): a request starting with "GE" (complete when its framing, "GE" +
            u32 length + body, has come, or after 0.2 s of quiet), or exactly `request`, is
            answered with the nested length-prefixed layers around a real JPEG, shaped
            as in the published capture by default (JPEG at 0x6D, layer lengths
            JPEG+0x21 and JPEG+0x11); `head`, `headers` and `gap` change the shape;
            the reply goes out in `chunk`-byte writes (or a list of sizes, the last
            one repeated), `chunk_pause_s` apart
  controls  UDP (12000): register writes `00 00 00 00 02 <reg> 04 <u32>` are applied
            and reported back at once; every `report_interval_s` each register is
            reported, one per datagram, to `report_to` and to everyone who wrote
Bad behaviour on demand, settable while running: `fault` for snaps, "truncated" (half
the reply, then close), "wrong_length" (the outer layer's length off by 7), "no_jpeg"
(a reply with no GEPJ layer), "not_jpeg" (SOI present, but no EOI where the length
says), "silent" (accepts, never answers); `udp_fault` for controls, "silent" (reports
nothing, ignores writes), "ignore_writes" (reports, but keeps its values), "garbage" (a
malformed packet before each round of reports).
"""
import socket
import subprocess
import threading
import time

from . import toupcam_wire as wire

CAPTURE_HEAD = b"\x00" * 2 + bytes(range(0x10, 0x10 + 68))   # 70 bytes: outer length at 72
CAPTURE_HEADERS = (bytes(range(0xA0, 0xAC)),)               # 12 bytes in the outer layer
CAPTURE_GAP = b"\x00\x01\x00\x00\x00\x00\x00\x00\x01"        # 9 bytes before the SOI
SNAP_FAULTS = ("truncated", "wrong_length", "no_jpeg", "not_jpeg", "silent")
UDP_FAULTS = ("silent", "ignore_writes", "garbage")


class SimToupCam:
    def __init__(self, jpeg, host="127.0.0.1", snap_port=0, control_port=0, request=None,
                 registers=None, report_to=(), report_interval_s=0.5, head=CAPTURE_HEAD,
                 headers=CAPTURE_HEADERS, gap=CAPTURE_GAP, chunk=65536, chunk_pause_s=0.0):
        self.jpeg = jpeg
        self.host = host
        self.request = request
        self.registers = dict(registers if registers is not None else
                              {0x01: 58000, 0x03: 180, 0x0A: 700})
        self.report_to = list(report_to)
        self.report_interval_s = report_interval_s
        self.head, self.headers, self.gap = head, headers, gap
        self.chunk, self.chunk_pause_s = chunk, chunk_pause_s
        self.fault = None
        self.udp_fault = None
        self.snaps = 0
        self.requests = []          # the bytes of every snap request
        self.writes = []            # (reg, value) of every register write
        self._stop = threading.Event()
        self._threads = []
        self._lock = threading.Lock()

        self.snap = socket.socket()
        self.snap.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.snap.bind((host, snap_port))
        self.snap.listen(4)
        self.snap.settimeout(0.2)
        self.snap_port = self.snap.getsockname()[1]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.udp.bind((host, control_port))
        self.udp.settimeout(0.05)
        self.control_port = self.udp.getsockname()[1]

    def reply(self):
        """The bytes of one snap reply, with `fault` applied."""
        data = wire.build_reply(self.jpeg, self.head, self.headers, self.gap)
        if self.fault == "wrong_length":
            at = wire.parse_head(data).layers[0][0]
            n = wire.LENGTH.unpack_from(data, at)[0]
            data = data[:at] + wire.LENGTH.pack(n + 7) + data[at + 4:]
        elif self.fault == "no_jpeg":
            data = wire.REPLY_MAGIC + self.head + wire.LENGTH.pack(16) + b"\x00" * 16
        elif self.fault == "not_jpeg":
            data = data[:-2] + b"\x00\x00"
        return data

    # --- life -------------------------------------------------------------------------
    def start(self):
        for target in (self._serve_snaps, self._serve_controls, self._report_loop):
            t = threading.Thread(target=target, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def close(self):
        self._stop.set()
        for t in self._threads:
            t.join(5)
        self.snap.close()
        self.udp.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # --- snaps ------------------------------------------------------------------------
    def _serve_snaps(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.snap.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._snap_session, args=(conn,), daemon=True).start()

    def _snap_session(self, conn):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(0.2)
        want = len(self.request) if self.request else len(wire.REPLY_MAGIC)
        buf = b""
        try:
            while not self._stop.is_set():
                try:
                    block = conn.recv(4096)
                except socket.timeout:
                    if len(buf) >= want:
                        break          # the request is what came
                    continue
                if not block:
                    return
                buf += block
                if self.request and (len(buf) >= want or not self.request.startswith(buf)):
                    break
                if not self.request and _framed(buf):
                    break              # "GE" + a length + that many bytes: complete
            self.requests.append(buf)
            ok = buf == self.request if self.request else buf.startswith(wire.REPLY_MAGIC)
            if not ok:
                return                 # the camera closes on a request it does not know
            if self.fault == "silent":
                while not self._stop.is_set():   # holds the connection, says nothing
                    try:
                        if not conn.recv(4096):
                            return
                    except socket.timeout:
                        continue
            data = self.reply()
            if self.fault == "truncated":
                data = data[:len(data) // 2]
            self.snaps += 1
            sizes = list(self.chunk) if isinstance(self.chunk, (list, tuple)) else [self.chunk]
            at, n = 0, 0
            while at < len(data):
                size = sizes[min(n, len(sizes) - 1)]
                conn.sendall(data[at:at + size])
                at, n = at + size, n + 1
                if self.chunk_pause_s:
                    time.sleep(self.chunk_pause_s)
        except OSError:
            pass
        finally:
            conn.close()

    # --- controls ---------------------------------------------------------------------
    def _send(self, packet, peer):
        try:
            self.udp.sendto(packet, peer)
        except OSError:
            pass

    def _serve_controls(self):
        while not self._stop.is_set():
            try:
                data, peer = self.udp.recvfrom(2048)
            except socket.timeout:
                continue
            except OSError:
                return
            if self.udp_fault == "silent":
                continue
            try:
                reg, value = wire.parse_register(data)
            except wire.WireError:
                continue
            with self._lock:
                self.writes.append((reg, value))
                if peer not in self.report_to:
                    self.report_to.append(peer)
                if self.udp_fault != "ignore_writes":
                    self.registers[reg] = value
                report = wire.build_register(reg, self.registers.get(reg, 0))
            self._send(report, peer)

    def _report_loop(self):
        while not self._stop.wait(self.report_interval_s):
            if self.udp_fault == "silent":
                continue
            with self._lock:
                targets = list(self.report_to)
                packets = [wire.build_register(r, v) for r, v in sorted(self.registers.items())]
            if self.udp_fault == "garbage":
                packets.insert(0, b"\x00\x00\x00\x00\x02\x03\x09\x01")
            for peer in targets:
                for packet in packets:
                    self._send(packet, peer)


def _framed(request):
    """A request in the reply's framing ("GE", u32 length, body) that has all come."""
    if len(request) < 6 or not request.startswith(wire.REPLY_MAGIC):
        return False
    return len(request) >= 6 + wire.LENGTH.unpack_from(request, 2)[0]


def make_test_jpeg(path, size="1280x720"):
    """A real JPEG from ffmpeg's test source (for the tests, bench and demo)."""
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=size=%s:rate=1" % size, "-frames:v", "1", "-q:v", "3", path],
                   check=True, timeout=60)
    with open(path, "rb") as f:
        return f.read()
