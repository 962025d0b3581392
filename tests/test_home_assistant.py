"""Home Assistant's side, end to end: paho -> mosquitto -> the agent process -> fake sysfs.

Every discovery payload is checked against what HA documents for its component
(tests/ha_schema.py), and its templates are rendered on the agent's real state
the way HA renders them, so the tests see what each entity would show. Settings
set as HA sets them survive a restart of the agent.
"""
import json
import os

import pytest

import ha_schema
from broker_fixtures import (Agent, Watcher, latest_state, mosquitto,  # noqa: F401
                             send, still, wait_until)
from camagent.commands import TOPICS

NIGHT = {"initial_mode": "DAY", "dark_below": 20, "light_above": 40, "min_dwell_s": 0}
IP = "192.0.2.10"   # the simulated camera's wlan0 address
MICROPYTHON = os.environ.get("MICROPYTHON")
# the agent on CPython, and on a MicroPython 1.22 unix binary (what the camera runs) when set
PYTHONS = pytest.mark.parametrize("python", [
    pytest.param(None, id="cpython"),
    pytest.param(MICROPYTHON, id="micropython",
                 marks=pytest.mark.skipif(not MICROPYTHON, reason="MICROPYTHON not set"))])


@pytest.fixture
def cam(tmp_path, mosquitto):
    agents = []

    def start(**cfg):
        cfg.setdefault("night", NIGHT)
        cfg.setdefault("sd_reset_on_start", False)
        agent = Agent(tmp_path / ("agent%d" % len(agents)), mosquitto, **cfg)
        agents.append(agent)
        watcher = Watcher(mosquitto, [agent.base + "/#", "homeassistant/#"])
        agents.append(watcher)
        agent.start()
        watcher.wait_for(lambda t, p: t == agent.base + "/state", "the first state")
        return agent, watcher
    yield start
    for a in reversed(agents):
        a.close()


def configs(watcher, start=0):
    """{(component, object): expanded payload} of the latest discovery documents."""
    out = {}
    for topic, payload, retain in watcher.messages[start:]:
        parts = topic.split("/")
        if parts[0] == "homeassistant" and parts[-1] == "config":
            out[(parts[1], parts[3])] = ha_schema.expanded(json.loads(payload)) if payload else None
    return out


def shown(doc, state):
    """What HA would show for the entity, given the agent's state document."""
    return ha_schema.render(doc, "value_template", state)


def ok(agent, watcher, suffix, payload, done=None):
    kind, doc = send(watcher, agent.base, suffix, payload, done)
    assert kind == "state", "agent rejected %s %r: %s" % (suffix, payload, doc)
    return doc


@PYTHONS
def test_every_payload_passes_the_documented_schema_and_renders(cam, python):
    agent, watcher = cam(micropython=python)
    ok(agent, watcher, "preset/save", "door")
    wait_until(lambda: (configs(watcher).get(("select", "preset")) or {}).get("options"),
               what="the preset select")
    docs = configs(watcher)
    expected = 26 + (2 if "snapshot/get" in TOPICS else 0)
    assert len(docs) == expected
    state = latest_state(watcher, agent.base)
    for (component, object_id), doc in sorted(docs.items()):
        assert ha_schema.check(component, doc) == [], object_id
        assert doc["device"]["configuration_url"] == "http://%s/" % IP
        assert doc["origin"]["name"] == "camagent" and doc["origin"]["sw_version"]
        if doc.get("state_topic") != "~/state":
            continue
        value = shown(doc, state)
        if component == "select":
            assert value in doc["options"] or value == "None", (object_id, value)
        elif component in ("switch", "binary_sensor"):
            assert value in ("ON", "OFF"), (object_id, value)
        elif component == "number":
            assert doc["min"] <= float(value) <= doc["max"]
        else:
            assert value not in ("", "None"), (object_id, value)   # every sensor has a value
    assert shown(docs[("sensor", "rtsp_main")], state) == "rtsp://%s:554/stream=0" % IP
    assert shown(docs[("sensor", "rtsp_sub")], state) == "rtsp://%s:554/stream=1" % IP
    assert shown(docs[("select", "preset")], state) == "door"
    problems = docs[("sensor", "problems")]
    assert shown(problems, state) == "0"
    assert json.loads(ha_schema.render(problems, "json_attributes_template", state)) == \
        {"problems": []}


