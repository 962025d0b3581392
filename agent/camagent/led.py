"""A front LED: ON, OFF or BLINK, toggled from the event loop."""
from .compat import ticks_add

LED_MODES = ("ON", "OFF", "BLINK")


class Led:
    def __init__(self, camera, line, blink_ms):
        self._cam = camera
        self._line = line
        self.mode = "OFF"
        self.due = None
        self._half_us = blink_ms * 500   # config checked it: 100 to 10000 ms

    def set(self, mode):
        if mode not in LED_MODES:
            raise ValueError("LED mode must be ON, OFF or BLINK")
        self.mode = mode
        self._line.set(0 if mode == "OFF" else 1)   # BLINK starts lit
        self.due = ticks_add(self._cam.now(), self._half_us) if mode == "BLINK" else None
        self._cam.changed()

    def out_of_service(self, device):
        """Its line failed: no more blinking (the camera writes the line low)."""
        self.mode = "OFF"
        self.due = None

    def tick(self, now):
        self._line.set(0 if self._line.value else 1)
        self.due = ticks_add(self.due, self._half_us)
