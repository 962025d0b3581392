"""Home Assistant MQTT discovery: one config document per entity, all on one device.

Topics are <discovery_prefix>/<component>/<node>/<object>/config, published
retained. Discovery is data: each entity is one row of _ENTITIES, and its
document is the row's JSON members set between the members every entity shares
("~" for <base>, availability, device, origin). A document is a tuple of
those pieces, mostly constants, which the session writes one after the other:
a publication builds no payload and no dict. There are deliberately no cover
entities: pan and tilt are plain numbers and buttons.
"""
import json
import os

from .commands import TOPICS

CONFIG = b'"ent_cat":"config",'
DIAGNOSTIC = b'"ent_cat":"diagnostic",'
_LED = b'"ops":["ON","OFF","BLINK"],'
_SIZE = b'"dev_cla":"data_size","unit_of_meas":"B","stat_cla":"measurement",'
_STATE_KEY = b'"stat_t":"~/state","val_tpl":"{{ value_json.'
_STATE_EXPR = b'"stat_t":"~/state","val_tpl":"{{ '
SET = True     # the command topic is <object id>/set

# Keys are HA's documented abbreviations (cmd_t: command_topic, stat_t: state_topic,
# val_tpl: value_template, pl_prs: payload_press, ops: options, dev_cla: device_class,
# ent_cat: entity_category, ...): half the bytes on the wire and in the flash.
# A row: (component, object id, name, category, state: a key of the state document
# or a Jinja expression over it (or None), command topic under <base> (or None),
# further members, each followed by a comma). Rows whose command the agent does not
# serve (a feature not built in) are skipped.
_ENTITIES = (
    (b"button", b"left", b"Left", b"", None, b"ptz/move", b'"pl_prs":"LEFT",'),
    (b"button", b"right", b"Right", b"", None, b"ptz/move", b'"pl_prs":"RIGHT",'),
    (b"button", b"up", b"Up", b"", None, b"ptz/move", b'"pl_prs":"UP",'),
    (b"button", b"down", b"Down", b"", None, b"ptz/move", b'"pl_prs":"DOWN",'),
    (b"button", b"stop", b"Stop", b"", None, b"ptz/stop", b""),
    (b"button", b"home", b"Home", b"", None, b"ptz/home", b""),
    (b"text", b"preset_save", b"Save preset as", b"", None, b"preset/save",
     b'"min":1,"max":24,"ptrn":"[A-Za-z0-9 ._-]+",'),
    (b"binary_sensor", b"moving", b"Moving", b"",
     b"'ON' if value_json.pan.moving or value_json.tilt.moving else 'OFF'", None,
     b'"dev_cla":"moving",'),
    (b"binary_sensor", b"motion", b"Motion", b"", None, None,
     b'"stat_t":"~/motion","dev_cla":"motion",'),
    (b"button", b"snapshot_get", b"Take snapshot", b"", None, b"snapshot/get", b""),
    # the camera shows what snapshot/get publishes: it is there when that command is
    (b"camera", b"snapshot", b"Snapshot", b"", None, b"snapshot/get", b'"t":"~/snapshot",'),
    (b"switch", b"ir_led", b"IR illuminator", CONFIG, b"ir_led", SET, b""),
    (b"select", b"ir_cut", b"IR-cut filter", CONFIG, b"ir_cut", SET, b'"ops":["DAY","NIGHT"],'),
    (b"select", b"night_mode", b"Night mode", CONFIG, b"night_mode", SET,
     b'"ops":["DAY","NIGHT","AUTO"],'),
    (b"select", b"led_green", b"Green LED", CONFIG, b"led_green", SET, _LED),
    (b"select", b"led_red", b"Red LED", CONFIG, b"led_red", SET, _LED),
    (b"button", b"sd_reset", b"SD card reset", CONFIG, None, b"sd/reset", b""),
    (b"binary_sensor", b"homed", b"Homed", DIAGNOSTIC,
     b"'ON' if value_json.pan.homed and value_json.tilt.homed else 'OFF'", None, b""),
    (b"sensor", b"problems", b"Problems", DIAGNOSTIC, b"value_json.problems | length", None,
     b'"json_attr_t":"~/state",'
     b'"json_attr_tpl":"{{ {\'problems\': value_json.problems} | tojson }}",'),
    (b"sensor", b"uptime", b"Agent uptime", DIAGNOSTIC, b"uptime", None,
     b'"dev_cla":"duration","unit_of_meas":"s",'),
    (b"sensor", b"wifi_rssi", b"Wifi signal", DIAGNOSTIC, b"wifi_rssi", None,
     b'"dev_cla":"signal_strength","unit_of_meas":"dBm","stat_cla":"measurement",'),
    (b"sensor", b"memory_free", b"Free memory", DIAGNOSTIC, b"memory_free", None, _SIZE),
    (b"sensor", b"sd_free", b"SD card free", DIAGNOSTIC, b"sd_free", None, _SIZE),
    (b"sensor", b"rtsp_main", b"RTSP main stream", DIAGNOSTIC, b"rtsp_main", None, b""),
    (b"sensor", b"rtsp_sub", b"RTSP sub stream", DIAGNOSTIC, b"rtsp_sub", None, b""),
)


