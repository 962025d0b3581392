"""Broker trouble: killed mid-move, stalled, not there yet. The agent and its motors
carry on without the broker and come back to it on their own."""
import json
import os

import pytest

from broker_fixtures import (Agent, Mosquitto, Watcher, mosquitto, send, still,  # noqa: F401
                             stop_leftovers, wait_until)

# slow enough that a move is still running when the broker dies (4040 steps: ~2.7 s)
SLOW = {"speed": 1500, "max_speed": 3000, "start_speed": 500, "accel": 20000, "home_speed": 3000}


@pytest.fixture
def make_agent():
    """Starts agents (persisting the position at once) and always stops them."""
    agents = []

    def make(tmp_path, broker, **cfg):
        cfg.setdefault("sd_reset_on_start", False)
        agents.append(Agent(tmp_path, broker, persist_min_interval_s=0, **cfg))
        return agents[-1].start()
    yield make
    for agent in agents:
        agent.close()


def online(watcher, base):
    watcher.wait_for(lambda t, p: t == base + "/availability" and p == b"online", "online")


def saved_position(agent):
    try:
        with open(os.path.join(agent.sim.state_dir, "position.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def test_broker_killed_mid_move_then_restarted(tmp_path, mosquitto, make_agent):
    agent = make_agent(tmp_path, mosquitto, overrides={"pan": SLOW, "tilt": SLOW})
    w = Watcher(mosquitto, [agent.base + "/#"])
    try:
        online(w, agent.base)
        send(w, agent.base, "pan/set", "0", still)
        send(w, agent.base, "pan/set", "355", lambda s: s["pan"]["moving"])
        mosquitto.kill()
        wait_until(lambda: "connection lost" in agent.log(), what="the agent to notice")
        # the move goes on without the broker, and ends with the coils released
        wait_until(lambda: (saved_position(agent) or {}).get("at_rest") is True,
                   what="the move to end")
        assert saved_position(agent)["pan"]["steps"] == 4039   # 355 degrees, the target
        assert agent.sim.levels("pan") == (0, 0, 0, 0)
        assert agent.alive()
    finally:
        w.close()
    mosquitto.start()                     # same port, empty: nothing retained survived
    w = Watcher(mosquitto, [agent.base + "/#", "homeassistant/#"])
    try:
        online(w, agent.base)             # availability re-published after reconnecting
        i, t, p = w.wait_for(lambda t, p: t == agent.base + "/state", "the state re-published")
        st = json.loads(p)
        assert st["pan"]["position"] == 355.0 and not st["pan"]["moving"]
        w.wait_for(lambda t, p: t.startswith("homeassistant/number/"), "discovery re-published")
        kind, st = send(w, agent.base, "pan/set", "10", still)   # resubscribed: commands work
        assert kind == "state" and st["pan"]["position"] == 10.0
        assert agent.log().count("connected to") == 2
    finally:
        w.close()


def test_a_stalled_broker_is_noticed_and_reconnected(tmp_path, mosquitto, make_agent):
    stalled_broker(tmp_path, mosquitto, make_agent)


def stalled_broker(tmp_path, mosquitto, make_agent, micropython=None):
    # keepalive 5 s: ping every 4 s, answer due within 1 s
    agent = make_agent(tmp_path, mosquitto, mqtt={"keepalive": 5}, micropython=micropython)
    w = Watcher(mosquitto, [agent.base + "/availability"])
    try:
        online(w, agent.base)
    finally:
        w.close()
    mosquitto.pause()
    try:
        wait_until(lambda: "no answer to ping" in agent.log(), what="the agent to notice the stall")
        # reconnecting to the stalled broker: TCP connects, the CONNACK never comes
        wait_until(lambda: "TIMEDOUT" in agent.log() or "timed out" in agent.log(),
                   what="a connection attempt to time out")
        assert agent.alive()
    finally:
        mosquitto.resume()
    wait_until(lambda: agent.log().count("connected to") == 2, what="the agent to reconnect")
    w = Watcher(mosquitto, [agent.base + "/availability"])
    try:
        online(w, agent.base)
    finally:
        w.close()


def test_agent_started_before_the_broker_keeps_trying(tmp_path, make_agent):
    broker = Mosquitto(tmp_path / "broker")          # configured, not started yet
    agent = make_agent(tmp_path, broker)
    try:
        wait_until(lambda: "retrying with backoff" in agent.log(), what="a failed attempt")
        assert agent.alive()
        broker.start()
        wait_until(lambda: "connected to" in agent.log(), what="the agent to connect")
        w = Watcher(broker, [agent.base + "/availability"])
        try:
            online(w, agent.base)
        finally:
            w.close()
        # one message per kind of trouble, not one per attempt
        assert agent.log().count("retrying with backoff") == 1
    finally:
        broker.kill()
