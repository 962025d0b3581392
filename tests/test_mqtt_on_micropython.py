"""The MQTT contract with the agent on a real MicroPython unix binary (what the camera
runs) instead of CPython: umqtt.simple's own sockets, timeouts and reconnects.

Runs when the MICROPYTHON environment variable names a MicroPython 1.22 unix-port
binary (as for `make bench`); skipped otherwise.
"""
import json
import os

import pytest

from camagent.commands import TOPICS

from broker_fixtures import (Agent, Watcher, mosquitto, send, still,  # noqa: F401
                             stop_leftovers, wait_until)
from test_mqtt_fuzz import fuzz_agent
from test_mqtt_resilience import make_agent, stalled_broker  # noqa: F401 (a fixture)

MICROPYTHON = os.environ.get("MICROPYTHON")
pytestmark = pytest.mark.skipif(not MICROPYTHON, reason="MICROPYTHON not set")


def test_contract_and_reconnect_on_micropython(tmp_path, mosquitto):
    agent = Agent(tmp_path, mosquitto, micropython=MICROPYTHON, sd_reset_on_start=False).start()
    w = Watcher(mosquitto, [agent.base + "/#", "homeassistant/#"])
    try:
        w.wait_for(lambda t, p: t == agent.base + "/availability" and p == b"online", "online")
        kind, st = send(w, agent.base, "ptz/set", '{"pan": 90, "tilt": 30}', still)
        assert kind == "state" and (st["pan"]["position"], st["tilt"]["position"]) == (90.0, 30.0)
        assert agent.sim.levels("pan") == (0, 0, 0, 0)
        kind, err = send(w, agent.base, "pan/set", "nan")
        assert kind == "error" and "pan position in degrees must be a decimal number" in err["error"]
        kind, st = send(w, agent.base, "led_green/set", "blink")
        assert kind == "state" and st["led_green"] == "BLINK"
        docs = [json.loads(p) for t, p, r in w.messages if t.endswith("/config") and p]
        # 25, and the camera and its snapshot button once snapshot/get exists
        extra = 2 * ("snapshot/get" in TOPICS)
        assert len(docs) == 25 + extra and all(d["avty_t"] == "~/availability" for d in docs)
    finally:
        w.close()
    mosquitto.kill()
    wait_until(lambda: "connection lost" in agent.log(), what="the agent to notice")
    mosquitto.start()
    w = Watcher(mosquitto, [agent.base + "/#"])
    try:
        w.wait_for(lambda t, p: t == agent.base + "/availability" and p == b"online",
                   "online again", timeout=30)
        i, t, p = w.wait_for(lambda t, p: t == agent.base + "/state", "the state re-published")
        assert json.loads(p)["pan"]["position"] == 90.0
        kind, st = send(w, agent.base, "pan/step", "-10", still)
        assert kind == "state" and st["pan"]["position"] == 80.0
        assert agent.alive() and "Traceback" not in agent.log()
    finally:
        w.close()
    assert agent.stop() == 0


def test_fuzzed_commands_on_micropython(tmp_path, mosquitto):
    fuzz_agent(tmp_path, mosquitto, micropython=MICROPYTHON)


def test_stalled_broker_on_micropython(tmp_path, mosquitto, make_agent):
    stalled_broker(tmp_path, mosquitto, make_agent, micropython=MICROPYTHON)
