"""Settings set over MQTT (night mode, IR LED and IR-cut, the front LEDs) kept across restarts.

They live in state_dir/settings.json beside the position, under its rules for the
flash: written atomically (persist.write_json), only when they differ from the
file, and at most once per persist_min_interval_s; a change inside that gap is
written when it ends, and at exit. In AUTO the light decides the IR LED and the
filter, so only the mode is kept and AUTO's own switching never writes. A damaged
file gives the defaults and a sentence in the state's problems, never a crash.
"""
from .compat import MinGap, ticks_add
from .ir import CUTS, MODES
from .led import LED_MODES
from .persist import read_json, write_json

ON_OFF = ("OFF", "ON")
# saved key -> the values it accepts; the order is the order they are restored in
KEYS = (("night_mode", MODES), ("ir_cut", CUTS), ("ir_led", ON_OFF),
        ("led_green", LED_MODES), ("led_red", LED_MODES))


class Settings:
    """A loop device: the deferred write."""

    def __init__(self, camera, path, min_interval_s):
        self._cam = camera
        self.path = path
        self._gap = MinGap(min_interval_s * 1000000)
        self._kept = None      # the settings the file holds (or the defaults it stands for)
        self.due = None
        self.writes = 0        # for tests and the flash-wear benchmark
        self.error = None      # the sentence for the state's problems, or None

    def current(self):
        """The settings now, as a tuple in KEYS order (cheap to compare on every change)."""
        ir, leds, failed = self._cam.ir, self._cam.leds, self._cam.failed
        manual = ir.mode != "AUTO"
        now = (ir.mode, ir.cut if manual else None, ON_OFF[ir.led] if manual else None,
               leds["green"].mode, leds["red"].mode)
        if not failed or self._kept is None:
            return now
        # a device out of service keeps its setting: the fault is not the user's choice
        return tuple(kept if key in failed else value
                     for (key, accepted), kept, value in zip(KEYS, self._kept, now))

    def restore(self, initial_mode):
        """Apply the saved settings, or the defaults (night mode `initial_mode`). Run
        again after a line fault (Camera._attempt): the devices left are restored."""
        saved = self._load()
        ir = self._cam.ir
        ir.set_mode(saved.get("night_mode", initial_mode))
        # a device out of service (a failed line) is left as it is
        if ir.mode != "AUTO":
            if saved.get("ir_cut", ir.cut) != ir.cut and not ir.cut_out:
                ir.set_cut(saved["ir_cut"])
            if "ir_led" in saved and not ir.led_out:
                ir.set_led(saved["ir_led"] == "ON")
        for color in ("green", "red"):
            key = "led_" + color
            if key in saved and key not in self._cam.failed:
                self._cam.leds[color].set(saved[key])
        self._kept = self.current()

    def _load(self):
        try:
            data = read_json(self.path)    # None: none saved yet, the defaults
        except ValueError as e:
            return self._damaged(str(e))
        if data is None:
            return {}
        if not isinstance(data, dict):
            return self._damaged("not a JSON object")
        saved = {}
        for key, accepted in KEYS:
            value = data.get(key)
            if value in accepted:
                saved[key] = value
            elif value is not None:
                return self._damaged("%s is %r; accepted: %s" % (
                    key, value if len(repr(value)) < 40 else "...", ", ".join(accepted)))
        return saved

    def _damaged(self, why):
        self.error = "%s is damaged (%s); using the default settings until one is set" % (
            self.path, why)
        return {}

    def note(self):
        """Camera.changed() hook: schedule a write if the settings moved from the file's."""
        if self._kept is None or self.due is not None:
            return   # not restored yet, or a write is already coming
        if self.current() != self._kept:
            now = self._cam.now()
            self.due = ticks_add(now, self._gap.wait(now))

    def tick(self, now):
        wait = self._gap.wait(now)     # also forgets the last write before the ticks wrap
        self.due = ticks_add(now, wait) if wait else None
        if not wait:
            self._write(now)

    def flush(self):
        """At exit: write a change the gap still holds back."""
        self.due = None
        if self._kept is not None:
            self._write(self._cam.now())

    def _write(self, now):
        cur = self.current()
        if cur == self._kept:
            return
        doc = {}
        for (key, accepted), value in zip(KEYS, cur):
            if value is not None:
                doc[key] = value
        # adopted even if the write fails: a full flash is reported, not retried per change
        self._kept = cur
        try:
            write_json(self.path, doc)
        except OSError as e:
            self.error = "cannot save settings to %s: %s; they last until a restart" % (
                self.path, e)
            self._cam.changed()
            return
        if self.error:
            self.error = None
            self._cam.changed()
        self.writes += 1
        self._gap.mark(now)
        if self._gap.gap_us:
            self.due = ticks_add(now, self._gap.gap_us)   # look when the gap ends
