"""Light-level sources for AUTO night mode.

Until a camera-side sensor reading exists, the level arrives over MQTT
(`light/set`) or from a file that something else keeps current: FileLight
re-reads it every `interval_s` and feeds the IR controller.
"""
from .compat import ticks_add


class FileLight:
    def __init__(self, camera, path, interval_s):
        self._cam = camera
        self.path = path
        self._interval_us = interval_s * 1000000
        self.error = None
        self.due = camera.now()

    def tick(self, now):
        self.due = ticks_add(now, self._interval_us)
        try:
            with open(self.path) as f:
                level = float(f.read().strip())
            self._cam.ir.set_light(level)
            self.error = None
        except (OSError, ValueError) as e:
            error = "light file %s: %s" % (self.path, e)
            if error != self.error:  # report a change of trouble, not every poll
                self.error = error
                self._cam.changed()
