"""Light-level sources for AUTO night mode.

Until a camera-side sensor reading exists, the level arrives over MQTT
(`light/set`) or from a file that something else keeps current: FileLight
re-reads it every `interval_s` and feeds the IR controller.
"""
from .compat import read_text, reason, ticks_add


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
            text = read_text(self.path, 64)   # a level is a few characters: not a bigger file
            if text is None:
                raise OSError(2, self.path)     # ENOENT, said like any other failure
            self._cam.ir.set_light(float(text.strip()))
            if self.error is not None:   # the problem is gone: say so even at the same level
                self.error = None
                self._cam.changed()
        except (OSError, ValueError) as e:
            error = "light file %s: %s" % (self.path, reason(e) if isinstance(e, OSError)
                                            else e)
            if error != self.error:  # report a change of trouble, not every poll
                self.error = error
                self._cam.changed()
