"""`camhost toupcam`: ToupTek ToupCam (AmScope) wifi microscope cameras.

Stills over TCP 555 (snap), register reports and writes over UDP 12000 (watch, get,
set), and the camera on MQTT (bridge, in toupcam_bridge). The wire formats are
toupcam_wire. What the protocol notes do not say, the user supplies: the snap request
(--request FILE, as captured) and register names (--registers FILE). Exit codes: 0
done, 1 the camera refused or sent something wrong, 2 usage, 3 no answer in time (and
a `set` the camera did not confirm).
"""
import datetime
import json
import os
import shutil
import socket
import subprocess
import sys
import time

from . import toupcam_wire as wire
from .errors import CamhostError

DEFAULT_TIMEOUT_S = 5.0
EXIT_TIMEOUT = 3
USER_REGISTERS = os.path.join(os.path.expanduser("~"), ".config", "camhost",
                              "toupcam-registers.json")
# name -> register; only exposure is confirmed by a capture (0xB4 = 180 written by the
# app); the other two are guesses from round values the camera reported
REGISTERS = {
    "exposure": 0x03,
    "color_temperature": 0x01,   # 58000: 0.1 K? (guess)
    "gamma": 0x0A,               # 700: 7.00? (guess)
}


class CameraError(CamhostError):
    """The camera refused, broke the protocol, or went away."""


class CameraTimeout(CameraError):
    def __init__(self, message):
        super().__init__(message, exit_code=EXIT_TIMEOUT)


# --- register names -----------------------------------------------------------------------
def load_registers(path=None):
    """The built-in table, extended (or overridden) by a JSON object {"name": number or
    "0x.."} from `path`, or from ~/.config/camhost/toupcam-registers.json if it exists."""
    table = dict(REGISTERS)
    if path is None:
        if not os.path.exists(USER_REGISTERS):
            return table
        path = USER_REGISTERS
    try:
        with open(path) as f:
            extra = json.load(f)
    except OSError as e:
        raise CamhostError("cannot read the register names in %s: %s" % (path, e.strerror),
                           exit_code=2)
    except ValueError as e:
        raise CamhostError("%s is not JSON (%s); write {\"name\": 3, \"other\": \"0x0B\"}"
                           % (path, e), exit_code=2)
    if not isinstance(extra, dict):
        raise CamhostError("%s: expected a JSON object of name: register" % path, exit_code=2)
    for name, reg in extra.items():
        try:
            number = int(reg, 0) if isinstance(reg, str) else reg
        except ValueError:
            number = None
        if not isinstance(number, int) or isinstance(number, bool) or not 0 <= number <= 255:
            raise CamhostError("%s: register %r for %r is not a number 0-255" % (path, reg, name),
                               exit_code=2)
        if not name or name.startswith("0x") or "/" in name or "#" in name or "+" in name:
            raise CamhostError("%s: %r cannot be a register name (it must not look like a "
                               "number or hold / # +)" % (path, name), exit_code=2)
        table[name] = number
    return table


def register_number(text, table):
    """A register by name (from the table) or by number (3, 0x03)."""
    if text in table:
        return table[text]
    try:
        reg = int(text, 0)
    except ValueError:
        raise CamhostError("unknown register %r; known names: %s, or give a number such as "
                           "0x03" % (text, ", ".join(sorted(table))), exit_code=2)
    if not 0 <= reg <= 255:
        raise CamhostError("register %s is not 0-255" % text, exit_code=2)
    return reg


def register_label(reg, table):
    """`0x03 exposure` for a named register, `0x07` for the rest."""
    names = [n for n, r in sorted(table.items()) if r == reg]
    return "0x%02X %s" % (reg, names[0]) if names else "0x%02X" % reg


def parse_value(text):
    try:
        value = int(text, 0)
    except (TypeError, ValueError):
        raise CamhostError("value %r is not a whole number (e.g. 180 or 0xB4)" % text,
                           exit_code=2)
    if not 0 <= value <= 0xFFFFFFFF:
        raise CamhostError("value %s does not fit the register's 32 bits (0-4294967295)"
                           % text, exit_code=2)
    return value


