"""The action cameras' phone-app protocol on the wire: pure parse and build, no sockets.

Facts: /work/shared/protocols/actioncam.md. Control messages (TCP and discovery UDP):
  magic u16 0xABCD | payload length u16 | message type u32   (big-endian), payload
Preview datagrams hold one or more inner packets:
  magic u16 0xBCDE | length u16 | sequence u16 | type u16    (big-endian), payload
Everything malformed raises WireError with a sentence naming what was wrong.
"""
import struct

from .errors import CamhostError

CONTROL_MAGIC = 0xABCD
PREVIEW_MAGIC = 0xBCDE
HEADER = struct.Struct(">HHI")
PREVIEW_HEADER = struct.Struct(">HHHH")
MAX_PAYLOAD = 0xFFFF

LOGIN = 0x0110
LOGIN_ACCEPTED = 0x0111
ALIVE_REQUEST = 0x0112
ALIVE_RESPONSE = 0x0113
DISCOVERY_REQUEST = 0x0114
DISCOVERY_RESPONSE = 0x0115
START_PREVIEW = 0x01FF
FILE_LIST_REQUEST = 0xA025
FILE_LIST = 0xA026
FIRMWARE_REQUEST = 0xA034
FIRMWARE = 0xA035
STILL = 0xA038
STILL_DONE = 0xA039
RECORD = 0xA03A
RECORD_DONE = 0xA03B

NAMES = {LOGIN: "login", LOGIN_ACCEPTED: "login accepted", ALIVE_REQUEST: "alive request",
         ALIVE_RESPONSE: "alive response", DISCOVERY_REQUEST: "discovery request",
         DISCOVERY_RESPONSE: "discovery response", START_PREVIEW: "start preview",
         FILE_LIST_REQUEST: "file list request", FILE_LIST: "file list",
         FIRMWARE_REQUEST: "firmware request", FIRMWARE: "firmware information",
         STILL: "still", STILL_DONE: "still captured", RECORD: "record",
         RECORD_DONE: "record accepted"}

# preview inner packet types; >= 5 are unknown and skipped
VIDEO = 1
TIME = 2

LOGIN_FIELD = 64
FIRMWARE_VERSION_AT = 80
FILE_LIST_ARG = b"\x01\x00\x00\x00"   # from app captures; meaning unknown


class WireError(CamhostError):
    """Bytes that do not follow the protocol."""


def type_name(msg_type):
    return NAMES.get(msg_type, "unknown type 0x%04X" % msg_type)


# --- control messages -------------------------------------------------------------------
def build(msg_type, payload=b""):
    if not 0 <= msg_type <= 0xFFFFFFFF:
        raise WireError("message type %r is not a 32-bit number" % (msg_type,))
    if len(payload) > MAX_PAYLOAD:
        raise WireError("payload of %d bytes is over the protocol's %d" % (len(payload), MAX_PAYLOAD))
    return HEADER.pack(CONTROL_MAGIC, len(payload), msg_type) + bytes(payload)


def parse_header(data):
    """(payload length, message type) from the first 8 bytes of `data`."""
    if len(data) < HEADER.size:
        raise WireError("truncated header: %d of %d bytes" % (len(data), HEADER.size))
    magic, length, msg_type = HEADER.unpack_from(data)
    if magic != CONTROL_MAGIC:
        raise WireError("wrong magic 0x%04X (expected 0x%04X): not a camera control message"
                        % (magic, CONTROL_MAGIC))
    return length, msg_type


def parse(data):
    """(message type, payload) of one whole message, as a discovery datagram holds."""
    length, msg_type = parse_header(data)
    if HEADER.size + length > len(data):
        raise WireError("length %d is larger than the %d payload bytes received"
                        % (length, len(data) - HEADER.size))
    return msg_type, bytes(data[HEADER.size:HEADER.size + length])


