"""What Home Assistant's MQTT integration documents for each discovery component (2024.3).

From the "Configuration Variables" of home-assistant.io/integrations/<component>.mqtt/
and the MQTT discovery page (device, origin, "~"), written down here as sets of
required and allowed keys and the documented values of the enumerated ones; not
code from Home Assistant. check() returns the problems of one discovery payload
as sentences, and render() evaluates its templates the way HA does (Jinja2, with
`value_json` the parsed state), so a test can see what an entity would show.
"""
import json
import re

import jinja2

# every MQTT entity (availability, device and origin, attributes, naming)
COMMON = {"~", "name", "unique_id", "object_id", "icon", "entity_category", "enabled_by_default",
          "availability_topic", "availability", "availability_mode", "availability_template",
          "payload_available", "payload_not_available", "device", "origin", "encoding",
          "json_attributes_topic", "json_attributes_template", "qos"}

# component -> (required keys, further allowed keys)
COMPONENTS = {
    "button": ({"command_topic"}, {"command_template", "device_class", "payload_press", "retain"}),
    "binary_sensor": ({"state_topic"}, {"device_class", "expire_after", "force_update",
                                        "off_delay", "payload_on", "payload_off",
                                        "value_template"}),
    "sensor": ({"state_topic"}, {"device_class", "expire_after", "force_update",
                                 "last_reset_value_template", "options", "state_class",
                                 "suggested_display_precision", "unit_of_measurement",
                                 "value_template"}),
    "select": ({"command_topic", "options"}, {"command_template", "optimistic", "retain",
                                              "state_topic", "value_template"}),
    "switch": (set(), {"command_topic", "device_class", "optimistic", "payload_on", "payload_off",
                       "retain", "state_on", "state_off", "state_topic", "value_template"}),
    "number": ({"command_topic"}, {"command_template", "device_class", "min", "max", "mode",
                                   "optimistic", "payload_reset", "retain", "state_topic", "step",
                                   "unit_of_measurement", "value_template"}),
    "text": ({"command_topic"}, {"command_template", "max", "min", "mode", "pattern", "retain",
                                 "state_topic", "value_template"}),
    "camera": ({"topic"}, {"image_encoding"}),
}
DEVICE_KEYS = {"identifiers", "connections", "name", "manufacturer", "model", "sw_version",
               "hw_version", "serial_number", "suggested_area", "via_device", "configuration_url"}
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
# enumerations used by camagent's entities, as documented
DEVICE_CLASSES = {"button": {"identify", "restart", "update"},
                  "binary_sensor": {"moving", "motion", "problem", "connectivity"},
                  "sensor": {"duration", "signal_strength", "data_size"},
                  "switch": {"outlet", "switch"}}
STATE_CLASSES = {"measurement", "total", "total_increasing"}
NUMBER_MODES = {"auto", "box", "slider"}
TEXT_MODES = {"text", "password"}
IMAGE_ENCODINGS = {"b64"}


# the documented abbreviations camagent uses (HA expands them before validating)
ABBREVIATIONS = {"avty_t": "availability_topic", "cmd_t": "command_topic", "dev": "device",
                 "dev_cla": "device_class", "ent_cat": "entity_category", "ic": "icon",
                 "json_attr_t": "json_attributes_topic",
                 "json_attr_tpl": "json_attributes_template", "o": "origin", "ops": "options",
                 "pl_prs": "payload_press", "ptrn": "pattern", "stat_cla": "state_class",
                 "stat_t": "state_topic", "t": "topic", "uniq_id": "unique_id",
                 "unit_of_meas": "unit_of_measurement", "val_tpl": "value_template"}
DEVICE_ABBREVIATIONS = {"ids": "identifiers", "cns": "connections", "mf": "manufacturer",
                        "mdl": "model", "sw": "sw_version", "cu": "configuration_url"}
ORIGIN_ABBREVIATIONS = {"sw": "sw_version", "url": "support_url"}


def expanded(doc):
    """The payload with abbreviated keys written out, as HA reads it."""
    out = {ABBREVIATIONS.get(k, k): v for k, v in doc.items()}
    if isinstance(out.get("device"), dict):
        out["device"] = {DEVICE_ABBREVIATIONS.get(k, k): v for k, v in out["device"].items()}
    if isinstance(out.get("origin"), dict):
        out["origin"] = {ORIGIN_ABBREVIATIONS.get(k, k): v for k, v in out["origin"].items()}
    return out


