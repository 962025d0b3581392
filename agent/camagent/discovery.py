"""Home Assistant MQTT discovery: one config document per entity, all on one device.

Topics are <discovery_prefix>/<component>/<node>/<object>/config, published
retained. Discovery is data: each entity is one row of _ENTITIES, and its
document is the row's JSON members set between the members every entity shares
("~" for <base>, availability, device, origin). Documents are formatted as text
from constant strings, one at a time, so a publication costs little more than
the payloads themselves. There are deliberately no cover entities: pan and tilt
are plain numbers and buttons.
"""
import json
import os

from .commands import TOPICS

RTSP_PORT = 554
CONFIG = '"entity_category":"config",'
DIAGNOSTIC = '"entity_category":"diagnostic",'
_LED = '"options":["ON","OFF","BLINK"]'
_SIZE = '"device_class":"data_size","unit_of_measurement":"B","state_class":"measurement"'

# (component, object id, name, category, state: a Jinja expression over the state
# document (or None), command topic under <base> (or None), further JSON members).
# Rows whose command the agent does not serve (a feature not built in) are skipped.
_ENTITIES = (
    ("button", "left", "Left", "", None, "ptz/move", '"payload_press":"LEFT"'),
    ("button", "right", "Right", "", None, "ptz/move", '"payload_press":"RIGHT"'),
    ("button", "up", "Up", "", None, "ptz/move", '"payload_press":"UP"'),
    ("button", "down", "Down", "", None, "ptz/move", '"payload_press":"DOWN"'),
    ("button", "stop", "Stop", "", None, "ptz/stop", '"payload_press":"STOP"'),
    ("button", "home", "Home", "", None, "ptz/home", '"payload_press":"HOME"'),
    ("text", "preset_save", "Save preset as", "", None, "preset/save",
     '"min":1,"max":24,"pattern":"[A-Za-z0-9 ._-]+","icon":"mdi:star-plus"'),
    ("binary_sensor", "moving", "Moving", "",
     "'ON' if value_json.pan.moving or value_json.tilt.moving else 'OFF'", None,
     '"device_class":"moving"'),
    ("binary_sensor", "motion", "Motion", "", None, None,
     '"state_topic":"~/motion","device_class":"motion"'),
    ("button", "snapshot_get", "Take snapshot", "", None, "snapshot/get",
     '"icon":"mdi:camera"'),
    # the camera shows what snapshot/get publishes: it is there when that command is
    ("camera", "snapshot", "Snapshot", "", None, "snapshot/get", '"topic":"~/snapshot"'),
    ("switch", "ir_led", "IR illuminator", CONFIG, "value_json.ir_led", "ir_led/set",
     '"icon":"mdi:led-on"'),
    ("select", "ir_cut", "IR-cut filter", CONFIG, "value_json.ir_cut", "ir_cut/set",
     '"options":["DAY","NIGHT"]'),
    ("select", "night_mode", "Night mode", CONFIG, "value_json.night_mode", "night_mode/set",
     '"options":["DAY","NIGHT","AUTO"]'),
    ("select", "led_green", "Green LED", CONFIG, "value_json.led_green", "led_green/set", _LED),
    ("select", "led_red", "Red LED", CONFIG, "value_json.led_red", "led_red/set", _LED),
    ("button", "sd_reset", "SD card reset", CONFIG, None, "sd/reset", '"payload_press":"RESET"'),
    ("binary_sensor", "homed", "Homed", DIAGNOSTIC,
     "'ON' if value_json.pan.homed and value_json.tilt.homed else 'OFF'", None, ""),
    ("sensor", "problems", "Problems", DIAGNOSTIC, "value_json.problems | length", None,
     '"json_attributes_topic":"~/state",'
     '"json_attributes_template":"{{ {\'problems\': value_json.problems} | tojson }}",'
     '"icon":"mdi:alert-circle-outline"'),
    ("sensor", "uptime", "Agent uptime", DIAGNOSTIC, "value_json.uptime", None,
     '"device_class":"duration","unit_of_measurement":"s"'),
    ("sensor", "wifi_rssi", "Wifi signal", DIAGNOSTIC, "value_json.wifi_rssi", None,
     '"device_class":"signal_strength","unit_of_measurement":"dBm","state_class":"measurement"'),
    ("sensor", "memory_free", "Free memory", DIAGNOSTIC, "value_json.memory_free", None, _SIZE),
    ("sensor", "sd_free", "SD card free", DIAGNOSTIC, "value_json.sd_free", None, _SIZE),
    ("sensor", "rtsp_main", "RTSP main stream", DIAGNOSTIC, "value_json.rtsp_main", None,
     '"icon":"mdi:cctv"'),
    ("sensor", "rtsp_sub", "RTSP sub stream", DIAGNOSTIC, "value_json.rtsp_sub", None,
     '"icon":"mdi:cctv"'),
)