def login_payload(user="admin", password="12345"):
    fields = []
    for name, text in (("user name", user), ("password", password)):
        raw = text.encode("utf-8")
        if len(raw) >= LOGIN_FIELD or b"\0" in raw:
            raise WireError("%s must be under %d bytes without NUL" % (name, LOGIN_FIELD))
        fields.append(raw.ljust(LOGIN_FIELD, b"\0"))
    return b"".join(fields)


def parse_login(payload):
    """(user, password) from a login payload (the camera echoes it when accepting)."""
    if len(payload) < 2 * LOGIN_FIELD:
        raise WireError("login payload of %d bytes, expected %d" % (len(payload), 2 * LOGIN_FIELD))
    return tuple(payload[i:i + LOGIN_FIELD].split(b"\0", 1)[0].decode("utf-8", "replace")
                 for i in (0, LOGIN_FIELD))


def firmware_payload(version, words=(0,) * 20):
    raw = version.encode("ascii")[:112 - FIRMWARE_VERSION_AT - 1]
    return struct.pack("<20I", *words) + raw.ljust(112 - FIRMWARE_VERSION_AT, b"\0")


def parse_firmware(payload):
    if len(payload) <= FIRMWARE_VERSION_AT:
        raise WireError("firmware information of %d bytes has no version string (at offset %d)"
                        % (len(payload), FIRMWARE_VERSION_AT))
    text = bytes(payload[FIRMWARE_VERSION_AT:]).split(b"\0", 1)[0]
    return text.decode("ascii", "replace").strip()


def record_payload(start):
    return bytes((1 if start else 0, 0, 0, 0))


# --- file list --------------------------------------------------------------------------
def file_list_parts(entries, part_size=1000):
    """The 0xA026 payloads that carry `entries` [(path, size)], `part_size` text bytes each."""
    text = "".join("%s:%d;" % (path, size) for path, size in entries).encode("utf-8")
    chunks = [text[i:i + part_size] for i in range(0, len(text), part_size)] or [b""]
    return [struct.pack("<II", len(chunks), n) + c for n, c in enumerate(chunks)]


def parse_file_list_part(payload):
    """(number of parts, this part, text bytes)."""
    if len(payload) < 8:
        raise WireError("file list part of %d bytes, shorter than its 8-byte counters" % len(payload))
    parts, current = struct.unpack_from("<II", payload)
    if current >= parts:
        raise WireError("file list part %d of %d does not exist" % (current, parts))
    return parts, current, bytes(payload[8:])


def parse_file_list(text):
    """[(path, size)] from the concatenated `path:size;path:size;` text."""
    entries = []
    for item in text.decode("utf-8", "replace").strip("\0").split(";"):
        item = item.strip()
        if not item:
            continue
        path, sep, size = item.rpartition(":")
        if not sep or not size.strip().isdigit() or not path:
            raise WireError("file list entry %r is not path:size" % item)
        entries.append((path, int(size)))
    return entries


# --- preview stream ---------------------------------------------------------------------
def build_preview(seq, ptype, payload):
    return PREVIEW_HEADER.pack(PREVIEW_MAGIC, len(payload), seq & 0xFFFF, ptype) + bytes(payload)


def time_payload(value):
    return b"\0" * 12 + struct.pack("<I", value & 0xFFFFFFFF)


def parse_time(payload):
    if len(payload) < 16:
        raise WireError("time packet of %d bytes, expected 16" % len(payload))
    return struct.unpack_from("<I", payload, 12)[0]


def parse_preview(datagram):
    """[(sequence, type, payload)] of the inner packets of one preview datagram."""
    packets = []
    at, end = 0, len(datagram)
    view = memoryview(datagram)
    while at < end:
        if end - at < PREVIEW_HEADER.size:
            raise WireError("truncated preview header: %d of %d bytes" % (end - at, PREVIEW_HEADER.size))
        magic, length, seq, ptype = PREVIEW_HEADER.unpack_from(datagram, at)
        if magic != PREVIEW_MAGIC:
            raise WireError("wrong preview magic 0x%04X (expected 0x%04X)" % (magic, PREVIEW_MAGIC))
        at += PREVIEW_HEADER.size
        if at + length > end:
            raise WireError("preview packet length %d is larger than the %d bytes left in the datagram"
                            % (length, end - at))
        packets.append((seq, ptype, bytes(view[at:at + length])))
        at += length
    return packets


