"""`camhost actioncam`: cheap wifi action cameras (TecTecTec, CamPark ACT76, clones).

The camera session (login, alive answers, timeouts, reconnect), discovery, downloads,
the preview relay to the RTSP server, and the CLI subcommands over them. The wire
format is actioncam_wire; the RTSP server is actioncam_rtsp (run under the system's
Python, which has GStreamer's bindings). Exit codes: 0 done, 1 the camera refused or
sent something wrong, 2 usage, 3 no answer in time.
"""
import os
import queue
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from . import actioncam_wire as wire
from .errors import CamhostError
from .mqttclient import BROKER_ENV, default_broker

DEFAULT_HOST = "192.168.100.1"
CONTROL_PORT = 6666
PREVIEW_PORT = 6669
DISCOVERY_PORTS = (22600, 21600)
DISCOVERY_BIND_PORT = 22601
DEFAULT_TIMEOUT_S = 5.0
EXIT_TIMEOUT = 3
RTSP_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "actioncam_rtsp.py")
SYSTEM_PYTHON = "/usr/bin/python3"   # Debian's, with python3-gi and GstRtspServer


class CameraError(CamhostError):
    """The camera refused, broke the protocol, or went away."""


class CameraTimeout(CameraError):
    def __init__(self, message):
        super().__init__(message, exit_code=EXIT_TIMEOUT)