def video_urls(ip):
    """{"rtsp_main", "rtsp_sub"}: majestic's two streams at `ip` (None when unknown)."""
    if not ip:
        return {"rtsp_main": None, "rtsp_sub": None}
    return {"rtsp_main": "rtsp://%s:%d/stream=0" % (ip, RTSP_PORT),
            "rtsp_sub": "rtsp://%s:%d/stream=1" % (ip, RTSP_PORT)}


def camera_ip(proc_root="/proc"):
    """The camera's IPv4 address: the first local, non-loopback address in the kernel's
    routing trie (MicroPython has no interface ioctl); None while there is none."""
    path = proc_root + "/net/fib_trie"
    try:
        os.stat(path)        # never open() what may be missing (MicroPython 1.22's fd-0 bug)
        f = open(path)
    except OSError:
        return None
    last = None
    with f:
        for line in f:       # a line at a time: the trie grows with every route
            line = line.strip()
            if line.startswith("|-- "):
                last = line[4:]
            elif line == "/32 host LOCAL" and last and not last.startswith("127."):
                return last
    return None


class Discovery:
    def __init__(self, prefix, base, device_id, model, version, mac=None, ip=None):
        self.prefix = prefix
        self.node = "camagent_" + device_id
        self._id = device_id
        self._model = model
        self._version = version
        self._mac = mac
        self._head = '{"~":%s,"name":"%%s","unique_id":"%s_%%s",' % (json.dumps(base), self.node)
        self.ip = None
        self.set_ip(ip)

    def set_ip(self, ip):
        """Adopt the camera's address (the device's configuration_url); True if it changed."""
        if ip == self.ip and hasattr(self, "_tail"):
            return False
        self.ip = ip
        device = {"identifiers": [self.node], "name": self._id, "model": self._model,
                  "manufacturer": "IMOU", "sw_version": "camagent " + self._version}
        if self._mac:
            device["connections"] = [["mac", self._mac]]
        if ip:
            device["configuration_url"] = "http://%s/" % ip   # majestic's web UI
        origin = {"name": "camagent", "sw_version": self._version}
        self._tail = '"availability_topic":"~/availability","device":%s,"origin":%s}' % (
            json.dumps(device), json.dumps(origin))
        return True

    def topic(self, component, object_id):
        return "%s/%s/%s/%s/config" % (self.prefix, component, self.node, object_id)

    def _document(self, object_id, name, members):
        return self._head % (name, object_id) + members + self._tail

    def documents(self, axes, preset_names):
        """Every (topic, payload) to publish, one at a time (the device is small)."""
        for name in ("pan", "tilt"):
            yield self.axis_document(name, axes[name])
        for row in _ENTITIES:
            if row[5] is None or row[5] in TOPICS:
                yield self.topic(row[0], row[1]), self._document(row[1], row[2], _members(row))
        yield self.preset_document(preset_names)

    def axis_document(self, name, axis):
        members = ('"command_topic":"~/%s/set","state_topic":"~/state",'
                   '"value_template":"{{ value_json.%s.position }}","min":%s,"max":%s,'
                   '"step":0.1,"unit_of_measurement":"\\u00b0","mode":"slider",'
                   '"icon":"mdi:pan-%s",' % (name, name, axis.min_deg, axis.max_deg,
                                             "horizontal" if name == "pan" else "vertical"))
        return self.topic("number", name), self._document(name, "Pan" if name == "pan" else "Tilt", members)

    def preset_document(self, names):
        """The preset select, whose state is the preset the camera is at ("None" in the
        template: unknown once it moved away); an empty payload (removal) while there
        are no presets, because HA refuses a select without options."""
        topic = self.topic("select", "preset")
        if not names:
            return topic, ""
        return topic, self._document("preset", "Preset", (
            '"command_topic":"~/preset/goto","state_topic":"~/state",'
            '"value_template":"{{ value_json.preset }}","options":%s,"icon":"mdi:star",'
            % json.dumps(list(names))))


def _members(row):
    component, object_id, name, category, state, command, extra = row
    out = category
    if state:
        out += '"state_topic":"~/state","value_template":"{{ %s }}",' % state
    if command and component != "camera":
        out += '"command_topic":"~/%s",' % command
    if extra:
        out += extra + ","
    return out
