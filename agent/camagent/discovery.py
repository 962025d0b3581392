"""Home Assistant MQTT discovery: one config document per entity, all on one device.

Topics are <discovery_prefix>/<component>/<node>/<object>/config, published
retained. Every entity names the availability topic, so HA greys the camera out
when the Last Will fires. Documents use HA's "~" shorthand for <base>. There are
deliberately no cover entities: pan and tilt are plain numbers and buttons.
"""
import json

_TITLES = {"pan": "Pan", "tilt": "Tilt"}
# (component, object id, name, extra keys); "~" is the agent's base topic
_ENTITIES = (
    ("button", "left", "Left", {"command_topic": "~/ptz/move", "payload_press": "LEFT"}),
    ("button", "right", "Right", {"command_topic": "~/ptz/move", "payload_press": "RIGHT"}),
    ("button", "up", "Up", {"command_topic": "~/ptz/move", "payload_press": "UP"}),
    ("button", "down", "Down", {"command_topic": "~/ptz/move", "payload_press": "DOWN"}),
    ("button", "stop", "Stop", {"command_topic": "~/ptz/stop", "payload_press": "STOP"}),
    ("button", "home", "Home", {"command_topic": "~/ptz/home", "payload_press": "HOME"}),
    ("button", "sd_reset", "SD card reset", {"command_topic": "~/sd/reset",
                                             "payload_press": "RESET",
                                             "entity_category": "config"}),
    ("switch", "ir_led", "IR illuminator", {"command_topic": "~/ir_led/set",
                                            "state_topic": "~/state",
                                            "value_template": "{{ value_json.ir_led }}",
                                            "payload_on": "ON", "payload_off": "OFF",
                                            "icon": "mdi:led-on"}),
    ("select", "ir_cut", "IR-cut filter", {"command_topic": "~/ir_cut/set",
                                           "state_topic": "~/state",
                                           "value_template": "{{ value_json.ir_cut }}",
                                           "options": ["DAY", "NIGHT"]}),
    ("select", "night_mode", "Night mode", {"command_topic": "~/night_mode/set",
                                            "state_topic": "~/state",
                                            "value_template": "{{ value_json.night_mode }}",
                                            "options": ["DAY", "NIGHT", "AUTO"]}),
    ("select", "led_green", "Green LED", {"command_topic": "~/led_green/set",
                                          "state_topic": "~/state",
                                          "value_template": "{{ value_json.led_green }}",
                                          "options": ["ON", "OFF", "BLINK"]}),
    ("select", "led_red", "Red LED", {"command_topic": "~/led_red/set",
                                      "state_topic": "~/state",
                                      "value_template": "{{ value_json.led_red }}",
                                      "options": ["ON", "OFF", "BLINK"]}),
    ("binary_sensor", "moving", "Moving", {
        "state_topic": "~/state", "device_class": "moving",
        "value_template": "{{ 'ON' if value_json.pan.moving or value_json.tilt.moving "
                          "else 'OFF' }}"}),
    ("sensor", "uptime", "Agent uptime", {"state_topic": "~/state",
                                          "value_template": "{{ value_json.uptime }}",
                                          "device_class": "duration",
                                          "unit_of_measurement": "s",
                                          "entity_category": "diagnostic"}),
    ("sensor", "wifi_rssi", "Wifi signal", {"state_topic": "~/state",
                                            "value_template": "{{ value_json.wifi_rssi }}",
                                            "device_class": "signal_strength",
                                            "unit_of_measurement": "dBm",
                                            "state_class": "measurement",
                                            "entity_category": "diagnostic"}),
    ("sensor", "memory_free", "Free memory", {"state_topic": "~/state",
                                              "value_template": "{{ value_json.memory_free }}",
                                              "device_class": "data_size",
                                              "unit_of_measurement": "B",
                                              "state_class": "measurement",
                                              "entity_category": "diagnostic"}),
    ("sensor", "sd_free", "SD card free", {"state_topic": "~/state",
                                           "value_template": "{{ value_json.sd_free }}",
                                           "device_class": "data_size",
                                           "unit_of_measurement": "B",
                                           "state_class": "measurement",
                                           "entity_category": "diagnostic"}),
)


class Discovery:
    def __init__(self, prefix, base, device_id, model, version, mac=None):
        self.prefix = prefix
        self.base = base
        self.node = "camagent_" + device_id
        self.device = {"identifiers": [self.node], "name": device_id, "model": model,
                       "manufacturer": "IMOU", "sw_version": "camagent " + version}
        if mac:
            self.device["connections"] = [["mac", mac]]

    def topic(self, component, object_id):
        return "%s/%s/%s/%s/config" % (self.prefix, component, self.node, object_id)

    def _document(self, object_id, name, extra):
        doc = {"~": self.base, "name": name, "unique_id": self.node + "_" + object_id,
               "availability_topic": "~/availability", "device": self.device}
        doc.update(extra)
        return json.dumps(doc)

    def documents(self, axes, preset_names):
        """Every (topic, payload) to publish, one at a time (the device is small)."""
        for name in ("pan", "tilt"):
            yield self.axis_document(name, axes[name])
        for component, object_id, name, extra in _ENTITIES:
            yield self.topic(component, object_id), self._document(object_id, name, extra)
        yield self.preset_document(preset_names)

    def axis_document(self, name, axis):
        extra = {"command_topic": "~/%s/set" % name, "state_topic": "~/state",
                 "value_template": "{{ value_json.%s.position }}" % name,
                 "min": axis.min_deg, "max": axis.max_deg, "step": 0.1,
                 "unit_of_measurement": "°", "mode": "slider", "icon": "mdi:pan-horizontal"
                 if name == "pan" else "mdi:pan-vertical"}
        return self.topic("number", name), self._document(name, _TITLES[name], extra)

    def preset_document(self, names):
        """The preset select; an empty payload (removal) while there are no presets,
        because HA refuses a select without options."""
        topic = self.topic("select", "preset")
        if not names:
            return topic, ""
        return topic, self._document("preset", "Preset", {
            "command_topic": "~/preset/goto", "options": list(names), "icon": "mdi:star"})