# --- snaps ------------------------------------------------------------------------------
def read_request(path):
    """The snap request from a file: raw bytes, or hex text (Wireshark's "copy as hex
    stream", spaces and colons allowed)."""
    if path is None:
        return wire.DEFAULT_REQUEST
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CamhostError("cannot read the request %s: %s" % (path, e.strerror), exit_code=2)
    text = data.strip().replace(b":", b"").replace(b" ", b"").replace(b"\n", b"")
    if text and len(text) % 2 == 0 and all(c in b"0123456789abcdefABCDEF" for c in text):
        data = bytes.fromhex(text.decode())
    if not data:
        raise CamhostError("the request file %s is empty" % path, exit_code=2)
    return data


class Snap:
    """One still: its JPEG, the reply's Layout and how many reads it took."""

    def __init__(self, jpeg, layout, reads):
        self.jpeg, self.layout, self.reads = jpeg, layout, reads
        self.when = datetime.datetime.now(datetime.timezone.utc)


def snap(host, port=wire.SNAP_PORT, request=wire.DEFAULT_REQUEST, timeout=DEFAULT_TIMEOUT_S):
    """Connect, send the request, read and unwrap one reply. `timeout` bounds each wait
    for bytes, so a silent or stalled camera ends with CameraTimeout."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except socket.timeout:
        raise CameraTimeout("no connection to the camera's snap port %s:%d within %g s"
                            % (host, port, timeout))
    except OSError as e:
        raise CameraError("cannot reach the camera's snap port %s:%d: %s"
                          % (host, port, e.strerror or e))
    with sock:
        try:
            sock.sendall(request)
        except OSError as e:
            raise CameraError("sending the snap request failed: %s" % e)
        buf = bytearray()
        layout, reads = None, 0
        while layout is None or len(buf) < layout.end:
            want = 65536 if layout is None else min(1 << 20, layout.end - len(buf))
            try:
                block = sock.recv(want)
            except socket.timeout:
                if not buf:
                    raise CameraTimeout("no reply to the snap request within %g s (the "
                                        "request may be wrong: capture the app's with "
                                        "Wireshark and pass --request FILE)" % timeout)
                raise CameraTimeout("the reply stopped at %d bytes%s for %g s"
                                    % (len(buf), " of %d" % layout.end if layout else "",
                                       timeout))
            except OSError as e:
                raise CameraError("reading the snap reply failed after %d bytes: %s"
                                  % (len(buf), e))
            reads += 1
            if not block:
                if not buf:
                    raise CameraError("the camera closed the connection without a reply "
                                      "(it did not take the request: capture the app's "
                                      "with Wireshark and pass --request FILE)")
                layout = layout or wire.parse_head(bytes(buf[:wire.MAX_HEAD + 256]), final=True)
                raise wire.ReplyError("JPEG", "truncated: the camera closed the connection "
                                      "after %d of %d JPEG bytes" % (
                                          len(buf) - layout.jpeg_at, layout.jpeg_len),
                                      bytes(buf[:wire.DUMP]))
            buf += block
            if layout is None:
                layout = wire.parse_head(bytes(buf[:wire.MAX_HEAD + 256]))
    jpeg = bytes(buf[layout.jpeg_at:layout.end])
    wire.check_jpeg_ends(jpeg, bytes(buf[:wire.DUMP]))
    return Snap(jpeg, layout, reads)


def decode_check(jpeg, ffprobe="ffprobe"):
    """(width, height) from a real decoder (ffprobe decodes the frame); CameraError if
    it cannot."""
    if shutil.which(ffprobe) is None:
        raise CamhostError("%s not found: install ffmpeg (Debian: apt-get install ffmpeg) to "
                           "check pictures, or pass --no-decode" % ffprobe)
    p = subprocess.run([ffprobe, "-v", "error", "-f", "jpeg_pipe", "-i", "-", "-show_entries",
                        "frame=width,height", "-of", "csv=p=0"], input=jpeg,
                       capture_output=True, timeout=60)
    out = p.stdout.decode(errors="replace").split()
    err = p.stderr.decode(errors="replace").strip()
    if p.returncode or not out or err:
        raise CameraError("the picture does not decode: %s"
                          % (err.splitlines()[-1] if err else "no frame"))
    width, height = out[0].split(",")[:2]
    return int(width), int(height)


def save(jpeg, out, when):
    """Into `out`: a directory gets snap-YYYYmmdd-HHMMSS-mmm.jpg; written whole, then
    renamed, so a file there is always a complete picture."""
    if out.endswith(os.sep) or os.path.isdir(out):
        os.makedirs(out, exist_ok=True)
        out = os.path.join(out, when.strftime("snap-%Y%m%d-%H%M%S-") +
                           "%03d.jpg" % (when.microsecond // 1000))
    tmp = out + ".part"
    with open(tmp, "wb") as f:
        f.write(jpeg)
    os.replace(tmp, out)
    return out


# --- registers over UDP -----------------------------------------------------------------
class Controls:
    """The camera's UDP 12000: reports in, writes out, from one socket (bound to
    `listen_port`, 12000 as the app does, so reports addressed there arrive)."""

    def __init__(self, host, port=wire.CONTROL_PORT, listen_port=wire.CONTROL_PORT,
                 bind="0.0.0.0"):
        self.camera = (host, port)
        # no SO_REUSEADDR: a second listener on the port must fail here, not hear nothing
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind((bind, listen_port))
        except OSError as e:
            self.sock.close()
            raise CameraError("cannot listen on UDP port %d for the camera's reports: %s "
                              "(another watch or the vendor app?)" % (listen_port, e.strerror))
        self.bad = 0
        self.last_error = None

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def receive(self, timeout):
        """The next register report (reg, value), or None after `timeout` seconds;
        malformed packets are counted and skipped (last_error says why)."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data, peer = self.sock.recvfrom(2048)
            except socket.timeout:
                return None
            try:
                return wire.parse_register(data)
            except wire.WireError as e:
                self.bad += 1
                self.last_error = "from %s: %s" % (peer[0], e)

    def write(self, reg, value):
        try:
            self.sock.sendto(wire.build_register(reg, value), self.camera)
        except OSError as e:
            raise CameraError("sending to %s:%d failed: %s" % (self.camera + (e,)))

    def get(self, reg, timeout):
        end = time.monotonic() + timeout
        while True:
            got = self.receive(end - time.monotonic())
            if got is None:
                raise CameraTimeout("no report of register 0x%02X within %g s: the camera "
                                    "reports its registers now and then; is this host on its "
                                    "network, with UDP %d free?" % (reg, timeout,
                                                                    self.sock.getsockname()[1]))
            if got[0] == reg:
                return got[1]

    def set(self, reg, value, timeout):
        """Write, then wait for the camera's next report of `reg`: that value (None if
        it did not report it within `timeout`)."""
        self.write(reg, value)
        try:
            return self.get(reg, timeout)
        except CameraTimeout:
            return None