def check(component, doc):
    """Sentences naming what HA would refuse or ignore in this payload; [] when valid.
    `doc` is the payload as written out by expanded()."""
    if component not in COMPONENTS:
        return ["%s is not a component camagent should announce" % component]
    required, optional = COMPONENTS[component]
    problems = ["missing required %s" % key for key in sorted(required - set(doc))]
    problems += ["%s is not a documented %s key" % (key, component)
                 for key in sorted(set(doc) - required - optional - COMMON)]
    for key in ("name", "unique_id"):
        if not isinstance(doc.get(key), str) or not doc.get(key):
            problems.append("%s must be a non-empty string" % key)
    category = doc.get("entity_category")
    if category is not None:
        if category not in ("config", "diagnostic"):
            problems.append("entity_category %r is neither config nor diagnostic" % category)
        elif category == "config" and component in ("sensor", "binary_sensor", "camera"):
            problems.append("entity_category config is refused for a %s" % component)
    cls = doc.get("device_class")
    if cls is not None and cls not in DEVICE_CLASSES.get(component, ()):
        problems.append("device_class %r is not one of the %s classes" % (cls, component))
    if "state_class" in doc and doc["state_class"] not in STATE_CLASSES:
        problems.append("state_class %r is unknown" % doc["state_class"])
    if component == "select":
        options = doc.get("options")
        if not (isinstance(options, list) and options and all(isinstance(o, str) for o in options)):
            problems.append("select options must be a non-empty list of strings")
    if component == "number":
        if doc.get("mode", "auto") not in NUMBER_MODES:
            problems.append("number mode %r is unknown" % doc.get("mode"))
        if not doc.get("min", 1) <= doc.get("max", 100):
            problems.append("number min is above max")
    if component == "text":
        if doc.get("mode", "text") not in TEXT_MODES:
            problems.append("text mode %r is unknown" % doc.get("mode"))
        if not 0 <= doc.get("min", 0) <= doc.get("max", 255) <= 255:
            problems.append("text min/max must be 0 <= min <= max <= 255")
        if "pattern" in doc:
            try:
                re.compile(doc["pattern"])
            except re.error as e:
                problems.append("text pattern is not a regex: %s" % e)
    if component == "camera" and doc.get("image_encoding", "b64") not in IMAGE_ENCODINGS:
        problems.append("image_encoding %r: only b64, or absent for raw bytes"
                        % doc["image_encoding"])
    problems += _check_device(doc.get("device"))
    origin = doc.get("origin")
    if origin is not None:
        if not isinstance(origin, dict) or not origin.get("name"):
            problems.append("origin needs a name")
        else:
            problems += ["%s is not a documented origin key" % k for k in set(origin) - ORIGIN_KEYS]
    for key, value in doc.items():
        if key.endswith("_topic") or key == "topic":
            if not isinstance(value, str) or "+" in value or "#" in value or not value:
                problems.append("%s %r is not a topic" % (key, value))
        if key.endswith("_template"):
            try:
                _ENV.parse(value)
            except jinja2.TemplateSyntaxError as e:
                problems.append("%s does not parse: %s" % (key, e))
    return problems


def _check_device(device):
    if device is None:
        return ["no device: the entity would not join the camera's device"]
    if not isinstance(device, dict):
        return ["device must be an object"]
    problems = ["%s is not a documented device key" % k for k in sorted(set(device) - DEVICE_KEYS)]
    if not device.get("identifiers") and not device.get("connections"):
        problems.append("device needs identifiers or connections")
    url = device.get("configuration_url")
    if url is not None and not re.match(r"^(https?|homeassistant)://", url):
        problems.append("configuration_url %r is not an http(s) URL" % url)
    return problems


_ENV = jinja2.Environment()


def expand(doc, key):
    """A topic with HA's "~" abbreviation replaced (it may start or end the value)."""
    value = doc[key]
    base = doc.get("~", "")
    if value.startswith("~"):
        value = base + value[1:]
    elif value.endswith("~"):
        value = value[:-1] + base
    return value


def render(doc, key, state):
    """What template `key` of `doc` renders to for the state document `state`."""
    return _ENV.from_string(doc[key]).render(value_json=state, value=json.dumps(state))