class FrameAssembler:
    """Concatenates type-1 chunks into access units, each ended by a type-2 time packet.

    feed(datagram) returns [(clock, access unit bytes)]; `clock` is in 90 kHz ticks. The
    time value is elapsed milliseconds by the documented fact, yet the values observed are
    multiples of 90 (perhaps ticks already): a first step over 1000 means ticks.
    Malformed datagrams and unknown types are counted, never fatal: one bad datagram must
    not end a stream.
    """

    def __init__(self):
        self.chunks = []
        self.size = 0
        self.frames = 0
        self.bad = 0          # malformed datagrams dropped
        self.unknown = 0      # inner packets of unknown types skipped
        self.last_error = None
        self.ticks_per_unit = None   # 90 (milliseconds) or 1 (90 kHz ticks), once known
        self._first = None

    def feed(self, datagram):
        try:
            packets = parse_preview(datagram)
        except WireError as e:
            self.bad += 1
            self.last_error = str(e)
            return []
        out = []
        for seq, ptype, payload in packets:
            if ptype == VIDEO:
                self.chunks.append(payload)
                self.size += len(payload)
            elif ptype == TIME:
                try:
                    value = parse_time(payload)
                except WireError as e:
                    self.bad += 1
                    self.last_error = str(e)
                    continue
                if self.chunks:
                    out.extend(self._frame(value, b"".join(self.chunks)))
                self.chunks, self.size = [], 0
            else:
                self.unknown += 1
        return out

    def _frame(self, value, unit):
        """The frames ready to go: the first waits for the second, whose step tells the unit."""
        if self.ticks_per_unit is None:
            if self._first is None:
                self._first = (value, unit)
                return []
            first, self._first = self._first, None
            self.ticks_per_unit = 1 if abs(value - first[0]) > 1000 else 90
            self.frames += 2
            return [(first[0] * self.ticks_per_unit, first[1]), (value * self.ticks_per_unit, unit)]
        self.frames += 1
        return [(value * self.ticks_per_unit, unit)]


# --- H.264 Annex-B (for the simulator and for keyframe checks) ---------------------------
def nal_units(stream):
    """The NAL units of an Annex-B byte stream, start codes stripped."""
    out, n, i = [], len(stream), 0
    starts = []
    while True:
        i = stream.find(b"\x00\x00\x01", i)
        if i < 0:
            break
        starts.append(i + 3)
        i += 3
    for k, s in enumerate(starts):
        e = starts[k + 1] - 3 if k + 1 < len(starts) else n
        while e > s and stream[e - 1] == 0:   # the leading zero of a 4-byte start code
            e -= 1
        out.append(stream[s:e])
    return out


def access_units(stream):
    """Splits an Annex-B stream into access units (bytes with 4-byte start codes)."""
    units, current, has_slice = [], [], False
    for nal in nal_units(stream):
        if not nal:
            continue
        kind = nal[0] & 0x1F
        first_slice = kind in (1, 5) and len(nal) > 1 and nal[1] & 0x80   # first_mb_in_slice == 0
        if has_slice and (kind in (6, 7, 8, 9) or first_slice):
            units.append(b"".join(current))
            current, has_slice = [], False
        current.append(b"\x00\x00\x00\x01" + nal)
        has_slice = has_slice or kind in (1, 5)
    if current and has_slice:
        units.append(b"".join(current))
    return units


def is_keyframe(unit):
    return any(n and n[0] & 0x1F in (5, 7) for n in nal_units(unit))
