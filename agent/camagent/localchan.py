"""The local channel's line protocol (majestic's motion.sh, the ONVIF hook).

So far only the parser: one ASCII line, a known verb and a fixed number of
words. Nothing here runs a shell; an unknown or malformed line is refused
with a reason the sender can print.
"""

MAX_LINE = 128

# verb -> number of arguments
VERBS = {
    "motion": 0,
    "move_left": 0, "move_right": 0, "move_up": 0, "move_down": 0, "move_stop": 0,
    "goto_home_position": 0, "get_position": 0, "is_moving": 0, "get_presets": 0,
    "jump_to_abs": 3, "jump_to_rel": 3,
    "move_preset": 1, "remove_preset": 1, "set_preset": 2,
}


class LineError(Exception):
    pass


def parse_line(line):
    """(verb, [words]) from one received line (bytes, newline optional)."""
    if len(line) > MAX_LINE:
        raise LineError("line too long")
    try:
        text = line.decode().strip()
    except UnicodeError:
        raise LineError("line is not text")
    words = text.split()
    if not words:
        raise LineError("empty line")
    verb = words[0]
    want = VERBS.get(verb)
    if want is None:
        raise LineError("unknown command " + verb)
    if len(words) - 1 != want:
        raise LineError(verb + " takes " + str(want) + " argument(s)")
    return verb, words[1:]
