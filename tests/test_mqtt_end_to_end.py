"""The MQTT contract end to end: paho -> mosquitto -> the agent process -> fake sysfs.

One broker and one agent serve the whole module (the agent keeps its state from
test to test, as a real camera would); tests that restart or kill the agent
start their own.
"""
import json
import os

import pytest

import ha_schema
from broker_fixtures import (Agent, Mosquitto, Watcher, latest_state, mosquitto,  # noqa: F401
                             send, still, stop_leftovers, wait_until)
from camagent.commands import TOPICS

NIGHT = {"initial_mode": "DAY", "dark_below": 20, "light_above": 40, "min_dwell_s": 0}
SENT = set()   # every command suffix ok() and refused() sent; the last test checks it


@pytest.fixture(scope="module")
def cam(tmp_path_factory):
    d = tmp_path_factory.mktemp("e2e")
    broker = Mosquitto(d / "broker").start()
    watcher = Watcher(broker, ["camagent/#", "homeassistant/#"])
    agent = Agent(d, broker, night=NIGHT, sd_reset_on_start=False).start()
    watcher.wait_for(lambda t, p: t == agent.base + "/availability" and p == b"online",
                     "the agent to come online")
    watcher.wait_for(lambda t, p: t == agent.base + "/state", "the first state")
    yield agent, watcher
    watcher.close()
    agent.close()
    broker.kill()


def ok(cam, suffix, payload, done=None):
    agent, watcher = cam
    SENT.add(suffix)
    kind, doc = send(watcher, agent.base, suffix, payload, done)
    assert kind == "state", "agent rejected %s %r: %s" % (suffix, payload, doc)
    return doc


def refused(cam, suffix, payload):
    agent, watcher = cam
    SENT.add(suffix)
    kind, doc = send(watcher, agent.base, suffix, payload)
    assert kind == "error", "agent accepted %s %r" % (suffix, payload)
    return doc


def coils_released(sim):
    return sim.levels("pan") == (0, 0, 0, 0) and sim.levels("tilt") == (0, 0, 0, 0)


def test_state_document_has_every_field(cam):
    agent, watcher = cam
    state = latest_state(watcher, agent.base)
    for axis in ("pan", "tilt"):
        assert set(state[axis]) == {"position", "steps", "target_steps", "moving", "homed", "clamped",
                                    "min", "max"}
    assert state["pan"]["min"] == 0.0 and state["pan"]["max"] == 355.1
    for key, values in (("ir_led", ("ON", "OFF")), ("ir_cut", ("DAY", "NIGHT")),
                        ("night_mode", ("DAY", "NIGHT", "AUTO")),
                        ("led_green", ("ON", "OFF", "BLINK")), ("led_red", ("ON", "OFF", "BLINK")),
                        ("wifi_power", ("ON", "OFF"))):
        assert state[key] in values
    # the simulated camera's /proc: 21504 kB available, wlan0 at -58 dBm, a mounted card
    assert state["memory_free"] == 21504 * 1024
    assert state["wifi_rssi"] == -58
    assert isinstance(state["sd_free"], int) and state["sd_free"] > 0
    assert isinstance(state["uptime"], int) and state["version"]
    assert isinstance(state["presets"], dict)
    # retained, so a client that comes later gets it at once
    late = Watcher(agent.broker, [agent.base + "/state"])
    try:
        i, t, p = late.wait_for(lambda t, p: True, "the retained state")
        assert late.messages[i][2] is True and json.loads(p)["version"] == state["version"]
    finally:
        late.close()


