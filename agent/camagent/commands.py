"""The MQTT command table: topic suffix -> payload parser -> camera action.

A payload is data in the one form its topic accepts: it is checked completely
before anything moves, and never executed or used as a path. Every rejection
raises CommandError with a sentence saying what was wrong and what is accepted;
the session publishes it on <base>/error.
"""
import json

from .compat import const

from .gpio import GpioError
from .ir import CUTS, MODES
from .led import LED_MODES
from .presets import clean_name
from .stepper import finite

MAX_PAYLOAD = const(512)

# suffix under <base>/ -> the method that runs it, called with the payload and the
# topic's first level (the device: pan, tilt, led_green ...); the received topic is
# only ever a key here
TOPICS = {
    "pan/set": "_set",
    "tilt/set": "_set",
    "pan/step": "_step",
    "tilt/step": "_step",
    "ptz/set": "_ptz_set",
    "ptz/move": "_ptz_move",
    "ptz/stop": "_ptz_stop",
    "ptz/home": "_ptz_home",
    "preset/save": "_preset_save",
    "preset/goto": "_preset_goto",
    "preset/delete": "_preset_delete",
    "ir_led/set": "_ir_led",
    "ir_cut/set": "_ir_cut",
    "night_mode/set": "_night_mode",
    "led_green/set": "_led",
    "led_red/set": "_led",
    "sd/reset": "_sd_reset",
    "light/set": "_light",
    "snapshot/get": "_snapshot",
}


class CommandError(Exception):
    """A rejected command; str(e) is the sentence for the error topic."""


class Commands:
    def __init__(self, camera, presets, increment_deg):
        self.cam = camera
        self.presets = presets
        self.increment = increment_deg
        self.accepted = 0
        self.rejected = 0

    def handle(self, suffix, payload):
        """Check and run one command; CommandError if it was rejected."""
        try:
            if len(payload) > MAX_PAYLOAD:
                raise CommandError("payload is %d bytes; at most %d accepted"
                                   % (len(payload), MAX_PAYLOAD))
            method = TOPICS.get(suffix)
            if method is None:
                raise CommandError("unknown command topic; accepted: %s"
                                   % ", ".join(sorted(TOPICS)))
            try:
                getattr(self, method)(payload, suffix.split("/")[0])
            except ValueError as e:      # the devices' own range and type checks
                raise CommandError(str(e))
            except GpioError as e:
                # the line's device goes out of service; this reply is its one report
                raise CommandError(self.cam.fault(e, answered=True))
        except CommandError:
            self.rejected += 1
            raise
        self.accepted += 1

    def _working(self, device):
        """Refuse a command for a device out of service, naming its fault."""
        why = self.cam.failed.get(device)
        if why is not None:
            raise CommandError(why)

    # --- axes ---------------------------------------------------------------------
    def _axis(self, name):
        self._working(name)
        axis = self.cam.axes[name]
        if axis.homing:
            raise CommandError("%s is homing; wait until it is done or send ptz/stop" % name)
        return axis

    def _aim(self, name, deg):
        """The axis `name`, once `deg` is a position in its range."""
        axis = self._axis(name)
        _in_range(name + " position", deg, axis.min_deg, axis.max_deg, "degrees")
        return axis

    def _set(self, payload, name):
        deg = _number(payload, name + " position in degrees")
        self._aim(name, deg).move_to_deg(deg)

    def _step(self, payload, name):
        delta = _number(payload, name + " step in degrees (signed)")
        axis = self._axis(name)
        span = axis.max_deg - axis.min_deg   # at most the whole range
        _in_range(name + " step", delta, -span, span, "degrees")
        axis.move_by_deg(delta)   # stops at the soft limit

    def _ptz_set(self, payload, device):
        try:
            doc = json.loads(_text(payload))
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise CommandError('ptz/set accepts a JSON object such as '
                               '{"pan": 90, "tilt": 20, "speed": 30}')
        for key in doc:
            if key not in ("pan", "tilt", "speed"):
                raise CommandError("ptz/set: unknown key %r; accepted: pan, tilt, speed"
                                   % (key if len(key) <= 32 else key[:32] + "..."))
        moves = []
        for name in ("pan", "tilt"):
            if name in doc:
                deg = _json_number(doc[name], name)
                moves.append((self._aim(name, deg), deg))
        if not moves:
            raise CommandError("ptz/set needs pan or tilt (degrees); speed alone moves nothing")
        speed = None
        if "speed" in doc:
            speed = _json_number(doc["speed"], "speed")
            top = min(axis.max_speed_dps() for axis, deg in moves)
            _in_range("speed", speed, 0.1, int(top * 10) / 10, "degrees/s")   # as shown
        for axis, deg in moves:   # everything checked: now move
            axis.move_to_deg(deg, speed)

    def _ptz_move(self, payload, device):
        word = _word(payload, ("LEFT", "RIGHT", "UP", "DOWN"), "ptz/move")
        axis = self._axis("pan" if word in ("LEFT", "RIGHT") else "tilt")
        axis.move_by_deg(self.increment if word in ("RIGHT", "UP") else -self.increment)

    def _ptz_stop(self, payload, device):
        for axis in self._in_service():   # one out of service is already released
            axis.stop()

    def _ptz_home(self, payload, device):
        axes = self._in_service()
        if not axes:
            self._working("pan")
        for axis in axes:
            axis.home()

    def _in_service(self):
        return [axis for axis in (self.cam.pan, self.cam.tilt)
                if axis.name not in self.cam.failed]

    # --- presets ------------------------------------------------------------------
    def _preset_save(self, payload, device):
        name = clean_name(_text(payload))
        if self.cam.moving:
            raise CommandError("the camera is moving; save the preset once it has stopped")
        self.presets.save(name, self.cam.pan.steps, self.cam.tilt.steps)

    def _preset_goto(self, payload, device):
        pan, tilt = self.presets.get(clean_name(_text(payload)))
        pan_axis, tilt_axis = self._axis("pan"), self._axis("tilt")
        pan_axis.move_to(pan)
        tilt_axis.move_to(tilt)

    def _preset_delete(self, payload, device):
        self.presets.delete(clean_name(_text(payload)))

    # --- IR, LEDs, power ----------------------------------------------------------
    def _ir_led(self, payload, device):
        self._working(device)
        self.cam.ir.set_led(_word(payload, ("ON", "OFF"), "ir_led/set") == "ON")

    def _ir_cut(self, payload, device):
        self._working(device)
        self.cam.ir.set_cut(_word(payload, CUTS, "ir_cut/set"))

    def _night_mode(self, payload, device):
        if "ir_led" in self.cam.failed:   # one of the two left is enough: it drives that
            self._working("ir_cut")
        self.cam.ir.set_mode(_word(payload, MODES, "night_mode/set"))

    def _led(self, payload, device):
        self._working(device)
        self.cam.leds[device[4:]].set(_word(payload, LED_MODES, device + "/set"))

    def _sd_reset(self, payload, device):
        self._working("sd_reset")
        self.cam.power.sd_reset()

    def _light(self, payload, device):
        self.cam.ir.set_light(_number(payload, "light level"))   # which checks the range

    def _snapshot(self, payload, device):
        if self.cam.snapshot is None:
            raise CommandError("snapshots need majestic: set majestic.port in the config")
        self.cam.snapshot.request_snapshot("mqtt")   # errors follow on <base>/error