# --- CLI --------------------------------------------------------------------------------
def register(subparsers):
    p = subparsers.add_parser("toupcam", help="ToupTek/AmScope wifi microscope cameras",
                              description=__doc__.splitlines()[0])
    p.add_argument("--host", help="the camera's address (needed by every command but "
                   "`registers`; the protocol notes record no default)")
    p.add_argument("--snap-port", type=int, default=wire.SNAP_PORT, metavar="PORT")
    p.add_argument("--control-port", type=int, default=wire.CONTROL_PORT, metavar="PORT",
                   help="the camera's UDP port (default %(default)s)")
    p.add_argument("--listen-port", type=int, default=wire.CONTROL_PORT, metavar="PORT",
                   help="our UDP port for reports (default %(default)s)")
    p.add_argument("--registers", metavar="FILE", help="more register names, JSON "
                   "{\"name\": 3} (default %s if present)" % USER_REGISTERS)
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                   help="seconds to wait for an answer (default %(default)s)")
    sub = p.add_subparsers(dest="toupcam_command", metavar="COMMAND", required=True)
    s = sub.add_parser("snap", help="take full-resolution stills and save them")
    s.add_argument("--out", default=".", metavar="FILE|DIR",
                   help="a file, or a directory for timestamped names (default .)")
    s.add_argument("--count", type=int, default=1, metavar="N")
    s.add_argument("--interval", type=float, default=0.0, metavar="S",
                   help="seconds between the starts of two snaps")
    s.add_argument("--request", metavar="FILE", help="the snap request as captured "
                   "(raw bytes or hex); default: 'GE' and an empty length (a guess)")
    s.add_argument("--no-decode", action="store_true", help="check SOI/EOI only, not "
                   "with a decoder")
    w = sub.add_parser("watch", help="print register reports as they arrive")
    w.add_argument("--count", type=int, metavar="N", help="stop after N reports")
    w.add_argument("--seconds", type=float, metavar="S", help="stop after S seconds")
    g = sub.add_parser("get", help="a register's value, from the camera's next report")
    g.add_argument("reg", help="a name (exposure) or a number (0x03)")
    t = sub.add_parser("set", help="write a register; confirmed by the next report")
    t.add_argument("reg", help="a name (exposure) or a number (0x03)")
    t.add_argument("value", help="a whole number, e.g. 180 or 0xB4")
    sub.add_parser("registers", help="the register names known (built in and yours)")
    b = sub.add_parser("bridge", help="the camera on MQTT and in Home Assistant")
    from .toupcam_bridge import add_arguments
    add_arguments(b)
    p.set_defaults(func=main)