def test_motion_topics_end_to_end(cam):
    agent, watcher = cam
    sim = agent.sim
    st = ok(cam, "pan/set", "100", still)
    assert st["pan"]["position"] == 100.0 and st["pan"]["target_steps"] == st["pan"]["steps"]
    assert coils_released(sim)
    assert ok(cam, "tilt/set", "30", still)["tilt"]["position"] == 30.0
    assert ok(cam, "pan/step", "-10", still)["pan"]["position"] == 90.0
    assert ok(cam, "tilt/step", "5.5", still)["tilt"]["position"] == 35.5
    st = ok(cam, "ptz/set", '{"pan": 200, "tilt": 60, "speed": 100}', still)
    assert (st["pan"]["position"], st["tilt"]["position"]) == (200.0, 60.0)
    assert ok(cam, "ptz/move", "LEFT", still)["pan"]["position"] == 190.0
    assert ok(cam, "ptz/move", "up", still)["tilt"]["position"] == 70.0
    assert coils_released(sim)


def test_moves_are_published_while_they_happen(cam):
    agent, watcher = cam
    start = watcher.mark()
    ok(cam, "pan/set", "0", still)
    states = [json.loads(p) for p, r in watcher.all(agent.base + "/state", start)]
    moving = [s for s in states if s["pan"]["moving"]]
    assert moving, "no state was published during the move"
    assert moving[0]["pan"]["target_steps"] == 0
    assert states[-1]["pan"]["position"] == 0.0 and not states[-1]["pan"]["moving"]


def test_stop_mid_move_releases_the_coils(cam):
    agent, watcher = cam
    ok(cam, "pan/set", "0", still)
    ok(cam, "pan/set", "355", lambda s: s["pan"]["moving"])
    st = ok(cam, "ptz/stop", "STOP", still)
    assert 0 < st["pan"]["position"] < 355
    assert st["pan"]["steps"] == st["pan"]["target_steps"]
    assert coils_released(agent.sim)


def test_home(cam):
    st = ok(cam, "ptz/home", "HOME",
            lambda s: still(s) and s["pan"]["homed"] and s["tilt"]["homed"])
    assert (st["pan"]["steps"], st["tilt"]["steps"]) == (2020, 512)   # the park position
    assert coils_released(cam[0].sim)


def test_presets_end_to_end_and_select_entity_follows(cam):
    agent, watcher = cam
    ok(cam, "ptz/set", '{"pan": 33.3, "tilt": 22.2}', still)
    start = watcher.mark()
    st = ok(cam, "preset/save", "porch")
    assert st["presets"]["porch"] == {"pan": 33.3, "tilt": 22.2}
    select = "homeassistant/select/camagent_testcam/preset/config"
    i, t, p = watcher.wait_for(lambda t, p: t == select and p, "the preset select", start=start)
    assert json.loads(p)["ops"] == ["porch"]
    ok(cam, "ptz/set", '{"pan": 300, "tilt": 80}', still)
    st = ok(cam, "preset/goto", "PORCH", still)
    assert (st["pan"]["position"], st["tilt"]["position"]) == (33.3, 22.2)
    start = watcher.mark()
    assert "porch" not in ok(cam, "preset/delete", "porch")["presets"]
    watcher.wait_for(lambda t, p: t == select and p == b"", "the preset select removed",
                     start=start)


def test_ir_and_leds_drive_the_pins(cam):
    agent, watcher = cam
    sim = agent.sim
    assert ok(cam, "ir_led/set", "ON")["ir_led"] == "ON"
    assert sim.levels("ir_led") == 1
    assert ok(cam, "ir_led/set", "off")["ir_led"] == "OFF"
    assert sim.levels("ir_led") == 0
    assert ok(cam, "ir_cut/set", "NIGHT")["ir_cut"] == "NIGHT"
    wait_until(lambda: (sim.levels("ircut_open"), sim.levels("ircut_close")) == (0, 0),
               what="the IR-cut pulse to end")
    st = ok(cam, "night_mode/set", "NIGHT")
    assert (st["night_mode"], st["ir_cut"], st["ir_led"]) == ("NIGHT", "NIGHT", "ON")
    assert sim.levels("ir_led") == 1
    ok(cam, "night_mode/set", "AUTO")
    st = ok(cam, "light/set", "90")
    assert (st["light"], st["ir_cut"], st["ir_led"]) == (90, "DAY", "OFF")
    st = ok(cam, "led_red/set", "on")
    assert st["led_red"] == "ON" and sim.levels("led_red") == 1
    assert ok(cam, "led_green/set", "BLINK")["led_green"] == "BLINK"
    seen = set()
    wait_until(lambda: seen.add(sim.levels("led_green")) or seen == {0, 1},
               what="the green LED to blink")
    ok(cam, "led_green/set", "OFF")
    ok(cam, "led_red/set", "OFF")
    assert (sim.levels("led_green"), sim.levels("led_red")) == (0, 0)