def video_urls(ip):
    """{"rtsp_main", "rtsp_sub"}: majestic's two streams (RTSP, port 554) at `ip`; both
    None while the address is unknown (ip None)."""
    return {"rtsp_main": ip and "rtsp://%s:554/stream=0" % ip,
            "rtsp_sub": ip and "rtsp://%s:554/stream=1" % ip}


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
    """Yields (topic, payload): the topic as bytes, the payload as a tuple of bytes pieces
    (mostly constants) that the session writes one after the other, so no document is
    ever copied whole into the heap."""

    def __init__(self, prefix, base, device_id, model, version, mac=None, ip=None):
        self.node = "camagent_" + device_id
        self._id = device_id
        self._model = model
        self._version = version
        self._mac = mac
        self._topic = ("%s/%%s/%s/%%s/config" % (prefix, self.node)).encode()
        self._head = b'{"~":%s,"name":"' % json.dumps(base).encode()
        self._uniq = b'","uniq_id":"%s_' % self.node.encode()
        self.ip = None
        self._tail = None
        self.set_ip(ip)

    def set_ip(self, ip):
        """Adopt the camera's address (the device's configuration_url); True if it changed."""
        if ip == self.ip and self._tail is not None:
            return False
        self.ip = ip
        device = {"ids": [self.node], "name": self._id, "mdl": self._model, "mf": "IMOU",
                  "sw": "camagent " + self._version}
        if self._mac:
            device["cns"] = [["mac", self._mac]]
        if ip:
            device["cu"] = "http://%s/" % ip   # configuration_url: majestic's web UI
        self._tail = b'"avty_t":"~/availability","dev":%s,"o":{"name":"camagent","sw":"%s"}}' \
            % (json.dumps(device).encode(), self._version.encode())
        return True

    def topic(self, component, object_id):
        return self._topic % (component, object_id)

    def documents(self, axes, preset_names):
        """Every (topic, payload pieces) to publish, one at a time (the device is small)."""
        for object_id, title in ((b"pan", b"Pan"), (b"tilt", b"Tilt")):
            yield self.axis_document(object_id, title, axes[object_id.decode()])
        for row in _ENTITIES:
            if row[5] is None or row[5] is SET or row[5].decode() in TOPICS:
                yield self.topic(row[0], row[1]), self._document(row)
        yield self.preset_document(preset_names)

    def _document(self, row):
        component, object_id, name, category, state, command, extra = row
        if state is None:
            state_head = state = state_end = b""
        else:        # a key of the state document, or an expression over it
            state_head = _STATE_EXPR if b" " in state else _STATE_KEY
            state_end = b' }}",'
        if command is None or component == b"camera":   # a camera row names what it needs
            command_head = command = command_end = b""
        elif command is SET:
            command_head, command, command_end = b'"cmd_t":"~/', object_id, b'/set",'
        else:
            command_head, command_end = b'"cmd_t":"~/', b'",'
        return (self._head, name, self._uniq, object_id, b'",', category, state_head, state,
                state_end, command_head, command, command_end, extra, self._tail)

    def axis_document(self, object_id, title, axis):
        members = ('"min":%s,"max":%s,"step":0.1,"unit_of_meas":"\\u00b0","mode":"slider",'
                   % (axis.min_deg, axis.max_deg)).encode()
        return self.topic(b"number", object_id), self._document(
            (b"number", object_id, title, b"", object_id + b".position", SET, members))

    def preset_document(self, names):
        """The preset select, whose state is the preset the camera is at ("None" in the
        template: unknown once it moved away); an empty payload (removal) while there
        are no presets, because HA refuses a select without options."""
        topic = self.topic(b"select", b"preset")
        if not names:
            return topic, ()
        return topic, self._document((b"select", b"preset", b"Preset", b"", b"preset",
                                      b"preset/goto",
                                      b'"ops":%s,' % json.dumps(list(names)).encode()))
