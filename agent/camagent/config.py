"""The agent's JSON config: defaults, validation, and one-line errors.

Every key is checked against the type of its default, unknown keys are refused
(a typo must not silently fall back to a default), and a bad value raises
ConfigError naming the file and the dotted key.
"""
import os

from . import boards
from .compat import hostname, read_text, reason
from .persist import ensure_dir, parse_json

DEFAULT_PATH = "/etc/camagent.json"
FILE_LIMIT = 16384   # bytes: a full config is under 2 KB; the heap must not meet a huge one

MQTT_DEFAULTS = {
    "host": "",                  # empty: MQTT off, the agent only drives the hardware
    "port": 1883,
    "username": "",
    "password": "",
    "client_id": "",             # empty: "camagent-<device_id>"
    "keepalive": 60,
    "prefix": "camagent",
    "discovery": True,
    "discovery_prefix": "homeassistant",
    "state_interval": 300,
    "move_increment_deg": 10.0,
    "tls": {"enabled": False, "ca_file": "", "cert_file": "", "key_file": ""},
}

DEFAULTS = {
    "board": "imou-ranger-rc-4mp",
    "device_id": "",             # empty: the hostname
    "gpio_root": "/sys/class/gpio",
    "proc_root": "/proc",        # where camera status is read (tests: a fake tree)
    "state_dir": "/overlay/camagent",
    "home_on_boot": False,
    "wifi_power": True,
    "sd_reset_on_start": True,
    "light_file": "",
    "light_poll_s": 10,
    "night": {"initial_mode": "AUTO", "dark_below": 20, "light_above": 40,
              "min_dwell_s": 60, "gain_poll_s": 5, "gain_on": 14000.0,
              "gain_off": 2000.0},
    # majestic (OpenIPC's streamer) on 127.0.0.1: snapshots, ISP gain, colour mode
    "majestic": {"port": 0, "timeout_s": 10, "username": "", "password": ""},   # port 0: none
    "snapshot": {"interval_s": 0, "retain": False, "query": ""},
    "led_blink_ms": 1000,
    "persist_min_interval_s": 30,
    "timer_spin_us": 0,
    "overrides": {},
    # the local channel (127.0.0.1 TCP) of motion.sh and camagent-local; 0: off
    "local_port": 4223,
    "motion": {"quiet_s": 30, "snapshot": False},
    "mqtt": MQTT_DEFAULTS,
}

# The longest wait the agent times itself: on the camera (32-bit MicroPython) ticks_us
# wraps every ~1074 s and ticks_add() refuses ~537 s (compat.MAX_DELAY_US) or more
TIMER_MAX_S = 500
_TIMER_NOTE = "seconds; the camera's microsecond timers reach at most ~537 s ahead"

# (low, high) bounds of numeric keys, by dotted name, and why a bound is where it is
RANGES = {
    "light_poll_s": (1, TIMER_MAX_S), "night.dark_below": (0, 100),
    "night.light_above": (0, 100), "night.min_dwell_s": (0, TIMER_MAX_S),
    "led_blink_ms": (100, 10000), "persist_min_interval_s": (0, TIMER_MAX_S),
    "timer_spin_us": (0, 20000), "local_port": (0, 65535), "motion.quiet_s": (1, TIMER_MAX_S),
    "night.gain_poll_s": (0, TIMER_MAX_S), "night.gain_on": (0, 1e9), "night.gain_off": (0, 1e9),
    "majestic.port": (0, 65535), "majestic.timeout_s": (1, 60),
    "snapshot.interval_s": (0, TIMER_MAX_S),
    "mqtt.port": (1, 65535), "mqtt.keepalive": (5, 3600), "mqtt.state_interval": (5, 86400),
    "mqtt.move_increment_deg": (0.1, 90),
    "ircut_pulse_ms": (20, 1000), "sd_reset_ms": (1, 1000),
}
# Axis settings (overrides.pan.*, overrides.tilt.*), bounded by what a step loop that
# makes one sysfs write per half-step can do: 10,000 half-steps/s is a write every
# 100 us, and the geared motors stall far below that. 2**24 half-steps is 4096 turns of
# the usual 4096-half-step gearing, and keeps every position a small int on the 32-bit
# camera (up to 2**30), so a step never allocates.
_STEPS = (0, 1 << 24)
_SPEED = (1, 10000)
AXIS_RANGES = {"min_steps": _STEPS, "max_steps": _STEPS, "park": _STEPS,
               "home_margin": _STEPS, "steps_per_degree": (1, 1000),
               "speed": _SPEED, "max_speed": _SPEED, "start_speed": _SPEED,
               "home_speed": _SPEED, "accel": (100, 10000000)}
# The ramp table holds one 4-byte step interval per accelerating half-step, for the
# whole agent's life: (fastest^2 - start_speed^2) / (2 accel) entries
MAX_RAMP_STEPS = 1000
MAX_DEVICE_ID = 64
MAX_TOPIC = 128
RANGE_NOTES = {"light_poll_s": _TIMER_NOTE, "night.min_dwell_s": _TIMER_NOTE,
               "night.gain_poll_s": _TIMER_NOTE, "snapshot.interval_s": _TIMER_NOTE,
               "persist_min_interval_s": _TIMER_NOTE, "motion.quiet_s": _TIMER_NOTE}