def test_sd_reset_is_accepted(cam):
    agent, watcher = cam
    before = latest_state(watcher, agent.base)["commands"]["accepted"]
    assert ok(cam, "sd/reset", "")["commands"]["accepted"] == before + 1
    wait_until(lambda: agent.sim.levels("sd_reset") == 0, what="the reset pulse to end")


def test_rejections_come_back_on_the_error_topic(cam):
    agent, watcher = cam
    doc = refused(cam, "pan/set", "999")
    assert doc == {"topic": agent.base + "/pan/set", "payload": "999",
                   "error": "pan position 999.0 is out of range; 0.0 to 355.1 degrees accepted"}
    assert "unknown command topic" in refused(cam, "zoom/set", "2")["error"]
    assert "unknown command topic" in refused(cam, "reboot/now", "1")["error"]
    assert "unknown command topic" in refused(cam, "pan/sett", "1")["error"]
    big = refused(cam, "led_red/set", "A" * 600)
    assert big["payload"] == "A" * 64 and "600 bytes; at most 512" in big["error"]
    errors = [(p, r) for p, r in watcher.all(agent.base + "/error")]
    assert errors and not any(r for p, r in errors)       # errors are not retained
    # each rejection is counted in the state too, published with the next state
    assert ok(cam, "led_red/set", "OFF")["commands"]["rejected"] >= 4


def test_snapshot_without_majestic_is_refused(cam):
    err = refused(cam, "snapshot/get", "")
    assert "snapshots need majestic: set majestic.port" in err["error"]


def test_discovery_references_only_served_topics(cam):
    agent, watcher = cam
    served = {agent.base + "/" + s for s in TOPICS}
    published = {agent.base + "/" + s for s in ("state", "motion", "snapshot")}   # by the agent
    configs = {}
    for topic, payload, retain in watcher.messages:
        if topic.startswith("homeassistant/") and topic.endswith("/config") and payload:
            configs[topic] = ha_schema.expanded(json.loads(payload))
    components = {t.split("/")[1] for t in configs}
    assert components == {"number", "button", "select", "switch", "sensor", "binary_sensor",
                          "text"} | ({"camera"} if "snapshot/get" in TOPICS else set())
    objects = {t.split("/")[3] for t in configs}
    assert {"pan", "tilt", "left", "right", "up", "down", "stop", "home", "ir_led", "ir_cut",
            "night_mode", "led_green", "led_red", "sd_reset", "uptime", "wifi_rssi",
            "memory_free", "sd_free", "moving"} <= objects
    for topic, doc in configs.items():
        expand = lambda v: v.replace("~", doc["~"]) if isinstance(v, str) else v
        assert expand(doc["availability_topic"]) == agent.base + "/availability"
        assert doc["device"]["identifiers"] == ["camagent_testcam"]
        for key in doc:
            if key.endswith("_topic") and key != "availability_topic":
                value = expand(doc[key])
                assert value in served or value in published, (topic, key, value)
    # what HA would send for each button and select option is accepted by the agent
    for topic, doc in sorted(configs.items()):
        component = topic.split("/")[1]
        suffix = doc.get("command_topic", "").replace("~/", "")
        # (snapshot/get needs majestic, which this rig does not run: its own tests press it)
        if component == "button" and suffix not in ("ptz/home", "snapshot/get"):
            ok(cam, suffix, doc.get("payload_press", "PRESS"), still)
        elif component == "select" and suffix != "preset/goto":
            for option in doc["options"]:
                ok(cam, suffix, option, still)
    ok(cam, "led_green/set", "OFF")


