"""Talking to OpenIPC's majestic (the streamer) over its local HTTP port.

Only the pure parsing lives here so far: the HTTP/1.0 status line and headers
of an answer, and the `isp_again` line of `/metrics/isp` (Prometheus text),
read one line at a time so the body is never held whole.
"""


class MajesticError(Exception):
    pass


def parse_head(head):
    """(status, content_length) from the bytes before the blank line.

    Content-Length is required: the snapshot relay needs it for the MQTT
    header before the first byte of the image arrives.
    """
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        raise MajesticError("majestic answered something that is not HTTP")
    try:
        status = int(parts[1])
    except ValueError:
        raise MajesticError("majestic sent a bad HTTP status line")
    length = None
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                raise MajesticError("majestic sent a bad Content-Length")
            if length < 0:
                raise MajesticError("majestic sent a bad Content-Length")
    if length is None:
        raise MajesticError("majestic sent no Content-Length")
    return status, length


def gain_from_line(line):
    """The value of an `isp_again` sample line, or None for any other line."""
    line = line.strip()
    if not line.startswith(b"isp_again"):
        return None
    rest = line[9:]
    if rest[:1] == b"{":
        end = rest.find(b"}")
        if end < 0:
            return None
        rest = rest[end + 1:]
    elif rest[:1] not in (b" ", b"\t"):
        return None  # another metric whose name starts with isp_again
    fields = rest.split()
    if not fields:
        return None
    try:
        return float(fields[0])
    except ValueError:
        return None
