"""The agent's JSON config: defaults, validation, and one-line errors.

Every key is checked against the type of its default, unknown keys are refused
(a typo must not silently fall back to a default), and a bad value raises
ConfigError naming the file and the dotted key.
"""
import os

from . import boards
from .compat import const, hostname, read_text, reason
from .ir import MODES
from .persist import ensure_dir, parse_json

DEFAULT_PATH = "/etc/camagent.json"

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

# A string key whose default is not empty (a path, a prefix, a name) must not be empty.
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
    # changes to the board profile: its tunable part, the same on every board (boards.py)
    "overrides": boards.TUNABLE,
    # the local channel (127.0.0.1 TCP) of motion.sh and camagent-local; 0: off
    "local_port": 4223,
    "motion": {"quiet_s": 30, "snapshot": False},
    "mqtt": MQTT_DEFAULTS,
}

# The longest wait the agent times itself: on the camera (32-bit MicroPython) ticks_us
# wraps every ~1074 s and ticks_add() refuses ~537 s (compat.MAX_DELAY_US) or more
TIMER_MAX_S = const(500)

# Axis settings (overrides.pan.*, overrides.tilt.*), bounded by what a step loop that
# makes one sysfs write per half-step can do: 10,000 half-steps/s is a write every
# 100 us, and the geared motors stall far below that. 2**24 half-steps is 4096 turns of
# the usual 4096-half-step gearing, and keeps every position a small int on the 32-bit
# camera (up to 2**30), so a step never allocates.
_STEPS = (0, 1 << 24)
_SPEED = (1, 10000)
_AXIS = {"min_steps": _STEPS, "max_steps": _STEPS, "park": _STEPS, "home_margin": _STEPS,
         "steps_per_degree": (1, 1000), "speed": _SPEED, "max_speed": _SPEED,
         "start_speed": _SPEED, "home_speed": _SPEED, "accel": (100, 10000000)}

# What a value may be, shaped like DEFAULTS: (low, high) for a number, the words a
# string accepts, or for a section one (low, high) that holds for all its keys (the
# pins). A high bound of TIMER_MAX_S is a wait the agent times itself.
LIMITS = {
    "light_poll_s": (1, TIMER_MAX_S), "led_blink_ms": (100, 10000),
    "persist_min_interval_s": (0, TIMER_MAX_S), "timer_spin_us": (0, 20000),
    "local_port": (0, 65535),
    "night": {"initial_mode": MODES, "dark_below": (0, 100), "light_above": (0, 100),
              "min_dwell_s": (0, TIMER_MAX_S), "gain_poll_s": (0, TIMER_MAX_S),
              "gain_on": (0, 1e9), "gain_off": (0, 1e9)},
    "majestic": {"port": (0, 65535), "timeout_s": (1, 60)},
    "snapshot": {"interval_s": (0, TIMER_MAX_S)},
    "motion": {"quiet_s": (1, TIMER_MAX_S)},
    "mqtt": {"port": (1, 65535), "keepalive": (5, 3600), "state_interval": (5, 86400),
             "move_increment_deg": (0.1, 90)},
    "overrides": {"pan": _AXIS, "tilt": _AXIS, "pins": (0, 1023),
                  "ircut_pulse_ms": (20, 1000), "sd_reset_ms": (1, 1000)},
}
# The ramp table holds one 4-byte step interval per accelerating half-step, for the
# whole agent's life: (fastest^2 - start_speed^2) / (2 accel) entries
MAX_RAMP_STEPS = const(1000)

# a default's type, as a sentence says what a value must be
_TYPE_NAMES = {bool: "true or false", int: "a whole number", float: "a number",
               str: "a string"}


class ConfigError(Exception):
    """A refused config; str(e) is the one line: FILE: KEY: what is wrong."""

    def __init__(self, *parts):   # the file, the dotted key (None: the whole file), why
        super().__init__(": ".join(p for p in parts if p))


def _merge(prefix, defaults, given, limits):
    """`given` checked against `defaults` (the keys, each value's type) and `limits`;
    what it leaves out is taken from `defaults`. A new dict: the defaults stay as
    they are."""
    if not isinstance(given, dict):
        raise ConfigError(prefix[:-1] or "(top level)", "must be a JSON object")
    for key in given:
        if key not in defaults:
            raise ConfigError(prefix + key, "unknown key (known: %s)"
                              % ", ".join(sorted(defaults)))
    out = {}
    for key, default in defaults.items():
        limit = limits if isinstance(limits, tuple) else limits.get(key)
        if isinstance(default, dict):
            out[key] = _merge(prefix + key + ".", default, given.get(key, {}), limit or {})
        else:
            out[key] = value = given.get(key, default)
            if key in given:
                _check(prefix + key, default, value, limit)
    return out