CHOICES = {"night.initial_mode": ("DAY", "NIGHT", "AUTO")}
NONEMPTY = ("gpio_root", "proc_root", "state_dir", "mqtt.prefix", "mqtt.discovery_prefix")


class ConfigError(Exception):
    def __init__(self, path, key, message):
        super().__init__("%s: %s: %s" % (path, key, message) if key
                           else "%s: %s" % (path, message))
        self.path = path
        self.key = key


def _type_name(value):
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    return "a list"


def _same_type(default, value):
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return type(value) is type(default)


def _merge(path, prefix, defaults, given):
    if not isinstance(given, dict):
        raise ConfigError(path, prefix or "(top level)", "must be a JSON object")
    out = {}
    for key in given:
        if key not in defaults:
            raise ConfigError(path, prefix + key, "unknown key (known: %s)"
                              % ", ".join(sorted(defaults)))
    for key, default in defaults.items():
        name = prefix + key
        if key not in given:
            out[key] = _copy(default)
            continue
        value = given[key]
        if isinstance(default, dict) and key != "overrides":
            out[key] = _merge(path, name + ".", default, value)
            continue
        if key != "overrides" and not _same_type(default, value):
            raise ConfigError(path, name, "must be %s" % _type_name(default))
        _check_value(path, name, value)
        out[key] = value
    return out


def _copy(value):
    if isinstance(value, dict):
        return dict((k, _copy(v)) for k, v in value.items())
    return value


def _check_value(path, name, value):
    if name in RANGES:
        low, high = RANGES[name]
        if value != value or not low <= value <= high:
            note = RANGE_NOTES.get(name)
            raise ConfigError(path, name, "must be from %s to %s%s"
                              % (low, high, " (%s)" % note if note else ""))
    if name in CHOICES and value not in CHOICES[name]:
        raise ConfigError(path, name, "must be one of %s" % ", ".join(CHOICES[name]))
    if name in NONEMPTY and not value:
        raise ConfigError(path, name, "must not be empty")


