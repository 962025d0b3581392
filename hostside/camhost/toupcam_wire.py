"""ToupTek ToupCam wifi microscope cameras: the wire formats (facts: protocols/toupcam.md).

Snap reply (TCP 555), as one capture showed it, every length a big-endian u32:

    "GE" ...head...  len1 | layer 1: ...header... len2 | layer 2: "GEPJ" jpeg_len ... JPEG

Each layer's length counts the bytes after its own field, and all layers end where the
JPEG ends (in the capture 0x1E1E4A and 0x1E1E3A around a 0x1E1E29-byte JPEG at 0x6D).
What sits between the fields is not known, so nothing here assumes an offset:
parse_head() finds the `GEPJ` marker; the innermost layer is the length just before it,
which says where the reply ends; the JPEG is the last jpeg_len bytes of that layer (SOI
and EOI checked); the outer layers are the length fields before it that end at the same
place (at least one, as in the capture). A reply that does not parse raises ReplyError
naming the layer that failed, with the first bytes in hex.

Register packets (UDP 12000, both directions): `00 00 00 00 02 <reg> <n> <value: n
bytes, big-endian>`, with n = 4 in every capture.
"""
import struct

from .errors import CamhostError

SNAP_PORT = 555
CONTROL_PORT = 12000
REPLY_MAGIC = b"GE"
JPEG_MARKER = b"GEPJ"
LENGTH = struct.Struct(">I")
SOI, EOI = b"\xff\xd8", b"\xff\xd9"
MAX_HEAD = 4096           # bytes before GEPJ; the capture had 92
MAX_JPEG = 64 << 20
DUMP = 48                 # bytes shown when a reply does not parse
# The request is not public: `GE` and an empty length-prefixed layer, the reply's framing,
# is what there is to try until a captured one (--request FILE) replaces it.
DEFAULT_REQUEST = REPLY_MAGIC + LENGTH.pack(0)
REGISTER_PREFIX = b"\x00\x00\x00\x00\x02"


class ReplyError(CamhostError):
    """A snap reply that does not parse; `layer` names the part that failed."""

    def __init__(self, layer, message, data=b""):
        self.layer = layer
        dump = data[:DUMP].hex(" ")
        super().__init__("snap reply, %s: %s%s" % (layer, message, (
            "; first %d bytes: %s" % (min(len(data), DUMP), dump)) if data else ""))


class WireError(CamhostError):
    """A register packet that does not parse."""


class Layout:
    """Where the parts of one reply are: every layer's (offset, length), the marker, the
    JPEG's offset and length, and the reply's end."""

    def __init__(self, layers, marker, jpeg_at, jpeg_len):
        self.layers, self.marker = layers, marker
        self.jpeg_at, self.jpeg_len = jpeg_at, jpeg_len
        self.end = jpeg_at + jpeg_len

    def __repr__(self):
        return "Layout(layers=%s, marker=0x%X, jpeg=0x%X+0x%X)" % (
            ["0x%X@0x%X" % (n, at) for at, n in self.layers], self.marker, self.jpeg_at,
            self.jpeg_len)


