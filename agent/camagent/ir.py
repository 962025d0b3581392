"""IR LED, latching IR-cut filter, and the day/night mode that drives both.

The IR-cut actuator has two coils, "open" (filter out) and "close" (filter in).
It latches: pulse one coil, then release both. The two coils are never driven
together: a coil is raised only after the other is confirmed low, and a request
that arrives during a pulse waits for that pulse to end.
"""
from .compat import MinGap, ticks_add, ticks_diff

MODES = ("DAY", "NIGHT", "AUTO")
CUTS = ("DAY", "NIGHT")


class Ir:
    def __init__(self, camera, led_line, open_line, close_line, profile, night):
        self._cam = camera
        self._led = led_line
        if profile["ircut_swap"]:  # filter moves the wrong way: coils are wired swapped
            open_line, close_line = close_line, open_line
        self._coil = {"NIGHT": open_line, "DAY": close_line}
        self._pulse_us = profile["ircut_pulse_ms"] * 1000
        self.dark_below = night["dark_below"]
        self.light_above = night["light_above"]
        self._dwell = MinGap(night["min_dwell_s"] * 1000000)   # between AUTO's switches
        self.led = False
        self.cut = None          # unknown until the first pulse
        self.mode = None
        self.light = None
        self.due = None
        self._pulsing = None     # the coil being driven
        self._pending = None     # cut requested during a pulse
        self._recheck = None     # AUTO looks again when the dwell time ends
        self.cut_out = False     # out of service (a line failed): DAY/NIGHT drive the LED only
        self.led_out = False
        self.on_switch = None    # told DAY/NIGHT when the mode switches (majestic's colour)

    @property
    def pulsing(self):
        return self._pulsing is not None or self._pending is not None

    def set_led(self, on):
        on = bool(on)
        self._led.set(1 if on else 0)
        self.led = on
        self._cam.changed()

    def set_cut(self, cut):
        if cut not in CUTS:
            raise ValueError("IR-cut must be DAY or NIGHT")
        if self._pulsing is not None:
            self._pending = cut
            return
        other = self._coil["NIGHT" if cut == "DAY" else "DAY"]
        if other.value:
            other.set(0)
        coil = self._coil[cut]
        coil.set(1)
        self._pulsing = coil
        self.cut = cut
        self.due = ticks_add(self._cam.now(), self._pulse_us)
        self._cam.changed()

    def set_mode(self, mode):
        if mode not in MODES:
            raise ValueError("night mode must be DAY, NIGHT or AUTO")
        self.mode = mode
        self._recheck = None
        if mode == "AUTO":
            self._dwell.forget()  # entering AUTO applies the light level at once
            self._auto(self._cam.now())
        else:
            self._apply(mode)
        self._cam.changed()

    def set_light(self, level):
        """A light level 0 (dark) to 100 (bright) from whatever source feeds AUTO."""
        if isinstance(level, bool) or not isinstance(level, (int, float)) or \
                level != level or not 0 <= level <= 100:
            raise ValueError("light level must be a number from 0 to 100")
        changed = level != self.light
        self.light = level
        if self.mode == "AUTO":
            # even an unchanged level: AUTO keeps the filter where the level puts it
            self._auto(self._cam.now())
        if changed:   # a light file re-read every few seconds must not publish each time
            self._cam.changed()

    def _apply(self, day_or_night):
        if not self.cut_out:
            self.set_cut(day_or_night)
        if not self.led_out:
            self.set_led(day_or_night == "NIGHT")
        if self.on_switch is not None:
            self.on_switch(day_or_night)

    def _auto(self, now):
        """Switch with hysteresis, at most once per dwell time."""
        wait = self._dwell.wait(now)
        # the cut last asked for, even if a pulse still holds it back
        current = self.cut if self._pending is None else self._pending
        if self.light is None or self.dark_below <= self.light <= self.light_above:
            want = current or "DAY"   # no level yet, or inside the hysteresis band: keep
        elif self.light < self.dark_below:
            want = "NIGHT"
        else:
            want = "DAY"
        # a part out of service counts as done
        if (want == current or self.cut_out) and (self.led_out or self.led == (want == "NIGHT")):
            return
        if wait > 0:
            self._recheck = ticks_add(now, wait)
            self._schedule()
            return
        self._dwell.mark(now)
        self._apply(want)
        # look again when the dwell ends: that also forgets the switch before the ticks wrap
        self._recheck = ticks_add(now, self._dwell.gap_us) if self._dwell.gap_us else None
        self._schedule()

    def _schedule(self):
        if self._pulsing is not None:
            return  # the pulse end comes first and reschedules
        self.due = self._recheck

    def tick(self, now):
        if self._pulsing is not None and ticks_diff(now, self.due) >= 0:
            self._pulsing.set(0)
            self._pulsing = None
            self.due = None
            if self._pending is not None:
                cut, self._pending = self._pending, None
                self.set_cut(cut)
                return
        if self._recheck is not None and self._pulsing is None:
            if ticks_diff(now, self._recheck) >= 0:
                self._recheck = None
                if self.mode == "AUTO":
                    self._auto(now)
            else:
                self.due = self._recheck
        if self._pulsing is None and self._recheck is None:
            self.due = None

    def out_of_service(self, part):
        """`part` ("ir_cut" or "ir_led") has a failed line: stop using it (the camera
        writes its lines low); the other part, and AUTO, carry on."""
        if part == "ir_cut":
            self.cut_out = True
            self._pulsing = None
            self._pending = None
            self.due = self._recheck
        else:
            self.led_out = True
            self.led = False

    def release(self):
        """Both coils low (shutdown or a failed pulse)."""
        for coil in self._coil.values():
            if coil.value:
                coil.set(0)
        self._pulsing = None
        self._pending = None