def main(args):
    table = load_registers(args.registers)
    cmd = args.toupcam_command
    if cmd == "registers":
        for name, reg in sorted(table.items(), key=lambda kv: (kv[1], kv[0])):
            print("0x%02X  %s" % (reg, name))
        return 0
    if not args.host:
        raise CamhostError("give the camera's address with --host (camhost toupcam --host "
                           "ADDR %s ...): the protocol notes record no default" % cmd,
                           exit_code=2)
    if cmd == "snap":
        return _snap(args)
    if cmd == "bridge":
        from .toupcam_bridge import run
        return run(args, table)
    with Controls(args.host, args.control_port, args.listen_port) as ctl:
        if cmd == "watch":
            return _watch(ctl, table, args)
        reg = register_number(args.reg, table)
        if cmd == "get":
            print("reg %s = %d" % (register_label(reg, table), ctl.get(reg, args.timeout)))
            return 0
        value = parse_value(args.value)
        got = ctl.set(reg, value, args.timeout)
        label = register_label(reg, table)
        if got == value:
            print("reg %s = %d (confirmed by the camera's report)" % (label, value))
            return 0
        if got is None:
            print("reg %s = %d written, unconfirmed: no report of it within %g s"
                  % (label, value, args.timeout))
            return EXIT_TIMEOUT
        raise CameraError("reg %s: wrote %d, but the camera reports %d: it did not take the "
                          "value" % (label, value, got))


def _snap(args):
    if args.count < 1:
        raise CamhostError("--count must be 1 or more", exit_code=2)
    many = args.count > 1
    if many and not (args.out.endswith(os.sep) or os.path.isdir(args.out)):
        raise CamhostError("--count %d needs --out to be a directory (each still gets a "
                           "timestamped name)" % args.count, exit_code=2)
    request = read_request(args.request)
    start = time.monotonic()
    for n in range(args.count):
        if n:
            time.sleep(max(0.0, start + n * args.interval - time.monotonic()))
        got = snap(args.host, args.snap_port, request, args.timeout)
        size = "" if args.no_decode else " %dx%d" % decode_check(got.jpeg)
        path = save(got.jpeg, args.out, got.when)
        print("%s (%d bytes%s)" % (path, len(got.jpeg), size), flush=True)
    return 0


def _watch(ctl, table, args):
    end = None if args.seconds is None else time.monotonic() + args.seconds
    seen, bad = 0, 0
    while args.count is None or seen < args.count:
        left = 1.0 if end is None else min(1.0, end - time.monotonic())
        if left <= 0:
            break
        got = ctl.receive(left)
        if ctl.bad != bad:
            bad = ctl.bad
            sys.stderr.write("camhost toupcam: skipped a bad packet %s\n" % ctl.last_error)
        if got is None:
            continue
        seen += 1
        print("reg %s = %d" % (register_label(got[0], table), got[1]), flush=True)
    return 0
