"""A front LED: ON, OFF or BLINK, toggled from the event loop."""
from .compat import ticks_add

LED_MODES = ("ON", "OFF", "BLINK")


class Led:
    def __init__(self, camera, line, blink_ms):
        self._cam = camera
        self._line = line
        self.mode = "OFF"
        self.due = None
        self.set_period(blink_ms)

    def set_period(self, ms):
        if isinstance(ms, bool) or not isinstance(ms, int) or not 100 <= ms <= 10000:
            raise ValueError("blink period must be 100 to 10000 ms")
        self._half_us = ms * 500

    def set(self, mode):
        if mode not in LED_MODES:
            raise ValueError("LED mode must be ON, OFF or BLINK")
        self.mode = mode
        if mode == "BLINK":
            self._line.set(1)
            self.due = ticks_add(self._cam.now(), self._half_us)
        else:
            self._line.set(1 if mode == "ON" else 0)
            self.due = None
        self._cam.changed()

    def out_of_service(self, device=None):
        """Its line failed: no more blinking (the camera writes the line low)."""
        self.mode = "OFF"
        self.due = None

    def tick(self, now):
        self._line.set(0 if self._line.value else 1)
        self.due = ticks_add(self.due, self._half_us)
