"""The MQTT command table: topic suffix -> payload parser -> camera action.

A payload is data in the one form its topic accepts: it is checked completely
before anything moves, and never executed or used as a path. Every rejection
raises CommandError with a sentence saying what was wrong and what is accepted;
the session publishes it on <base>/error.
"""
import json

from .gpio import GpioError
from .ir import CUTS, MODES
from .led import LED_MODES
from .presets import clean_name
from .stepper import finite

MAX_PAYLOAD = 512
PREVIEW = 64            # payload bytes quoted back in an error document
_NUMBER_CHARS = "0123456789+-.eE"
DIRECTIONS = ("LEFT", "RIGHT", "UP", "DOWN")
PTZ_KEYS = ("pan", "tilt", "speed")

# suffix under <base>/ -> (method, argument); the received topic is only ever a key here
TOPICS = {
    "pan/set": ("_set", "pan"),
    "tilt/set": ("_set", "tilt"),
    "pan/step": ("_step", "pan"),
    "tilt/step": ("_step", "tilt"),
    "ptz/set": ("_ptz_set", None),
    "ptz/move": ("_ptz_move", None),
    "ptz/stop": ("_ptz_stop", None),
    "ptz/home": ("_ptz_home", None),
    "preset/save": ("_preset_save", None),
    "preset/goto": ("_preset_goto", None),
    "preset/delete": ("_preset_delete", None),
    "ir_led/set": ("_ir_led", None),
    "ir_cut/set": ("_ir_cut", None),
    "night_mode/set": ("_night_mode", None),
    "led_green/set": ("_led", "green"),
    "led_red/set": ("_led", "red"),
    "sd/reset": ("_sd_reset", None),
    "light/set": ("_light", None),
    "snapshot/get": ("_snapshot", None),
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
            entry = TOPICS.get(suffix)
            if entry is None:
                raise CommandError("unknown command topic; accepted: %s"
                                   % ", ".join(sorted(TOPICS)))
            try:
                getattr(self, entry[0])(payload, entry[1])
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

    def _set(self, payload, name):
        deg = _number(payload, name + " position in degrees")
        axis = self._axis(name)
        _check_range(axis, deg)
        axis.move_to_deg(deg)

    def _step(self, payload, name):
        delta = _number(payload, name + " step in degrees (signed)")
        axis = self._axis(name)
        span = axis.max_deg - axis.min_deg
        if abs(delta) > span:
            raise CommandError("%s step %s is larger than the whole range; -%s to %s "
                               "degrees accepted" % (name, _fmt(delta), _fmt(span), _fmt(span)))
        axis.move_by_deg(delta)   # stops at the soft limit

    def _ptz_set(self, payload, arg):
        try:
            doc = json.loads(_text(payload))
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise CommandError('ptz/set accepts a JSON object such as '
                               '{"pan": 90, "tilt": 20, "speed": 30}')
        for key in doc:
            if key not in PTZ_KEYS:
                raise CommandError("ptz/set: unknown key %r; accepted: pan, tilt, speed"
                                   % _clip(key))
        moves = []
        for name in ("pan", "tilt"):
            if name in doc:
                deg = _json_number(doc[name], name)
                axis = self._axis(name)
                _check_range(axis, deg)
                moves.append((axis, deg))
        if not moves:
            raise CommandError("ptz/set needs pan or tilt (degrees); speed alone moves nothing")
        speed = None
        if "speed" in doc:
            speed = _json_number(doc["speed"], "speed")
            top = min(axis.max_speed_dps() for axis, deg in moves)
            if not 0.1 <= speed <= top:
                raise CommandError("speed %s is out of range; 0.1 to %s degrees/s accepted"
                                   % (_fmt(speed), _fmt(int(top * 10) / 10)))
        for axis, deg in moves:   # everything checked: now move
            axis.move_to_deg(deg, speed)

    def _ptz_move(self, payload, arg):
        word = _word(payload, DIRECTIONS, "ptz/move")
        if word in ("LEFT", "RIGHT"):
            axis = self._axis("pan")
            axis.move_by_deg(self.increment if word == "RIGHT" else -self.increment)
        else:
            axis = self._axis("tilt")
            axis.move_by_deg(self.increment if word == "UP" else -self.increment)

    def _ptz_stop(self, payload, arg):
        for axis in self._in_service():   # one out of service is already released
            axis.stop()

    def _ptz_home(self, payload, arg):
        axes = self._in_service()
        if not axes:
            self._working("pan")
        for axis in axes:
            axis.home()

    def _in_service(self):
        return [axis for axis in (self.cam.pan, self.cam.tilt)
                if axis.name not in self.cam.failed]

    # --- presets ------------------------------------------------------------------
    def _preset_save(self, payload, arg):
        name = clean_name(_text(payload))
        if self.cam.moving:
            raise CommandError("the camera is moving; save the preset once it has stopped")
        self.presets.save(name, self.cam.pan.steps, self.cam.tilt.steps)

    def _preset_goto(self, payload, arg):
        pan, tilt = self.presets.get(clean_name(_text(payload)))
        pan_axis, tilt_axis = self._axis("pan"), self._axis("tilt")
        pan_axis.move_to(pan)
        tilt_axis.move_to(tilt)

    def _preset_delete(self, payload, arg):
        self.presets.delete(clean_name(_text(payload)))

    # --- IR, LEDs, power ----------------------------------------------------------
    def _ir_led(self, payload, arg):
        self._working("ir_led")
        self.cam.ir.set_led(_word(payload, ("ON", "OFF"), "ir_led/set") == "ON")

    def _ir_cut(self, payload, arg):
        self._working("ir_cut")
        self.cam.ir.set_cut(_word(payload, CUTS, "ir_cut/set"))

    def _night_mode(self, payload, arg):
        if "ir_led" in self.cam.failed:   # one of the two left is enough: it drives that
            self._working("ir_cut")
        self.cam.ir.set_mode(_word(payload, MODES, "night_mode/set"))

    def _led(self, payload, name):
        self._working("led_" + name)
        self.cam.leds[name].set(_word(payload, LED_MODES, "led_%s/set" % name))

    def _sd_reset(self, payload, arg):
        self._working("sd_reset")
        self.cam.power.sd_reset()

    def _light(self, payload, arg):
        level = _number(payload, "light level")
        if not 0 <= level <= 100:
            raise CommandError("light level %s is out of range; 0 to 100 accepted"
                               % _fmt(level))
        self.cam.ir.set_light(level)

    def _snapshot(self, payload, arg):
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
    value = None
    if text and all(ch in _NUMBER_CHARS for ch in text):
        try:
            value = float(text)
        except ValueError:
            pass
    if value is None:
        raise CommandError("%s must be a decimal number such as 90 or -12.5" % what)
    return _finite(value, what)


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


def _check_range(axis, deg):
    if not axis.min_deg <= deg <= axis.max_deg:
        raise CommandError("%s position %s is out of range; %s to %s degrees accepted"
                           % (axis.name, _fmt(deg), _fmt(axis.min_deg), _fmt(axis.max_deg)))


def _fmt(x):
    return "%.1f" % x if abs(x) < 1e9 else "%g" % x


def _clip(text):
    return text if len(text) <= 32 else text[:32] + "..."


# --- the error document -----------------------------------------------------------------
def preview(data, limit=PREVIEW):
    """Up to `limit` bytes as text: printable ASCII kept, anything else as \\xNN."""
    out = []
    for b in data[:limit]:
        out.append(chr(b) if 32 <= b < 127 and b != 92 else "\\x%02x" % b)
    return "".join(out)


def error_document(topic, payload, message):
    return json.dumps({"topic": preview(topic, 200), "payload": preview(payload),
                       "error": message})
