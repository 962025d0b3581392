"""Named pan/tilt positions, kept in state_dir/presets.json.

Positions are stored in half-steps, the motors' own unit, so a preset keeps
pointing at the same spot if the degree calibration is changed later. Names are
display text only (they become Home Assistant select options), never paths.
"""
from .compat import const, reason
from .persist import _is_int, read_json, write_json

MAX_PRESETS = const(16)
_MAX_NAME = const(24)
NAME_CHARS = "letters, digits, space, - _ ."


def clean_name(text):
    """The preset name for `text` (whitespace trimmed and collapsed); ValueError if unusable."""
    name = " ".join(text.split())
    if not name:
        raise ValueError("a preset name is needed: 1 to %d characters (%s)"
                         % (_MAX_NAME, NAME_CHARS))
    if len(name) > _MAX_NAME:
        raise ValueError("preset name is %d characters long; at most %d accepted"
                         % (len(name), _MAX_NAME))
    for ch in name:
        if ord(ch) > 126 or not (ch.isalpha() or ch.isdigit() or ch in " -_."):
            raise ValueError("preset name %r has a character that is not accepted; "
                             "use %s" % (name, NAME_CHARS))
    return name


class Presets:
    def __init__(self, path):
        self.path = path
        self.items = {}    # name -> (pan_steps, tilt_steps)
        self.changes = 0   # bumped on every save or delete; the MQTT session watches it
        self.load_error = None
        self._load()

    def _load(self):
        try:
            data = read_json(self.path)
        except ValueError as e:    # a hand edit, a bad sector: reported, never raised
            return self._damaged(str(e))
        if data is None:
            return      # none saved yet
        entries = data.get("presets") if isinstance(data, dict) else None
        if not isinstance(entries, dict):
            return self._damaged("not a presets file")
        for name, pos in entries.items():
            # a hand-edited or damaged entry is skipped, the rest are kept
            try:
                name = clean_name(name)
                pan, tilt = pos["pan"], pos["tilt"]
            except (ValueError, TypeError, KeyError, AttributeError):
                continue
            if _is_int(pan) and _is_int(tilt) and len(self.items) < MAX_PRESETS:
                self.items[name] = (pan, tilt)

    def _damaged(self, why):
        self.load_error = "%s is damaged (%s); starting with no presets" % (self.path, why)

    def names(self):
        return sorted(self.items)

    def find(self, name):
        """The stored spelling of `name` (matched case-insensitively), or None."""
        low = name.lower()
        for key in self.items:
            if key.lower() == low:
                return key
        return None

    def at(self, pan_steps, tilt_steps):
        """The preset at exactly this position (the first by name if several), or None."""
        found = None
        for name, pos in self.items.items():
            if pos[0] == pan_steps and pos[1] == tilt_steps and (found is None or name < found):
                found = name
        return found

    def get(self, name):
        """(pan_steps, tilt_steps) of preset `name`; ValueError naming the saved ones."""
        key = self.find(name)
        if key is None:
            raise ValueError("no preset named %r; saved presets: %s"
                             % (name, ", ".join(self.names()) or "none"))
        return self.items[key]

    def save(self, name, pan_steps, tilt_steps):
        key = self.find(name)
        if key is None and len(self.items) >= MAX_PRESETS:
            raise ValueError("already %d presets, the most accepted; delete one first"
                             % MAX_PRESETS)
        items = dict(self.items)
        if key is not None:
            del items[key]   # the new spelling replaces the old one
        items[name] = (pan_steps, tilt_steps)
        self._store(items)

    def delete(self, name):
        self.get(name)
        items = dict(self.items)
        del items[self.find(name)]
        self._store(items)

    def _store(self, items):
        """Write first, then adopt: a failed write loses nothing."""
        doc = {}
        for name, pos in items.items():
            doc[name] = {"pan": pos[0], "tilt": pos[1]}
        try:
            write_json(self.path, {"presets": doc})
        except OSError as e:
            raise ValueError("cannot write %s (%s); presets unchanged" % (self.path, reason(e)))
        self.items = items
        self.changes += 1
