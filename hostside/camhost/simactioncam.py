"""A simulated cheap action camera, written from /work/shared/protocols/actioncam.md.

SimActionCam serves, on loopback and free ports unless told otherwise:
  discovery   UDP, on two ports (22600 and 21600 on a camera): answers a discovery
              request with a discovery response carrying the serial number
  control     TCP (6666): login (echoed), alive requests every `alive_interval_s`,
              firmware, file list in several parts, still, record start/stop,
              start preview; one client at a time, as on the camera
  files       HTTP (80): GET of the listed paths, with Range for resumed downloads
  preview     UDP to the client's address on `preview_port` (6669): the access units
              of a real H.264 Annex-B stream cut into ~1000-byte type-1 packets, each
              frame ended by a type-2 time packet (elapsed ms, or 90 kHz ticks with
              clock="ticks"), at `fps`
Bad behaviour on demand, settable while running: `fault` for the control answers,
"wrong_magic", "truncated" (half a header, then the connection closes), "overlong" (a
length larger than the bytes that follow), "stall" (never answers), "garbage_types"
(answers with unknown types); `preview_fault` for the stream, "stall" (sends nothing)
or "garbage_types" (unknown inner packets, wrong magic, over-long lengths in between).
For latency measurements, `send_times` (a list, None by default) gets the send time of
preview frame n at index n, and encode_test_stream(marks=True) draws n mod the stream's
length into the picture, for read_mark on the decoded side.
"""
import http.server
import os
import socket
import struct
import threading
import time

from . import actioncam_wire as wire

CHUNK = 1000
FAULTS = ("wrong_magic", "truncated", "overlong", "stall", "garbage_types")


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """GET of the camera's files from `server.files` {path: local file}, with Range."""

    def do_GET(self):
        local = self.server.files.get(self.path)
        if local is None:
            self.send_error(404)
            return
        size = os.path.getsize(local)
        start, end = 0, size - 1
        header = self.headers.get("Range")
        if header and header.startswith("bytes=") and self.server.ranges:
            first, _, last = header[6:].partition("-")
            try:
                start = int(first)
                end = min(int(last), size - 1) if last else size - 1
            except ValueError:
                self.send_error(400)
                return
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", "bytes */%d" % size)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        with open(local, "rb") as f:
            f.seek(start)
            left = end - start + 1
            while left > 0:
                block = f.read(min(65536, left))
                if not block:
                    break
                # counted before the write: once the client has the last byte, the
                # count must already say so (a test reads it right after)
                with self.server.count_lock:
                    self.server.bytes_served += len(block)
                self.wfile.write(block)
                left -= len(block)

    def log_message(self, *args):
        pass