def test_preset_select_follows_moves_and_presets_are_saved_from_the_text_entity(cam):
    agent, watcher = cam()
    docs = configs(watcher)
    text = docs[("text", "preset_save")]
    save = ha_schema.expand(text, "command_topic")[len(agent.base) + 1:]
    ok(agent, watcher, "ptz/set", '{"pan": 40, "tilt": 20}', still)
    start = watcher.mark()
    st = ok(agent, watcher, save, "porch")          # what HA sends when the text is set
    assert st["presets"]["porch"] == {"pan": 40.0, "tilt": 20.0}
    wait_until(lambda: configs(watcher, start).get(("select", "preset")), what="the select")
    select = configs(watcher, start)[("select", "preset")]
    assert select["options"] == ["porch"] and shown(select, st) == "porch"
    st = ok(agent, watcher, "ptz/set", '{"pan": 200}', lambda s: s["pan"]["moving"])
    assert shown(select, st) == "None"              # HA: unknown, not a stale preset
    st = ok(agent, watcher, "ptz/set", '{"pan": 200}', still)
    assert shown(select, st) == "None"
    st = ok(agent, watcher, ha_schema.expand(select, "command_topic")[len(agent.base) + 1:],
            "porch", lambda s: still(s) and s["pan"]["position"] == 40.0)
    assert shown(select, st) == "porch"


def test_homed_and_problems_sensors(cam):
    agent, watcher = cam()
    docs = configs(watcher)
    homed, problems = docs[("binary_sensor", "homed")], docs[("sensor", "problems")]
    assert homed["entity_category"] == problems["entity_category"] == "diagnostic"
    st = latest_state(watcher, agent.base)
    assert shown(homed, st) == "OFF"
    st = ok(agent, watcher, "ptz/home", "PRESS", lambda s: still(s) and s["pan"]["homed"] and
            s["tilt"]["homed"])
    assert shown(homed, st) == "ON" and shown(problems, st) == "0"


@PYTHONS
def test_settings_set_from_home_assistant_survive_a_restart(cam, python):
    agent, watcher = cam(micropython=python)
    docs = configs(watcher)
    sent = {"led_green": "BLINK", "led_red": "ON", "night_mode": "NIGHT", "ir_led": "OFF"}
    for key, value in sent.items():
        component = "switch" if key == "ir_led" else "select"
        suffix = ha_schema.expand(docs[(component, key)], "command_topic")[len(agent.base) + 1:]
        ok(agent, watcher, suffix, value)
    assert agent.stop() == 0
    start = watcher.mark()
    agent.start()
    i, t, p = watcher.wait_for(lambda t, p: t == agent.base + "/state", "the state after restart",
                               start=start)
    st = json.loads(p)
    assert {k: st[k] for k in sent} == sent and st["ir_cut"] == "NIGHT"
    seen = set()
    wait_until(lambda: seen.add(agent.sim.levels("led_green")) or seen == {0, 1},
               what="the green LED to blink again")
    assert agent.sim.levels("led_red") == 1 and agent.sim.levels("ir_led") == 0


def test_a_first_setting_is_on_flash_at_once_even_if_the_power_goes(cam):
    agent, watcher = cam(persist_min_interval_s=300)
    ok(agent, watcher, "led_green/set", "BLINK")
    path = os.path.join(agent.sim.state_dir, "settings.json")
    wait_until(lambda: os.path.exists(path), what="settings.json")
    agent.kill()                                    # no clean stop: no flush
    start = watcher.mark()
    agent.start()
    i, t, p = watcher.wait_for(lambda t, p: t == agent.base + "/state" and
                               json.loads(p)["uptime"] is not None, "the state", start=start)
    assert json.loads(p)["led_green"] == "BLINK"


def test_a_damaged_settings_file_is_a_problem_not_a_crash(cam, tmp_path):
    state_dir = tmp_path / "damaged_state"
    state_dir.mkdir()
    path = state_dir / "settings.json"
    path.write_text('{"led_green": ')
    agent, watcher = cam(state_dir=str(state_dir))
    st = latest_state(watcher, agent.base)
    [problem] = st["problems"]     # the parser's own reason inside differs by interpreter
    assert problem.startswith("%s is damaged (not JSON (" % path), problem
    assert problem.endswith("); using the default settings until one is set"), problem
    assert st["led_green"] == "OFF" and st["night_mode"] == "DAY"
    problems = configs(watcher)[("sensor", "problems")]
    assert shown(problems, st) == "1"
    st = ok(agent, watcher, "led_green/set", "ON", lambda s: not s["problems"])
    assert json.loads(path.read_text())["led_green"] == "ON"


def test_a_new_address_reaches_home_assistant(cam):
    agent, watcher = cam(mqtt={"state_interval": 5})
    start = watcher.mark()
    agent.sim.set_ip("192.0.2.77")
    wait_until(lambda: (configs(watcher, start).get(("number", "pan")) or {}).get(
        "device", {}).get("configuration_url") == "http://192.0.2.77/",
        what="discovery with the new configuration_url", timeout=30)
    i, t, p = watcher.wait_for(lambda t, p: t == agent.base + "/state" and
                               json.loads(p)["rtsp_main"] == "rtsp://192.0.2.77:554/stream=0",
                               "the state with the new address", start=start, timeout=30)
    assert len(configs(watcher, start)) >= 26       # every entity, not just one
