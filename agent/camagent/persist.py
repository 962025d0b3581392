"""Small JSON state files in state_dir, written atomically and sparingly.

The flash under state_dir wears with every write, so the motor position is
saved at most once per `min_interval_s` after moves end. A power cut mid-move
must not leave a position that looks valid: the first move after a saved rest
first marks the file "moving" (one write per burst of moves), and only the
deferred save after the burst marks it at rest again.
"""
import json
import os

from .compat import MinGap, read_text, reason, ticks_add


def read_json(path):
    """The parsed JSON file `path`: None when it is missing, ValueError saying why
    when it cannot be used (too big, not UTF-8, not JSON, nested too deeply)."""
    try:
        # a state file holds a few hundred bytes; a bigger one is damaged, and is not read
        text = read_text(path, 4096)
    except OSError as e:
        raise ValueError("cannot read it: %s" % reason(e))
    except UnicodeError:
        raise ValueError("not JSON (invalid UTF-8)")
    if text is None:
        return None
    try:
        return parse_json(text)
    except ValueError as e:
        raise ValueError("not JSON (%s)" % e)


def parse_json(text):
    """json.loads, with every way it fails as ValueError saying why."""
    try:
        return json.loads(text)
    except (RuntimeError, MemoryError):
        # CPython's RecursionError is a RuntimeError; MicroPython's parser builds deep
        # nesting on the heap and runs out
        raise ValueError("nested too deeply for the memory left")


def write_json(path, obj):
    """Write via a temporary file and rename, so a crash leaves the old or the new file."""
    _check_writable(path.rsplit("/", 1)[0] or "/")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(obj))
    os.rename(tmp, path)


def _check_writable(directory):
    """OSError unless `directory` is there on a file system that takes a new file. Found
    out without open(): one that fails costs fd 0 on MicroPython 1.22.0 (see
    compat.read_text), and a read-only or full state_dir would fail every save."""
    if os.stat(directory)[0] & 0o170000 != 0o040000:
        raise OSError(20, directory)          # ENOTDIR
    try:
        st = os.statvfs(directory)
    except OSError:
        return              # a port without statvfs (WASI): open() will tell
    if st[8] & 1:
        raise OSError(30, directory)          # ST_RDONLY: EROFS
    if st[3] == 0:
        raise OSError(28, directory)          # no free block: ENOSPC


def ensure_dir(path):
    """Make directory `path` and its missing parents; OSError when that cannot be done."""
    try:
        mode = os.stat(path)[0]
    except OSError:
        parent = path.rsplit("/", 1)[0]
        if parent and parent != path:
            ensure_dir(parent)
        os.mkdir(path)
        return
    if mode & 0o170000 != 0o040000:
        raise OSError(20, path)     # ENOTDIR: a file is in the way


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _axis_fault(saved, axis):
    """Why `saved` is not a position `axis` can be at, or None when it is one."""
    if not isinstance(saved, dict):
        return "no %s position" % axis.name
    steps, phase = saved.get("steps"), saved.get("phase")
    # exact types: int() would turn 3.7 into 3 and bool() would make "false" true
    if not (_is_int(steps) and _is_int(phase) and isinstance(saved.get("homed"), bool)):
        return "%s position is not whole steps, phase and homed" % axis.name
    if not axis.min_steps <= steps <= axis.max_steps:
        return "%s steps %d outside %d..%d" % (axis.name, steps, axis.min_steps, axis.max_steps)
    if not 0 <= phase < 8:
        return "%s phase %d outside 0..7" % (axis.name, phase)
    return None


class PositionStore:
    """Saves the axes' positions; a loop device for the deferred save."""

    def __init__(self, camera, path, min_interval_s):
        self._cam = camera
        self.path = path
        self._writes_gap = MinGap(min_interval_s * 1000000)
        self._at_rest_on_disk = None
        self.due = None
        self.writes = 0  # for tests and the flash-wear benchmark
        self.write_error = None
        self.load_error = None   # kept for the session: the axes stay unhomed

    @property
    def error(self):
        """The sentence for the state's problems, or None."""
        return self.write_error or self.load_error

    def load(self):
        """The saved positions when the file holds a trusted rest position for every
        axis, else None (the axes start at park, not homed). A damaged file is reported
        in `error`, never raised: a bad sector must not stop the agent starting."""
        try:
            data = read_json(self.path)
        except ValueError as e:
            return self._damaged(str(e))
        if data is None:
            return None          # none saved yet
        if not isinstance(data, dict) or not isinstance(data.get("at_rest"), bool):
            return self._damaged("not a position file")
        self._at_rest_on_disk = data["at_rest"]
        if not self._at_rest_on_disk:
            return None          # a move was cut short: normal after a power cut
        for name, axis in self._cam.axes.items():
            fault = _axis_fault(data.get(name), axis)
            if fault:
                return self._damaged(fault)
        return data

    def _damaged(self, why):
        self._at_rest_on_disk = None     # rewrite it at the next chance
        self.load_error = "%s is damaged (%s); starting at the park position, not homed" % (
            self.path, why)
        return None

    def moving(self):
        """A move starts: make sure the file no longer claims a valid rest position."""
        if self._at_rest_on_disk is not False:
            self._write(False)
        # nothing is saved while moving, but a tick when the gap ends forgets the last
        # write before the ticks wrap (a move may outlast them)
        now = self._cam.now()
        wait = self._writes_gap.wait(now)
        self.due = ticks_add(now, wait) if wait else None

    def resting(self, now):
        """All axes stopped: save, but not more often than min_interval_s."""
        self.due = ticks_add(now, self._writes_gap.wait(now))

    def tick(self, now):
        self.due = None
        self._writes_gap.wait(now)
        if not self._cam.moving:
            self._write(True)

    def flush(self):
        if self.due is not None or self._at_rest_on_disk is not True:
            self.due = None
            self._write(not self._cam.moving)

    def _write(self, at_rest):
        doc = {"at_rest": at_rest}
        for name, axis in self._cam.axes.items():
            doc[name] = axis.saved()
        try:
            write_json(self.path, doc)
        except OSError as e:
            # losing the saved position only costs a homing; keep driving the motors
            self.write_error = "cannot save position to %s: %s" % (self.path, reason(e))
            self._cam.changed()
            return
        self.write_error = None
        self._at_rest_on_disk = at_rest
        self._writes_gap.mark(self._cam.now())
        self.writes += 1