def test_home_assistant_birth_republishes_discovery(cam):
    agent, watcher = cam
    start = watcher.mark()
    watcher.publish("homeassistant/status", "online")
    first = {t for t, p, r in watcher.messages[:start] if t.endswith("/config")}
    seen = set()
    watcher.wait_for(lambda t, p: t.endswith("/config") and (seen.add(t) or seen == first),
                     "all %d discovery documents again after HA's birth message" % len(first),
                     start=start)
    assert len(first) == 26 + (2 if "snapshot/get" in TOPICS else 0)


@pytest.fixture
def own_agent(tmp_path, mosquitto):
    agents = []

    def make(**cfg):
        a = Agent(tmp_path / ("agent%d" % len(agents)), mosquitto, **cfg)
        agents.append(a)
        return a.start()
    yield make
    for a in agents:
        a.close()


def test_last_will_says_offline_when_the_agent_is_killed(own_agent, mosquitto):
    agent = own_agent()
    w = Watcher(mosquitto, [agent.base + "/availability"])
    try:
        w.wait_for(lambda t, p: p == b"online", "online")
        agent.kill()
        w.wait_for(lambda t, p: p == b"offline", "the Last Will")
    finally:
        w.close()
    late = Watcher(mosquitto, [agent.base + "/availability"])   # retained for newcomers
    try:
        i, t, p = late.wait_for(lambda t, p: True, "the retained availability")
        assert p == b"offline" and late.messages[i][2] is True
    finally:
        late.close()


def test_clean_stop_says_offline_and_presets_survive_a_restart(own_agent, mosquitto, tmp_path):
    agent = own_agent()
    w = Watcher(mosquitto, [agent.base + "/#"])
    try:
        w.wait_for(lambda t, p: t.endswith("/availability") and p == b"online", "online")
        kind, st = send(w, agent.base, "preset/save", "gate")
        assert kind == "state"
        assert agent.stop() == 0
        w.wait_for(lambda t, p: t.endswith("/availability") and p == b"offline", "offline")
        start = w.mark()
        agent.start()
        i, t, p = w.wait_for(lambda t, p: t == agent.base + "/state", "state after restart",
                             start=start)
        assert "gate" in json.loads(p)["presets"]
    finally:
        w.close()


def test_a_damaged_presets_file_is_named_in_the_state(tmp_path, mosquitto):
    agent = Agent(tmp_path / "agent", mosquitto)
    os.makedirs(agent.sim.state_dir, exist_ok=True)
    damaged = os.path.join(agent.sim.state_dir, "presets.json")
    with open(damaged, "w") as f:
        f.write('{"door": [1,')
    w = Watcher(mosquitto, [agent.base + "/state"])
    try:
        agent.start()
        i, t, p = w.wait_for(lambda t, p: True, "the first state")
        problems = json.loads(p)["problems"]
        assert len(problems) == 1 and problems[0].startswith(
            "%s is damaged (not JSON" % damaged), problems
        assert problems[0].endswith("); starting with no presets"), problems
    finally:
        w.close()
        agent.close()


# Last in the file (pytest runs a module's tests in file order): what the tests above sent.
def test_every_command_topic_was_exercised(request):
    selected = {item.name for item in request.session.items if item.module is request.module}
    if selected != {name for name in vars(request.module) if name.startswith("test_")}:
        pytest.skip("only part of this module ran")
    missing = sorted(set(TOPICS) - SENT)
    assert not missing, "command topics no test sent: %s" % ", ".join(missing)