class SimActionCam:
    def __init__(self, h264=b"", files_dir=None, host="127.0.0.1", control_port=0,
                 discovery_ports=(0, 0), http_port=0, preview_port=6669, fps=25,
                 firmware="v1.0 rc5", serial=b"SIMCAM0001", alive_interval_s=1.0,
                 file_list_part_size=200, user="admin", password="12345", ranges=True,
                 clock="ms"):
        self.host = host
        self.units = wire.access_units(h264) if h264 else []
        self.preview_port = preview_port
        self.fps = fps
        self.clock = clock            # time packets in "ms" (documented) or 90 kHz "ticks"
        self.firmware = firmware
        self.serial = serial
        self.alive_interval_s = alive_interval_s
        self.part_size = file_list_part_size
        self.credentials = (user, password)
        self.fault = None
        self.preview_fault = None
        self.recording = False
        self.stills = 0
        self.logins = 0
        self.alive_sent = 0
        self.alive_answered = 0
        self.received = []            # (type, payload) of every control message
        self.frames_sent = 0
        self.send_times = None        # a list: gets time.monotonic() as each frame is sent
        self.preview_started = threading.Event()
        self._stop = threading.Event()
        self._client = None
        self._preview_target = None
        self._threads = []

        self.control = socket.socket()
        self.control.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.control.bind((host, control_port))
        self.control.listen(1)
        self.control.settimeout(0.2)
        self.control_port = self.control.getsockname()[1]

        self.discovery = []
        for port in discovery_ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
            s.settimeout(0.2)
            self.discovery.append(s)
        self.discovery_ports = tuple(s.getsockname()[1] for s in self.discovery)

        self.files = {}
        if files_dir:
            for name in sorted(os.listdir(files_dir)):
                self.files["/DCIM/MOVIE/" + name] = os.path.join(files_dir, name)
        self.http = http.server.ThreadingHTTPServer((host, http_port), _RangeHandler)
        self.http.files = self.files
        self.http.ranges = ranges
        self.http.bytes_served = 0
        self.http.count_lock = threading.Lock()
        self.http_port = self.http.server_address[1]

    # --- life -------------------------------------------------------------------------
    def start(self):
        for target in [self._serve_control, self.http.serve_forever] + \
                [lambda s=s: self._serve_discovery(s) for s in self.discovery]:
            t = threading.Thread(target=target, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def close(self):
        self._stop.set()
        if self._threads:
            self.http.shutdown()
        self.http.server_close()
        self.drop_client()
        for t in self._threads:
            t.join(5)
        self.control.close()
        for s in self.discovery:
            s.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def drop_client(self):
        """Closes the control connection, as a camera that was switched off would."""
        client, self._client = self._client, None
        self._preview_target = None
        if client:
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            client.close()

    def file_entries(self):
        return [(path, os.path.getsize(local)) for path, local in self.files.items()]

    # --- discovery --------------------------------------------------------------------
    def _serve_discovery(self, sock):
        while not self._stop.is_set():
            try:
                data, peer = sock.recvfrom(80)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                msg_type, _ = wire.parse(data)
            except wire.WireError:
                continue
            if msg_type == wire.DISCOVERY_REQUEST and self.fault != "stall":
                sock.sendto(wire.build(wire.DISCOVERY_RESPONSE, self.serial), peer)

    # --- control ----------------------------------------------------------------------
    def _serve_control(self):
        while not self._stop.is_set():
            try:
                conn, peer = self.control.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.drop_client()          # one control client at a time
            self._client = conn
            threading.Thread(target=self._session, args=(conn, peer), daemon=True).start()

    def _send(self, conn, msg_type, payload=b""):
        fault = self.fault
        if fault == "stall":
            return
        data = wire.build(msg_type, payload)
        if fault == "wrong_magic":
            data = b"\x12\x34" + data[2:]
        elif fault == "truncated":
            conn.sendall(data[:5])
            raise ConnectionError("truncated on purpose")
        elif fault == "overlong":
            conn.sendall(wire.HEADER.pack(wire.CONTROL_MAGIC, len(payload) + 500, msg_type) + payload)
            raise ConnectionError("over-long on purpose")
        elif fault == "garbage_types":
            data = wire.build(0x7777, payload)
        conn.sendall(data)

    def _session(self, conn, peer):
        conn.settimeout(0.2)
        lock = threading.Lock()
        alive = threading.Thread(target=self._alive_loop, args=(conn, lock), daemon=True)
        alive.start()
        buf = b""
        try:
            while not self._stop.is_set() and self._client is conn:
                try:
                    block = conn.recv(4096)
                except socket.timeout:
                    continue
                if not block:
                    return
                buf += block
                while len(buf) >= wire.HEADER.size:
                    length, msg_type = wire.parse_header(buf)
                    if len(buf) < wire.HEADER.size + length:
                        break
                    payload = buf[wire.HEADER.size:wire.HEADER.size + length]
                    buf = buf[wire.HEADER.size + length:]
                    self.received.append((msg_type, payload))
                    with lock:
                        self._answer(conn, peer, msg_type, payload)
        except (OSError, wire.WireError):
            pass
        finally:
            if self._client is conn:
                self.drop_client()

    def _alive_loop(self, conn, lock):
        while not self._stop.wait(self.alive_interval_s) and self._client is conn:
            try:
                with lock:
                    conn.sendall(wire.build(wire.ALIVE_REQUEST))
                self.alive_sent += 1
            except OSError:
                return

    def _answer(self, conn, peer, msg_type, payload):
        if msg_type == wire.LOGIN:
            if wire.parse_login(payload) == self.credentials:
                self.logins += 1
                self._send(conn, wire.LOGIN_ACCEPTED, payload)
        elif msg_type == wire.ALIVE_RESPONSE:
            self.alive_answered += 1
        elif msg_type == wire.FIRMWARE_REQUEST:
            self._send(conn, wire.FIRMWARE, wire.firmware_payload(self.firmware))
        elif msg_type == wire.FILE_LIST_REQUEST:
            for part in wire.file_list_parts(self.file_entries(), self.part_size):
                self._send(conn, wire.FILE_LIST, part)
        elif msg_type == wire.STILL:
            self.stills += 1
            self._send(conn, wire.STILL_DONE)
        elif msg_type == wire.RECORD and len(payload) >= 1:
            self.recording = payload[0] == 1
            self._send(conn, wire.RECORD_DONE, payload)
        elif msg_type == wire.START_PREVIEW:
            first = self._preview_target is None
            self._preview_target = (peer[0], self.preview_port)
            if first:
                threading.Thread(target=self._stream, args=(conn,), daemon=True).start()
        # anything else: no answer, as the camera does for what it does not know

    # --- preview ----------------------------------------------------------------------
    def datagrams(self, unit, seq, stamp):
        """The datagrams of one access unit: ~1000-byte video packets, the last one shared
        with the time packet (datagrams may hold several inner packets)."""
        out = []
        for at in range(0, len(unit), CHUNK):
            out.append(wire.build_preview(seq, wire.VIDEO, unit[at:at + CHUNK]))
            seq += 1
        out[-1] += wire.build_preview(seq, wire.TIME, wire.time_payload(stamp))
        seq += 1
        if self.preview_fault == "garbage_types":
            out.insert(0, wire.build_preview(seq, 7, b"\xff" * 40))
            out.insert(1, b"\xde\xad" + out[1][2:])            # wrong magic
            out.insert(2, wire.PREVIEW_HEADER.pack(wire.PREVIEW_MAGIC, 5000, seq, 1) + b"x")
            seq += 1
        return out, seq

    def _stream(self, conn):
        if not self.units:
            return
        out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.preview_started.set()
        seq, n, t0 = 0, 0, time.monotonic()
        period = 1.0 / self.fps
        try:
            while not self._stop.is_set() and self._client is conn and self._preview_target:
                if self.preview_fault == "stall":
                    time.sleep(period)
                    continue
                unit = self.units[n % len(self.units)]
                stamp = int(n * (90000 if self.clock == "ticks" else 1000) / self.fps)
                grams, seq = self.datagrams(unit, seq, stamp)
                if self.send_times is not None:
                    self.send_times.append(time.monotonic())
                for g in grams:
                    try:
                        out.sendto(g, self._preview_target)
                    except (OSError, TypeError):
                        pass
                n += 1
                self.frames_sent = n
                delay = t0 + n * period - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        finally:
            out.close()


# encode_test_stream(marks=True): frame i's index (mod 128) drawn at the top left as
# MARK_BITS cells of MARK_CELL x MARK_CELL/2 pixels, bit k (white box or black) in cell k
MARK_BITS, MARK_CELL = 7, 32


def encode_test_stream(path, seconds=4, size="1280x720", fps=25, gop=25, noise=0, marks=False,
                       slices=0):
    """A real H.264 Annex-B stream from ffmpeg's test source (for the tests, bench and demo);
    `noise` (0-100) makes it cost bits as a real scene does; `marks` draws each frame's
    index, so a client that decodes the stream can tell which frame it got (read_mark);
    `slices` fixes the slices per frame (else x264 picks them from the CPU count)."""
    import subprocess
    source = "testsrc=size=%s:rate=%d" % (size, fps)
    if noise:   # on gbrp, as ffmpeg picks by itself without marks (yuv noise costs 10x the bits)
        source += ",format=gbrp,noise=alls=%d:allf=t" % noise
    if marks:
        half = MARK_CELL // 2
        source += ",format=yuv420p,drawbox=x=0:y=0:w=%d:h=%d:color=black:t=fill" % (
            MARK_BITS * MARK_CELL, half)
        for k in range(MARK_BITS):
            source += (",drawbox=x=%d:y=%d:w=%d:h=%d:color=white:t=fill:enable='bitand(n\\,%d)'"
                       % (k * MARK_CELL + half // 2, half // 4, half, half // 2, 1 << k))
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    source, "-t", str(seconds),
                    "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
                    "-g", str(gop), "-pix_fmt", "yuv420p", "-bsf:v", "h264_mp4toannexb"]
                   + (["-x264-params", "slices=%d:sliced-threads=0" % slices] if slices else []) + [
                    "-f", "h264", path], check=True, timeout=120)
    with open(path, "rb") as f:
        return f.read()


def make_files(directory, count=12, size=50000):
    """`count` fake recordings of about `size` bytes, each different."""
    os.makedirs(directory, exist_ok=True)
    for i in range(count):
        with open(os.path.join(directory, "2026_0101_%06d.MOV" % (i + 1)), "wb") as f:
            f.write(struct.pack(">I", i) * ((size + i * 997) // 4))
    return directory


def read_mark(strip):
    """The frame index in the top MARK_CELL/2 rows (8-bit gray, MARK_BITS * MARK_CELL wide)
    of a frame encoded with marks=True; None when a cell is neither black nor white."""
    width, row = MARK_BITS * MARK_CELL, MARK_CELL // 4
    index = 0
    for k in range(MARK_BITS):
        level = strip[row * width + k * MARK_CELL + MARK_CELL // 2]
        if 64 <= level <= 192:
            return None
        if level > 192:
            index |= 1 << k
    return index
