"""Real day/night on the camera: majestic's ISP gain feeds AUTO, and the ISP's
colour mode follows the IR-cut filter.

The IMOU Ranger RC has no light sensor, but the image sensor's analog gain
(`isp_again` in majestic's /metrics/isp) says how dark the scene is: high in
the dark, low in daylight. GainLight polls it every `night.gain_poll_s` and
maps it onto the light scale the IR controller's hysteresis already works on:
a gain above `night.gain_on` reads as darker than `night.dark_below`, one
below `night.gain_off` as brighter than `night.light_above`, so AUTO switches
with the same hysteresis and dwell as for any other light source.

NightColour asks majestic for /night/on or /night/off whenever the mode puts
the filter out or in, so the night picture is greyscale, not pink. Majestic
itself drives no pins (see docs/camera-features.md).
"""
from .compat import ticks_add
from .majestic import Http, MajesticError, gain_from_line


def gain_to_level(gain, night):
    """The 0..100 light level a gain stands for, given the `night` config."""
    low, high = night["dark_below"], night["light_above"]
    level = low + (high - low) * (night["gain_on"] - gain) / (night["gain_on"] - night["gain_off"])
    return 0 if level < 0 else 100 if level > 100 else level


class GainLight:
    """AUTO's light source: isp_again from /metrics/isp, polled at a low rate."""

    def __init__(self, camera, http, night):
        self._cam = camera
        self._http = http
        self._night = night
        self._interval_us = night["gain_poll_s"] * 1000000
        self.gain = None
        self.error = None
        self._line = b""
        self._skip = False
        self._found = None
        self._size = 0
        self.due = camera.now()

    def tick(self, now):
        self.due = ticks_add(now, self._interval_us)
        self._http.get("/metrics/isp", self)

    # --- majestic.Http handler ------------------------------------------------------
    def head(self, length):
        self._line = b""
        self._skip = False
        self._found = None
        self._size = 0

    def ready(self):
        return True

    def chunk(self, buf, n):
        self._size += n
        if self._size > 32768:   # /metrics/isp is a few hundred bytes; more is not majestic
            raise MajesticError("/metrics/isp is longer than 32768 bytes")
        start = 0
        while start < n:
            nl = buf.find(b"\n", start, n)
            end = n if nl < 0 else nl
            if not self._skip:
                if len(self._line) + end - start > 200:   # a longer line is skipped, not held
                    self._skip = True
                    self._line = b""
                else:
                    self._line += buf[start:end]
            if nl < 0:
                return
            if not self._skip and self._found is None:
                self._found = gain_from_line(self._line)
            self._line = b""
            self._skip = False
            start = nl + 1

    def done(self, error):
        if error is None and self._found is None and not self._skip and self._line:
            self._found = gain_from_line(self._line)   # a last line without a newline
        if error is None and self._found is None:
            error = "majestic's /metrics/isp has no isp_again line"
        if error is None:
            self.gain = self._found
            self._cam.ir.set_light(gain_to_level(self.gain, self._night))
        else:
            error = "night: " + error
        if error != self.error:   # report a change of trouble, not every poll
            self.error = error
            self._cam.changed()


class NightColour:
    """Majestic's colour (/night/off) or greyscale (/night/on) after the IR-cut filter."""

    def __init__(self, http):
        self._http = http
        self.error = None

    def switched(self, day_or_night):
        self._http.get("/night/on" if day_or_night == "NIGHT" else "/night/off", self)

    def head(self, length):
        pass

    def ready(self):
        return True

    def chunk(self, buf, n):
        pass   # "1" or "0": the status line says enough

    def done(self, error):
        self.error = None if error is None else "night colour: " + error


def attach(camera, cfg):
    """Majestic's parts of the camera, when the config names its port (0: none)."""
    m = cfg["majestic"]
    if not m["port"]:
        return None
    http = Http(camera, m["port"], m["timeout_s"], m["username"], m["password"])
    colour = NightColour(http)
    camera.ir.on_switch = colour.switched
    camera.night_colour = colour
    if cfg["night"]["gain_poll_s"] and camera.light_source is None:
        camera.light_source = GainLight(camera, http, cfg["night"])
        camera.loop.add(camera.light_source)
    return http