def _check(name, default, value, limit):
    if isinstance(default, tuple):   # the four coil lines of an axis
        if not isinstance(value, list) or len(value) != len(default):
            raise ConfigError(name, "must be a list of %d GPIO numbers" % len(default))
        for i, v in enumerate(value):
            _check("%s[%d]" % (name, i), default[0], v, limit)
        return
    # the default's type; a whole number where a fraction may be (bool is not int)
    if not (type(value) is type(default) or type(default) is float and type(value) is int):
        raise ConfigError(name, "must be " + _TYPE_NAMES[type(default)])
    if type(value) is str:
        if limit and value not in limit:
            raise ConfigError(name, "must be one of " + ", ".join(limit))
        if default and not value:   # a path, a prefix, a name
            raise ConfigError(name, "must not be empty")
    elif limit and (value != value or not limit[0] <= value <= limit[1]):   # NaN: neither
        raise ConfigError(name, "must be from %s to %s%s" % (
            limit[0], limit[1], " (seconds; the camera's microsecond timers reach at most "
            "~537 s ahead)" if limit[1] == TIMER_MAX_S else ""))


def _check_profile(prof):
    """What the tunable part of the profile must hold together: `prof` is it merged."""
    for axis in ("pan", "tilt"):
        a = prof[axis]
        if not a["min_steps"] < a["max_steps"] or not a["min_steps"] <= a["park"] <= a["max_steps"]:
            raise ConfigError("overrides." + axis,
                              "needs min_steps < max_steps and park between them")
        if not a["start_speed"] <= a["speed"] <= a["max_speed"]:   # each one is in range
            raise ConfigError("overrides." + axis, "needs start_speed <= speed <= max_speed")
        fastest = max(a["max_speed"], a["home_speed"])
        span = fastest * fastest - a["start_speed"] ** 2    # the ramp: span / (2 accel) steps
        if span > 2 * a["accel"] * MAX_RAMP_STEPS:
            raise ConfigError("overrides." + axis + ".accel", "must be at least %d "
                              "with start_speed %d and top speed %d (the ramp would take "
                              "%d half-steps; at most %d)" % (
                                  -(-span // (2 * MAX_RAMP_STEPS)), a["start_speed"], fastest,
                                  -(-span // (2 * a["accel"])), MAX_RAMP_STEPS))
    used = []
    for pins in prof["pins"].values():
        used += [pins] if isinstance(pins, int) else pins
    for pin in used:
        if used.count(pin) > 1:
            raise ConfigError("overrides.pins", "GPIO %d is assigned twice" % pin)


def _plain(text, extra):
    """True when `text` holds only ASCII letters, digits and the characters in `extra`."""
    for ch in text:
        if not ("a" <= ch <= "z" or "A" <= ch <= "Z" or "0" <= ch <= "9" or ch in extra):
            return False
    return True


def parse(text, path="(config)"):
    """Validate the JSON text of a config; returns the full dict with defaults filled."""
    try:
        return _parse(text)
    except ConfigError as e:
        raise ConfigError(path, str(e))   # the checks name the key; the file goes first


def _parse(text):
    try:
        given = parse_json(text)
    except ValueError as e:
        raise ConfigError("not valid JSON (%s)" % e)
    cfg = _merge("", DEFAULTS, given, LIMITS)
    if cfg["board"] not in boards.BOARDS:
        raise ConfigError("board", "unknown board %r (known: %s)"
                          % (cfg["board"], ", ".join(sorted(boards.BOARDS))))
    _check_profile(cfg["overrides"])
    night = cfg["night"]
    for low, high in (("dark_below", "light_above"), ("gain_off", "gain_on")):
        if night[low] >= night[high]:
            raise ConfigError("night", "%s must be lower than %s (the gap between them is "
                              "the hysteresis)" % (low, high))
    if not _plain(cfg["snapshot"]["query"], "=&_."):
        raise ConfigError("snapshot.query", "only letters, digits and = & _ . "
                          "(such as width=640&height=360)")
    if not cfg["device_id"]:
        cfg["device_id"] = hostname()
    device_id = cfg["device_id"]
    if len(device_id) > 64:
        raise ConfigError("device_id", "%d characters; at most 64" % len(device_id))
    if not _plain(device_id, "-_"):
        raise ConfigError("device_id", "%r: only ASCII letters, digits, - and _ "
                          "(it becomes part of MQTT topics)" % device_id)
    for key in ("prefix", "discovery_prefix"):
        _check_topic("mqtt." + key, cfg["mqtt"][key])
    return cfg


def _check_topic(name, topic):
    """A topic prefix the agent publishes and subscribes under: one bad character and
    the broker drops the connection (a wildcard), or it never matches what it should."""
    why = None
    if len(topic) > 128:
        why = "%d characters; at most 128" % len(topic)
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
        raise ConfigError(name, "%r: %s" % (topic[:128], why))


def load(path=DEFAULT_PATH):
    """parse() the file `path`, then make sure its state_dir exists."""
    try:
        # a full config is under 2 KB; the heap must not meet a huge one
        text = read_text(path, 16384)
    except OSError as e:
        raise ConfigError(path, "cannot read (%s)" % reason(e))
    except UnicodeError:
        raise ConfigError(path, "not valid JSON (invalid UTF-8)")
    except ValueError as e:
        raise ConfigError(path, str(e))
    if text is None:
        raise ConfigError(path, "cannot read (no such file or directory)")
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
