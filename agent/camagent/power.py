"""Wifi module power and the SD card reader's reset line."""
from .compat import ticks_add


class Power:
    def __init__(self, camera, wifi_line, sd_line, sd_reset_ms):
        self._cam = camera
        self._wifi = wifi_line
        self._sd = sd_line
        self._sd_pulse_us = sd_reset_ms * 1000
        self.due = None

    @property
    def wifi(self):
        return bool(self._wifi.value)

    @property
    def sd_resetting(self):
        return self.due is not None

    def sd_reset(self):
        """Pulse the reader's reset: high now, low again after sd_reset_ms."""
        self._sd.set(1)
        self.due = ticks_add(self._cam.now(), self._sd_pulse_us)

    def tick(self, now):
        self._sd.set(0)
        self.due = None

    def out_of_service(self, device):
        """The SD reset line failed: end the pulse (the camera writes the line low)."""
        self.due = None

    def release(self):
        """Shutdown: end a reset pulse early, or the reader stays in reset."""
        self.due = None
        if self._sd.value:
            self._sd.set(0)