def _check_overrides(path, board, overrides):
    """Overrides may only change known profile keys, with sane values."""
    if not isinstance(overrides, dict):
        raise ConfigError(path, "overrides", "must be a JSON object")
    base = boards.profile(board)
    for key, value in overrides.items():
        name = "overrides." + key
        if key in ("pan", "tilt"):
            if not isinstance(value, dict):
                raise ConfigError(path, name, "must be an object of axis settings")
            for k, v in value.items():
                if k not in boards.AXIS_KEYS:
                    raise ConfigError(path, name + "." + k, "unknown key (known: %s)"
                                      % ", ".join(boards.AXIS_KEYS))
                if not _same_type(base[key][k], v):
                    raise ConfigError(path, name + "." + k, "must be %s"
                                      % _type_name(base[key][k]))
                low, high = AXIS_RANGES[k]
                if v != v or not low <= v <= high:
                    raise ConfigError(path, name + "." + k, "must be from %s to %s"
                                      % (low, high))
        elif key == "pins":
            if not isinstance(value, dict):
                raise ConfigError(path, name, "must be an object of pin numbers")
            for k, v in value.items():
                if k not in boards.PIN_KEYS:
                    raise ConfigError(path, name + "." + k, "unknown pin (known: %s)"
                                      % ", ".join(boards.PIN_KEYS))
                count = 4 if k in ("pan", "tilt") else 1
                pins = v if count == 4 else [v]
                if not isinstance(pins, list) or len(pins) != count or not all(
                        isinstance(p, int) and not isinstance(p, bool) and 0 <= p < 1024
                        for p in pins):
                    raise ConfigError(path, name + "." + k, "must be %s GPIO number%s 0-1023"
                                      % ("a list of 4" if count == 4 else "a",
                                         "s" if count == 4 else ""))
        elif key in boards.SCALAR_KEYS:
            if not _same_type(boards.SCALAR_KEYS[key](), value):
                raise ConfigError(path, name, "must be %s" % _type_name(base[key]))
            _check_value(path, key, value)
        else:
            raise ConfigError(path, name, "unknown key (known: pins, pan, tilt, %s)"
                              % ", ".join(boards.SCALAR_KEYS))
    prof = boards.profile(board, overrides)
    for axis in ("pan", "tilt"):
        a = prof[axis]
        if not a["min_steps"] < a["max_steps"] or not a["min_steps"] <= a["park"] <= a["max_steps"]:
            raise ConfigError(path, "overrides." + axis,
                              "needs min_steps < max_steps and park between them")
        if not a["start_speed"] <= a["speed"] <= a["max_speed"]:   # each one is in range
            raise ConfigError(path, "overrides." + axis,
                              "needs start_speed <= speed <= max_speed")
        fastest = max(a["max_speed"], a["home_speed"])
        span = fastest * fastest - a["start_speed"] ** 2    # the ramp: span / (2 accel) steps
        if span > 2 * a["accel"] * MAX_RAMP_STEPS:
            raise ConfigError(path, "overrides." + axis + ".accel", "must be at least %d "
                              "with start_speed %d and top speed %d (the ramp would take "
                              "%d half-steps; at most %d)" % (
                                  -(-span // (2 * MAX_RAMP_STEPS)), a["start_speed"], fastest,
                                  -(-span // (2 * a["accel"])), MAX_RAMP_STEPS))
    used = []
    for k in boards.PIN_KEYS:
        used.extend(prof["pins"][k] if k in ("pan", "tilt") else [prof["pins"][k]])
    for pin in used:
        if used.count(pin) > 1:
            raise ConfigError(path, "overrides.pins", "GPIO %d is assigned twice" % pin)


def parse(text, path="(config)"):
    """Validate the JSON text of a config; returns the full dict with defaults filled."""
    try:
        given = parse_json(text)
    except ValueError as e:
        raise ConfigError(path, None, "not valid JSON (%s)" % e)
    cfg = _merge(path, "", DEFAULTS, given)
    if cfg["board"] not in boards.BOARDS:
        raise ConfigError(path, "board", "unknown board %r (known: %s)"
                          % (cfg["board"], ", ".join(sorted(boards.BOARDS))))
    _check_overrides(path, cfg["board"], cfg["overrides"])
    night = cfg["night"]
    if night["dark_below"] >= night["light_above"]:
        raise ConfigError(path, "night", "dark_below must be lower than light_above "
                          "(the gap between them is the hysteresis)")
    if night["gain_off"] >= night["gain_on"]:
        raise ConfigError(path, "night", "gain_off must be lower than gain_on "
                          "(the gap between them is the hysteresis)")
    for ch in cfg["snapshot"]["query"]:
        if not ("a" <= ch <= "z" or "A" <= ch <= "Z" or "0" <= ch <= "9" or ch in "=&_."):
            raise ConfigError(path, "snapshot.query", "only letters, digits and = & _ . "
                              "(such as width=640&height=360)")
    if not cfg["device_id"]:
        cfg["device_id"] = hostname()
    device_id = cfg["device_id"]
    if len(device_id) > MAX_DEVICE_ID:
        raise ConfigError(path, "device_id", "%d characters; at most %d"
                          % (len(device_id), MAX_DEVICE_ID))
    for ch in device_id:
        if not ("a" <= ch <= "z" or "A" <= ch <= "Z" or "0" <= ch <= "9" or ch in "-_"):
            raise ConfigError(path, "device_id", "%r: only ASCII letters, digits, - and _ "
                              "(it becomes part of MQTT topics)" % device_id)
    for key in ("prefix", "discovery_prefix"):
        _check_topic(path, "mqtt." + key, cfg["mqtt"][key])
    return cfg


def _check_topic(path, name, topic):
    """A topic prefix the agent publishes and subscribes under: one bad character and
    the broker drops the connection (a wildcard), or it never matches what it should."""
    why = None
    if len(topic) > MAX_TOPIC:
        why = "%d characters; at most %d" % (len(topic), MAX_TOPIC)
    elif "+" in topic or "#" in topic:
        why = "no MQTT wildcards (+ or #) in a topic the agent publishes to"
    elif topic[0] == "$":
        why = "topics starting with $ are the broker's own"
    elif topic[0] == "/" or topic[-1] == "/" or "//" in topic:
        why = "no empty topic levels (a leading, trailing or doubled /)"
    else:
        for ch in topic:
            if ch < " " or ch == "\x7f":
                why = "no control characters (NUL, tab, newline ...)"
    if why:
        raise ConfigError(path, name, "%r: %s" % (topic[:MAX_TOPIC], why))


def load(path=DEFAULT_PATH):
    """parse() the file `path`, then make sure its state_dir exists."""
    try:
        text = read_text(path, FILE_LIMIT)
    except OSError as e:
        raise ConfigError(path, None, "cannot read (%s)" % reason(e))
    except UnicodeError:
        raise ConfigError(path, None, "not valid JSON (invalid UTF-8)")
    except ValueError as e:
        raise ConfigError(path, None, str(e))
    if text is None:
        raise ConfigError(path, None, "cannot read (no such file or directory)")
    cfg = parse(text, path)
    try:
        ensure_dir(cfg["state_dir"])
    except OSError as e:
        raise ConfigError(path, "state_dir", "cannot create %s (%s)"
                          % (cfg["state_dir"], reason(e)))
    tls = cfg["mqtt"]["tls"]
    for key in ("ca_file", "cert_file", "key_file"):
        # now, not at every connect attempt: a missing file is a config error, and on
        # MicroPython the agent would open() it (see compat.read_text)
        if tls["enabled"] and tls[key]:
            try:
                regular = os.stat(tls[key])[0] & 0o170000 == 0o100000
                why = "not a regular file"
            except OSError as e:
                regular, why = False, reason(e)
            if not regular:
                raise ConfigError(path, "mqtt.tls." + key, "cannot read %s (%s)"
                                  % (tls[key], why))
    return cfg