# --- payload parsing ------------------------------------------------------------------
def _text(payload):
    """The payload as trimmed text; only printable ASCII (and blanks) are accepted."""
    for b in payload:
        if (b < 32 and b not in (9, 10, 13)) or b > 126:
            raise CommandError("payload must be plain ASCII text")
    return payload.decode().strip()


def _number(payload, what):
    text = _text(payload)
    # only digits, signs, points and e (float() also takes "nan", "inf" and "1_000")
    if not text.strip("0123456789+-.eE"):
        try:
            return _finite(float(text), what)
        except ValueError:
            pass
    raise CommandError("%s must be a decimal number such as 90 or -12.5" % what)


def _json_number(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CommandError("ptz/set: %s must be a number" % what)
    return _finite(value, "ptz/set: " + what)


def _finite(value, what):
    if not finite(value):
        raise CommandError("%s must be a finite number" % what)
    return value


def _word(payload, choices, what):
    word = _text(payload).upper()
    if word not in choices:
        raise CommandError("%s accepts %s (any case)" % (what, " or ".join(choices)))
    return word


def _in_range(what, value, low, high, unit):
    if not low <= value <= high:
        raise CommandError("%s %s is out of range; %s to %s %s accepted"
                           % (what, _fmt(value), _fmt(low), _fmt(high), unit))


def _fmt(x):
    return "%.1f" % x if abs(x) < 1e9 else "%g" % x


# --- the error document -----------------------------------------------------------------
def preview(data, limit=64):
    """Up to `limit` bytes as text (64: the payload quoted back in an error document):
    printable ASCII kept, anything else as \\xNN."""
    out = []
    for b in data[:limit]:
        out.append(chr(b) if 32 <= b < 127 and b != 92 else "\\x%02x" % b)
    return "".join(out)


def error_document(topic, payload, message):
    return json.dumps({"topic": preview(topic, 200), "payload": preview(payload),
                       "error": message})