# --- discovery --------------------------------------------------------------------------
def discover(broadcast="255.255.255.255", ports=DISCOVERY_PORTS, bind_port=DISCOVERY_BIND_PORT,
             timeout=5.0, interval=0.5):
    """(address, port) of the first camera answering a discovery request on any of `ports`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("", bind_port))
    except OSError as e:
        sock.close()
        raise CameraError("cannot bind UDP port %d for discovery answers: %s" % (bind_port, e))
    request = wire.build(wire.DISCOVERY_REQUEST)
    end = time.monotonic() + timeout
    next_send = 0.0
    try:
        while True:
            now = time.monotonic()
            if now >= end:
                raise CameraTimeout("no camera answered discovery on %s ports %s within %g s; "
                                    "join the camera's wifi, or give its address with --host"
                                    % (broadcast, "/".join(map(str, ports)), timeout))
            if now >= next_send:
                for port in ports:
                    sock.sendto(request, (broadcast, port))
                next_send = now + interval
            sock.settimeout(max(0.01, min(next_send, end) - now))
            try:
                data, peer = sock.recvfrom(80)
            except socket.timeout:
                continue
            try:
                msg_type, _ = wire.parse(data)
            except wire.WireError:
                continue   # not a camera, or our own broadcast echoed
            if msg_type == wire.DISCOVERY_RESPONSE:
                return peer
    finally:
        sock.close()


# --- the control session ----------------------------------------------------------------
class ActionCam:
    """One control connection: logs in, answers alive requests, one request at a time.

    A background thread reads every message: alive requests are answered there, the
    rest queued for the request waiting on them. When the connection breaks (closed,
    wrong magic, a length that never arrives) the session is down; `connect()` again,
    or any request with reconnect=True (the default), brings it back.
    """

    def __init__(self, host=DEFAULT_HOST, port=CONTROL_PORT, user="admin", password="12345",
                 timeout=DEFAULT_TIMEOUT_S):
        self.host, self.port = host, port
        self.login = wire.login_payload(user, password)
        self.timeout = timeout
        self.sock = None
        self.alive_answered = 0
        self.reconnects = 0
        self._inbox = queue.Queue()
        self._send_lock = threading.Lock()
        self._request_lock = threading.Lock()
        self._reader = None
        self._down = "not connected"

    @property
    def connected(self):
        return self._down is None

    def connect(self):
        self.close()
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as e:
            raise CameraError("cannot reach the camera's control port %s:%d: %s"
                              % (self.host, self.port, e.strerror or e))
        sock.settimeout(0.2)
        self.sock, self._down = sock, None
        self._inbox = queue.Queue()
        self._reader = threading.Thread(target=self._read_loop, args=(sock, self._inbox), daemon=True)
        self._reader.start()
        self._exchange(wire.LOGIN, self.login, wire.LOGIN_ACCEPTED, "the login")
        return self

    def close(self):
        sock, self.sock = self.sock, None
        if sock:
            self._down = "closed"
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        if self._reader and self._reader is not threading.current_thread():
            self._reader.join(2)
        self._reader = None

    def __enter__(self):
        return self.connect()

    def __exit__(self, *exc):
        self.close()

    def _recv_exact(self, sock, n, what):
        buf = b""
        while len(buf) < n:
            try:
                block = sock.recv(n - len(buf))
            except socket.timeout:
                if self.sock is not sock:
                    raise CameraError("closed")
                continue
            if not block:
                raise CameraError("the camera closed the connection %s" % what % len(buf))
            buf += block
        return buf

    def _read_loop(self, sock, inbox):
        try:
            while True:
                head = self._recv_exact(sock, wire.HEADER.size,
                                        "(truncated header: %d of 8 bytes)")
                length, msg_type = wire.parse_header(head)
                payload = self._recv_exact(sock, length, "with a message of length %d unfinished "
                                           "(%%d bytes came)" % length) if length else b""
                if msg_type == wire.ALIVE_REQUEST:
                    self._send(wire.ALIVE_RESPONSE, b"", sock)
                    self.alive_answered += 1
                else:
                    inbox.put((msg_type, payload))
        except (CamhostError, OSError) as e:
            reason = str(e) if isinstance(e, CamhostError) else "connection lost: %s" % e
            if self.sock is sock:
                self._down = reason
                self.sock = None
                sock.close()
            inbox.put((None, reason))

    def _send(self, msg_type, payload, sock=None):
        sock = sock or self.sock
        if sock is None:
            raise CameraError("not connected to the camera (%s)" % self._down)
        with self._send_lock:
            try:
                sock.sendall(wire.build(msg_type, payload))
            except OSError as e:
                raise CameraError("sending to the camera failed: %s" % e)

    def _exchange(self, msg_type, payload, expect, what, timeout=None, collect=None):
        """Sends one message and waits for `expect`; returns its payload (or, with
        `collect(payload) -> done`, keeps taking `expect` messages until done)."""
        timeout = self.timeout if timeout is None else timeout
        while not self._inbox.empty():       # late answers to an earlier request
            self._inbox.get_nowait()
        self._send(msg_type, payload)
        end = time.monotonic() + timeout
        others = []
        while True:
            left = end - time.monotonic()
            try:
                got, body = self._inbox.get(timeout=max(0.0, left)) if left > 0 else (None, None)
            except queue.Empty:
                got, body = None, None
            if got is None and body is not None:
                raise CameraError("%s failed: %s" % (what, body))
            if got is None:
                extra = ""
                if others:
                    extra = "; it sent only %s" % ", ".join(sorted(set(map(wire.type_name, others))))
                raise CameraTimeout("no answer to %s within %g s%s" % (what, timeout, extra))
            if got != expect:
                others.append(got)
                continue
            if collect is None or collect(body):
                return body

    def request(self, msg_type, payload, expect, what, timeout=None, collect=None, reconnect=True):
        with self._request_lock:
            if not self.connected:
                if not reconnect:
                    raise CameraError("not connected to the camera (%s)" % self._down)
                self.reconnects += 1
                self.connect()
            return self._exchange(msg_type, payload, expect, what, timeout, collect)

    # --- commands ---------------------------------------------------------------------
    def firmware(self):
        return wire.parse_firmware(self.request(wire.FIRMWARE_REQUEST, b"", wire.FIRMWARE,
                                                "the firmware request"))

    def still(self):
        self.request(wire.STILL, b"", wire.STILL_DONE, "the still capture")

    def record(self, start):
        self.request(wire.RECORD, wire.record_payload(start), wire.RECORD_DONE,
                     "the record %s command" % ("start" if start else "stop"))

    def files(self):
        parts = {}

        def collect(payload):
            total, current, text = wire.parse_file_list_part(payload)
            parts[current] = text
            return current + 1 >= total

        self.request(wire.FILE_LIST_REQUEST, wire.FILE_LIST_ARG, wire.FILE_LIST,
                     "the file list request", collect=collect)
        return wire.parse_file_list(b"".join(parts[k] for k in sorted(parts)))

    def start_preview(self):
        with self._request_lock:
            if not self.connected:
                self.connect()
            self._send(wire.START_PREVIEW, b"")

    def raw(self, msg_type, payload=b"", wait_s=2.0):
        """Every message (other than alive requests) the camera sends within `wait_s`."""
        with self._request_lock:
            if not self.connected:
                self.connect()
            while not self._inbox.empty():
                self._inbox.get_nowait()
            self._send(msg_type, payload)
            end, out = time.monotonic() + wait_s, []
            while time.monotonic() < end:
                try:
                    got, body = self._inbox.get(timeout=max(0.0, end - time.monotonic()))
                except queue.Empty:
                    break
                if got is None:
                    raise CameraError("the camera connection broke: %s" % body)
                out.append((got, body))
            return out


# --- downloads --------------------------------------------------------------------------
def download(url, dest, size=None, progress=None, timeout=DEFAULT_TIMEOUT_S):
    """GET `url` into `dest`, resuming a partial file with Range; verified by `size`."""
    have = os.path.getsize(dest) if os.path.exists(dest) else 0
    if size is not None and have == size:
        return size
    if size is not None and have > size:
        have = 0
    req = urllib.request.Request(url, headers={"Range": "bytes=%d-" % have} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        raise CameraError("download of %s refused: HTTP %d %s" % (url, e.code, e.reason))
    except (urllib.error.URLError, OSError) as e:
        raise CameraError("download of %s failed: %s" % (url, getattr(e, "reason", e)))
    with resp:
        mode = "ab" if have and resp.status == 206 else "wb"
        done = have if mode == "ab" else 0
        with open(dest, mode) as f:
            while True:
                try:
                    block = resp.read(65536)
                except (OSError, socket.timeout) as e:
                    raise CameraError("download of %s broke at %d bytes (%s); run it again to "
                                      "resume" % (url, done, e))
                if not block:
                    break
                f.write(block)
                done += len(block)
                if progress:
                    progress(done, size)
    if size is not None and done != size:
        raise CameraError("download of %s ended at %d of %d bytes; run it again to resume"
                          % (url, done, size))
    return done


def _progress_bar(name):
    def show(done, size):
        if size:
            n = int(30 * done / size)
            sys.stderr.write("\r%-40s [%s%s] %3d%%" % (name[-40:], "#" * n, "." * (30 - n),
                                                       100 * done // size))
        else:
            sys.stderr.write("\r%-40s %d bytes" % (name[-40:], done))
        sys.stderr.flush()
    return show


# --- the preview relay ------------------------------------------------------------------
class RtspServer:
    """actioncam_rtsp.py as a child under the system's Python, fed access units on stdin."""

    def __init__(self, host="127.0.0.1", port=8554, path="/preview", mtu=1400,
                 python=SYSTEM_PYTHON, ready_timeout=15.0):
        if not os.path.exists(python):
            raise CamhostError("%s not found: the RTSP server needs Debian's python3 with "
                               "python3-gi and gir1.2-gst-rtsp-server-1.0" % python)
        self.proc = subprocess.Popen([python, RTSP_SCRIPT, "--host", host, "--port", str(port),
                                      "--path", path, "--mtu", str(mtu)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.url = self._ready(ready_timeout)

    def _ready(self, timeout):
        lines = []
        reader = threading.Thread(target=lambda: lines.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        line = lines[0].decode() if lines else ""
        if not line.startswith("ready "):
            self.close()
            err = self.proc.stderr.read().decode(errors="replace").strip().splitlines()
            raise CamhostError("the RTSP server did not start: %s"
                               % (err[-1] if err else "no answer in %g s" % timeout))
        return line.split()[1]

    def send(self, clock, unit):
        try:
            self.proc.stdin.write(struct.pack(">IQ", len(unit), clock) + unit)
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise CamhostError("the RTSP server ended: %s"
                               % self.proc.stderr.read().decode(errors="replace").strip())

    def close(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class PreviewRelay:
    """Camera preview (UDP) -> access units -> RTSP server, restarting the preview and the
    session when the camera goes quiet for `stall_s`."""

    def __init__(self, cam, rtsp, bind="0.0.0.0", preview_port=PREVIEW_PORT, stall_s=3.0, log=None):
        self.cam, self.rtsp = cam, rtsp
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((bind, preview_port))
        self.sock.settimeout(0.2)
        self.assembler = wire.FrameAssembler()
        self.stall_s = stall_s
        self.log = log or (lambda msg: sys.stderr.write("camhost actioncam: %s\n" % msg))
        self._stop = threading.Event()

    def stop(self):
        self._stop.set()

    def run(self, frames=None):
        last = time.monotonic()
        self._start_preview()
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                if time.monotonic() - last > self.stall_s:
                    self.log("no preview for %g s; restarting it" % self.stall_s)
                    self.cam.close()
                    self._start_preview()
                    last = time.monotonic()
                continue
            got = self.assembler.feed(data)
            if got:
                last = time.monotonic()
            for clock, unit in got:
                self.rtsp.send(clock, unit)
            if frames is not None and self.assembler.frames >= frames:
                break
        self.sock.close()

    def _start_preview(self):
        try:
            self.cam.start_preview()
        except CameraError as e:
            self.log(str(e))


# --- CLI --------------------------------------------------------------------------------
def register(subparsers):
    p = subparsers.add_parser("actioncam", help="cheap wifi action cameras (phone-app protocol)",
                              description=__doc__.splitlines()[0])
    p.add_argument("--host", default=DEFAULT_HOST, help="camera address (default %(default)s)")
    p.add_argument("--control-port", type=int, default=CONTROL_PORT, metavar="PORT")
    p.add_argument("--http-port", type=int, default=80, metavar="PORT", help="for downloads")
    p.add_argument("--user", default="admin")
    p.add_argument("--password", default="12345")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                   help="seconds to wait for an answer (default %(default)s)")
    sub = p.add_subparsers(dest="actioncam_command", metavar="COMMAND", required=True)
    d = sub.add_parser("discover", help="find the camera by UDP broadcast")
    d.add_argument("--broadcast", default="255.255.255.255", metavar="ADDR")
    d.add_argument("--discovery-ports", default="22600,21600", metavar="P,P")
    d.add_argument("--bind-port", type=int, default=DISCOVERY_BIND_PORT, metavar="PORT")
    sub.add_parser("info", help="firmware version")
    sub.add_parser("still", help="take a still")
    r = sub.add_parser("record", help="start or stop recording")
    r.add_argument("action", choices=("start", "stop"))
    sub.add_parser("files", help="the camera's files, with sizes")
    g = sub.add_parser("download", help="download files over HTTP (resumes partial files)")
    g.add_argument("path", nargs="?", help="a path from `files`")
    g.add_argument("--all", action="store_true", help="every file")
    g.add_argument("--to", default=".", metavar="DIR")
    w = sub.add_parser("raw", help="send one message, print every answer in hex")
    w.add_argument("type", help="message type, e.g. 0xA034")
    w.add_argument("payload", nargs="?", default="", help="payload in hex")
    w.add_argument("--wait", type=float, default=2.0, metavar="S")
    s = sub.add_parser("serve", help="serve the preview over RTSP (any number of clients)")
    s.add_argument("--rtsp-host", default="127.0.0.1", metavar="ADDR")
    s.add_argument("--rtsp-port", type=int, default=8554, metavar="PORT")
    s.add_argument("--preview-port", type=int, default=PREVIEW_PORT, metavar="PORT")
    s.add_argument("--mtu", type=int, default=1400)
    b = sub.add_parser("bridge", help="the camera on MQTT and in Home Assistant")
    b.add_argument("--broker", default=default_broker(), metavar="URL",
                   help="mqtt[s]://[user[:password]@]host[:port] (default $%s or "
                        "%%(default)s)" % BROKER_ENV)
    b.add_argument("--device-id", "--device", dest="device_id", metavar="ID",
                   help="device id in the topics (default actioncam-<host>)")
    b.add_argument("--prefix", default="camagent")
    b.add_argument("--discovery-prefix", default="homeassistant", metavar="PREFIX")
    b.add_argument("--poll", type=float, default=5.0, metavar="S",
                   help="seconds between camera polls (default %(default)s)")
    b.add_argument("--rtsp-port", type=int, metavar="PORT",
                   help="also serve the preview over RTSP, as `serve` does")
    b.add_argument("--rtsp-host", default="127.0.0.1", metavar="ADDR")
    b.add_argument("--rtsp-url", metavar="URL",
                   help="the stream's address as published (default: the served one)")
    b.add_argument("--preview-port", type=int, default=PREVIEW_PORT, metavar="PORT")
    b.add_argument("--mtu", type=int, default=1400)
    p.set_defaults(func=main)


def _int(text, what):
    try:
        return int(text, 0)
    except ValueError:
        raise CamhostError("%s %r is not a number (write 0xA034 or 41012)" % (what, text), exit_code=2)


def _hex(text):
    try:
        return bytes.fromhex(text.replace(":", " "))
    except ValueError:
        raise CamhostError("payload %r is not hex (write e.g. '01 00 00 00')" % text, exit_code=2)


def main(args):
    cmd = args.actioncam_command
    if cmd == "discover":
        ports = tuple(_int(x, "port") for x in args.discovery_ports.split(",") if x)
        host, port = discover(args.broadcast, ports, args.bind_port, args.timeout)
        print("%s (answered on port %d)" % (host, port))
        return 0
    cam = ActionCam(args.host, args.control_port, args.user, args.password, args.timeout)
    if cmd == "bridge":
        from . import actioncam_bridge
        try:
            return actioncam_bridge.run(args, cam)
        finally:
            cam.close()
    if cmd == "raw":
        msg_type = _int(args.type, "message type")
        if not 0 <= msg_type <= 0xFFFFFFFF:
            raise CamhostError("message type %s is not a 32-bit number" % args.type, exit_code=2)
        payload = _hex(args.payload)
        with cam:
            answers = cam.raw(msg_type, payload, args.wait)
        for got, body in answers:
            print("0x%04X %s: %s" % (got, wire.type_name(got), body.hex(" ") or "(empty)"))
        if not answers:
            print("no answer within %g s" % args.wait)
        return 0
    if cmd == "serve":
        return _serve(cam, args)
    with cam:
        if cmd == "info":
            print("firmware %s" % cam.firmware())
        elif cmd == "still":
            cam.still()
            print("still taken")
        elif cmd == "record":
            cam.record(args.action == "start")
            print("recording %s" % ("started" if args.action == "start" else "stopped"))
        elif cmd == "files":
            for path, size in cam.files():
                print("%12d  %s" % (size, path))
        elif cmd == "download":
            _download(cam, args)
    return 0


def _download(cam, args):
    if bool(args.path) == bool(args.all):
        raise CamhostError("give one PATH from `files`, or --all", exit_code=2)
    listed = dict(cam.files())
    if args.all:
        wanted = sorted(listed.items())
    elif args.path in listed:
        wanted = [(args.path, listed[args.path])]
    else:
        raise CamhostError("%s is not on the camera (see `camhost actioncam files`)" % args.path)
    os.makedirs(args.to, exist_ok=True)
    base = "http://%s:%d" % (args.host, args.http_port)
    for path, size in wanted:
        dest = os.path.join(args.to, os.path.basename(path))
        download(base + path, dest, size, _progress_bar(path), args.timeout)
        sys.stderr.write("\n")
        print("%s -> %s (%d bytes)" % (path, dest, size))


def _serve(cam, args):
    rtsp = RtspServer(args.rtsp_host, args.rtsp_port, mtu=args.mtu)
    print("serving %s" % rtsp.url, flush=True)
    relay = PreviewRelay(cam, rtsp, preview_port=args.preview_port)
    try:
        relay.run()
    finally:
        cam.close()
        rtsp.close()
    return 0