def parse_head(data, final=False):
    """The Layout from the first bytes of a reply, or None while more are needed
    (final=True: no more will come, so missing bytes are an error)."""
    if len(data) < len(REPLY_MAGIC):
        if final:
            raise ReplyError("reply magic", "only %d bytes came" % len(data), data)
        return None
    if not data.startswith(REPLY_MAGIC):
        raise ReplyError("reply magic", "expected 'GE', got %r" % data[:2], data)
    marker = data.find(JPEG_MARKER, len(REPLY_MAGIC) + LENGTH.size, MAX_HEAD + len(JPEG_MARKER))
    if marker < 0:
        if len(data) >= MAX_HEAD + len(JPEG_MARKER) or final:
            raise ReplyError("GEPJ layer", "no 'GEPJ' marker in the first %d bytes: no JPEG "
                             "in this reply (a wrong request?)" % min(len(data), MAX_HEAD), data)
        return None
    first = marker + len(JPEG_MARKER) + LENGTH.size
    if len(data) < first:
        if final:
            raise ReplyError("GEPJ layer", "the reply ends inside the JPEG's length", data)
        return None
    # the GEPJ layer: its length field, then "GEPJ", the JPEG's length, ..., the JPEG last
    field = marker - LENGTH.size
    (layer_len,) = LENGTH.unpack_from(data, field)
    (jpeg_len,) = LENGTH.unpack_from(data, first - LENGTH.size)
    end = marker + layer_len
    if not len(SOI) + len(EOI) <= jpeg_len <= MAX_JPEG:
        raise ReplyError("GEPJ layer", "JPEG length %d is not a picture's (at most %d)"
                         % (jpeg_len, MAX_JPEG), data)
    if jpeg_len > end - first:
        raise ReplyError("GEPJ layer", "the JPEG's length %d does not fit the layer's %d "
                         "(at offset 0x%X): one of them is wrong" % (jpeg_len, layer_len, field),
                         data)
    # the layers around it: each length field before it that ends where it ends
    outer = [(at, LENGTH.unpack_from(data, at)[0]) for at in range(len(REPLY_MAGIC), field)]
    outer = [(at, n) for at, n in outer if at + LENGTH.size + n == end]
    if not outer:
        raise ReplyError("outer layers", "no length before the GEPJ layer ends where it does "
                         "(offset 0x%X, after the layer's %d bytes at 0x%X): a wrong length"
                         % (end, layer_len, field), data)
    return Layout(outer + [(field, layer_len)], marker, end - jpeg_len, jpeg_len)


def jpeg_of(reply):
    """The JPEG in one whole reply, checked (SOI and EOI), and its Layout."""
    layout = parse_head(reply, final=True)
    if len(reply) < layout.end:
        raise ReplyError("JPEG", "truncated: %d of %d JPEG bytes came"
                         % (len(reply) - layout.jpeg_at, layout.jpeg_len), reply)
    jpeg = reply[layout.jpeg_at:layout.end]
    check_jpeg_ends(jpeg, reply)
    return jpeg, layout


def check_jpeg_ends(jpeg, reply=b""):
    if not jpeg.startswith(SOI):
        raise ReplyError("JPEG", "no SOI (FF D8) where the lengths put the JPEG's start (it "
                         "starts %s): no JPEG in this reply" % jpeg[:2].hex(" "), reply)
    if not jpeg.endswith(EOI):
        raise ReplyError("JPEG", "does not end with EOI (FF D9) where the lengths say: a "
                         "wrong length, or a cut-off picture (ends %s)" % jpeg[-2:].hex(" "),
                         reply)


def build_reply(jpeg, head=b"", headers=(b"",), gap=b""):
    """A reply around `jpeg` (for the simulator and tests): "GE" + head, one outer layer
    per entry of `headers` (outermost first: its length, that header, the next layer),
    and innermost the GEPJ layer: its length, "GEPJ", the JPEG's length, `gap`, the JPEG."""
    content = JPEG_MARKER + LENGTH.pack(len(jpeg)) + gap + jpeg
    content = LENGTH.pack(len(content)) + content
    for header in reversed(headers):      # inside out: each length covers what follows
        content = LENGTH.pack(len(header) + len(content)) + header + content
    return REPLY_MAGIC + head + content


# --- registers ----------------------------------------------------------------------------
def build_register(reg, value, size=4):
    if not 0 <= reg <= 0xFF:
        raise WireError("register %r is not 0-255" % reg)
    if not 0 <= value < 1 << (8 * size):
        raise WireError("value %r does not fit %d bytes (0-%d)" % (value, size,
                                                                   (1 << (8 * size)) - 1))
    return REGISTER_PREFIX + bytes((reg, size)) + value.to_bytes(size, "big")


def parse_register(data):
    """(register, value) of one report or write."""
    if len(data) < len(REGISTER_PREFIX) + 2:
        raise WireError("register packet of %d bytes is too short (%s)" % (len(data),
                                                                           data.hex(" ")))
    if not data.startswith(REGISTER_PREFIX):
        raise WireError("not a register packet: starts %s, not 00 00 00 00 02"
                        % data[:5].hex(" "))
    reg, size = data[5], data[6]
    if not 1 <= size <= 8 or len(data) != 7 + size:
        raise WireError("register 0x%02X: value length %d does not match the %d bytes "
                        "that follow (%s)" % (reg, size, len(data) - 7, data.hex(" ")))
    return reg, int.from_bytes(data[7:], "big")
