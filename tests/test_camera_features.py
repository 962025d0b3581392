"""Snapshots and real day/night end to end: the real agent, real mosquitto, and the
simulated majestic (camhost.simmajestic) serving a real JPEG and an ISP gain.

With MICROPYTHON set, the snapshot tests run the agent on that MicroPython binary too.
"""
import json
import os
import shutil
import subprocess
import time

import pytest

from broker_fixtures import (Agent, Watcher, mosquitto, send, stop_leftovers,  # noqa: F401
                             wait_until)

MICROPYTHON = os.environ.get("MICROPYTHON")
RUNTIMES = [None] + ([MICROPYTHON] if MICROPYTHON else [])


def _start(tmp_path, broker, micropython=None, **cfg):
    agent = Agent(tmp_path, broker, sim_majestic=True, micropython=micropython,
                  sd_reset_on_start=False, **cfg).start()
    w = Watcher(broker, [agent.base + "/#"])
    w.wait_for(lambda t, p: t == agent.base + "/availability" and p == b"online", "online")
    return agent, w


def _snapshot(w, agent, start):
    return w.wait_for(lambda t, p: t == agent.base + "/snapshot", "a snapshot", start=start)


def _error(w, agent, start, what="an error"):
    i, t, p = w.wait_for(lambda t, p: t == agent.base + "/error", what, start=start)
    return json.loads(p)


@pytest.mark.parametrize("runtime", RUNTIMES, ids=lambda r: "micropython" if r else "cpython")
def test_snapshot_is_the_served_jpeg(tmp_path, mosquitto, runtime):
    agent, w = _start(tmp_path, mosquitto, micropython=runtime)
    try:
        served = agent.sim.majestic.image()
        start = w.mark()
        w.publish(agent.base + "/snapshot/get", b"")
        i, topic, payload = _snapshot(w, agent, start)
        assert payload == served and payload[:2] == b"\xff\xd8"
        assert w.messages[i][2] is False   # not retained
        assert "/image.jpg" in agent.sim.majestic.requests
        if shutil.which("ffprobe"):   # a real decoder opens it
            path = tmp_path / "got.jpg"
            path.write_bytes(payload)
            out = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                                  "stream=codec_name,width,height", "-of", "json", str(path)],
                                 capture_output=True, check=True, timeout=30).stdout
            stream = json.loads(out)["streams"][0]
            assert (stream["codec_name"], stream["width"], stream["height"]) == ("mjpeg", 640, 360)
        # the session is intact after the relay: a command is answered as before
        kind, st = send(w, agent.base, "led_green/set", "on")
        assert kind == "state" and st["led_green"] == "ON"
    finally:
        w.close()


def test_snapshot_query_and_retain_from_config(tmp_path, mosquitto):
    agent, w = _start(tmp_path, mosquitto,
                      snapshot={"query": "width=320&height=180&qfactor=50", "retain": True})
    try:
        start = w.mark()
        w.publish(agent.base + "/snapshot/get", b"")
        i, topic, payload = _snapshot(w, agent, start)
        assert payload == agent.sim.majestic.image(320, 180, 50)
        assert agent.sim.majestic.requests[-1] == "/image.jpg?width=320&height=180&qfactor=50"
        retained = subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(mosquitto.port),
                                   "-t", agent.base + "/snapshot", "-C", "1", "-W", "5",
                                   "--retained-only"], capture_output=True, timeout=20).stdout
        assert retained.rstrip(b"\n") == payload or retained == payload
    finally:
        w.close()


@pytest.mark.parametrize("runtime", RUNTIMES, ids=lambda r: "micropython" if r else "cpython")
@pytest.mark.parametrize("fault,words,reconnects", [
    ("down", "majestic is not running", False),
    ("garbage", "not HTTP", False),
    ("no_length", "no Content-Length", False),
    ("short", "closed the connection after", True),
    ("slow", "did not answer /image.jpg within 1 s", True),
])
def test_majestic_faults_answer_on_error_and_the_agent_keeps_working(tmp_path, mosquitto,
                                                                     fault, words, reconnects,
                                                                     runtime):
    agent, w = _start(tmp_path, mosquitto, micropython=runtime, majestic={"timeout_s": 1})
    maj = agent.sim.majestic
    try:
        maj.fault(fault, "/image.jpg")
        start = w.mark()
        w.publish(agent.base + "/snapshot/get", b"")
        err = _error(w, agent, start, "the snapshot error")
        assert err["topic"] == agent.base + "/snapshot/get"
        assert err["error"].startswith("snapshot: ") and words in err["error"], err
        assert not [m for m in w.messages[start:] if m[0] == agent.base + "/snapshot"]
        if reconnects:   # a half-written MQTT packet cannot be completed: a new session
            assert "cannot be completed" in agent.log()
            assert len([m for m in w.messages[start:] if m[0] == agent.base + "/availability"
                        and m[1] == b"online"]) == 1
        maj.fault(None, "/image.jpg")
        start = w.mark()
        w.publish(agent.base + "/snapshot/get", b"")
        assert _snapshot(w, agent, start)[2] == maj.image()
        assert agent.alive()
    finally:
        w.close()


def test_a_move_keeps_stepping_while_a_snapshot_flows(tmp_path, mosquitto):
    agent, w = _start(tmp_path, mosquitto)
    maj = agent.sim.majestic
    image = maj.image(160, 90, 90)
    assert len(image) > 3000   # trickled at ~1.3 KB/s: the relay takes seconds
    maj.set_image(image)
    maj.fault("slow", "/image.jpg")
    try:
        start = w.mark()
        w.publish(agent.base + "/snapshot/get", b"")
        wait_until(lambda: "/image.jpg" in maj.requests, what="the snapshot to start")
        before = agent.sim.levels("pan")
        w.publish(agent.base + "/pan/set", b"350")
        seen = set()
        end = time.monotonic() + 20
        while not w.all(agent.base + "/snapshot", start):
            assert time.monotonic() < end, "no snapshot: %r" % w.messages[start:]
            seen.add(agent.sim.levels("pan"))
            time.sleep(0.002)
        # the coils changed while the image was still flowing
        assert len(seen - {before, (0, 0, 0, 0)}) >= 2
        # intact, and on the same MQTT session: the states the move published while the
        # packet was half-written waited for its end instead of breaking it
        assert w.all(agent.base + "/snapshot", start)[0][0] == image
        assert not w.all(agent.base + "/availability", start)
        i, t, p = w.wait_for(lambda t, p: t == agent.base + "/state" and
                             json.loads(p)["pan"]["position"] == 350.0 and
                             not json.loads(p)["pan"]["moving"], "the move's end", start=start)
    finally:
        w.close()


@pytest.mark.parametrize("runtime", RUNTIMES, ids=lambda r: "micropython" if r else "cpython")
def test_auto_follows_the_isp_gain_with_hysteresis(tmp_path, mosquitto, runtime):
    agent, w = _start(tmp_path, mosquitto, micropython=runtime,
                      night={"initial_mode": "AUTO", "min_dwell_s": 0, "gain_poll_s": 1,
                             "gain_on": 10000, "gain_off": 3000})
    maj = agent.sim.majestic

    def state_with(cut, start):
        return w.wait_for(lambda t, p: t == agent.base + "/state" and
                          json.loads(p)["ir_cut"] == cut, "ir_cut " + cut, start=start)
    try:
        maj.gain = 1000
        state_with("DAY", 0)
        wait_until(lambda: maj.night_calls[-1:] == ["off"], what="/night/off")
        start = w.mark()
        maj.gain = 20000   # dusk: the sensor turns its gain up
        i, t, p = state_with("NIGHT", start)
        assert json.loads(p)["ir_led"] == "ON" and json.loads(p)["light"] < 20
        wait_until(lambda: maj.night_calls[-1:] == ["on"], what="/night/on")
        # inside the hysteresis band: stays NIGHT over several polls
        start = w.mark()
        polls = maj.requests.count("/metrics/isp")
        maj.gain = 6000
        wait_until(lambda: maj.requests.count("/metrics/isp") >= polls + 3, what="3 more polls")
        assert agent.sim.levels("ir_led") == 1 and maj.night_calls[-1] == "on"
        assert all(json.loads(p)["ir_cut"] == "NIGHT"
                   for p, r in w.all(agent.base + "/state", start))
        maj.gain = 2000    # daylight
        state_with("DAY", start)
        wait_until(lambda: maj.night_calls[-1:] == ["off"], what="/night/off again")
        assert agent.sim.unsafe() is None
    finally:
        w.close()


def test_gain_trouble_is_a_problem_in_the_state(tmp_path, mosquitto):
    agent, w = _start(tmp_path, mosquitto, night={"gain_poll_s": 1})
    try:
        agent.sim.majestic.fault("garbage", "/metrics/isp")
        i, t, p = w.wait_for(lambda t, p: t == agent.base + "/state" and any(
            "night: majestic answered something that is not HTTP" in s
            for s in json.loads(p)["problems"]), "the problem")
        agent.sim.majestic.fault(None, "/metrics/isp")
        w.wait_for(lambda t, p: t == agent.base + "/state" and not json.loads(p)["problems"],
                   "the problem cleared", start=i + 1)
    finally:
        w.close()


def test_majestic_login_is_sent_and_a_refusal_is_reported(tmp_path, mosquitto):
    agent, w = _start(tmp_path, mosquitto, majestic={"username": "root", "password": "12345"})
    maj = agent.sim.majestic
    try:
        maj.login = ("root", "12345")
        start = w.mark()
        w.publish(agent.base + "/snapshot/get", b"")
        assert _snapshot(w, agent, start)[2] == maj.image()
        maj.login = ("root", "changed")
        start = w.mark()
        w.publish(agent.base + "/snapshot/get", b"")
        err = _error(w, agent, start)
        assert err["error"] == "snapshot: majestic answered HTTP 401 for /image.jpg"
    finally:
        w.close()


def test_periodic_snapshots(tmp_path, mosquitto):
    agent, w = _start(tmp_path, mosquitto, snapshot={"interval_s": 1})
    try:
        start = w.mark()
        i, t, first = _snapshot(w, agent, start)
        i, t, second = _snapshot(w, agent, i + 1)
        assert first == second == agent.sim.majestic.image()
        assert not w.all(agent.base + "/snapshot/get")   # nobody asked
    finally:
        w.close()


def test_the_broker_dying_mid_snapshot(tmp_path, mosquitto):
    """The MQTT side fails half-way: the relay stops, the session comes back, the error
    is published once it is back, and the next snapshot is whole."""
    agent, w = _start(tmp_path, mosquitto)
    maj = agent.sim.majestic
    maj.set_image(maj.image(160, 90, 90))
    maj.fault("slow", "/image.jpg")
    try:
        w.publish(agent.base + "/snapshot/get", b"")
        wait_until(lambda: "/image.jpg" in maj.requests, what="the snapshot to start")
        time.sleep(0.5)   # a few pieces relayed
        w.close()
        mosquitto.kill()
        wait_until(lambda: "connection lost" in agent.log(), what="the agent to notice")
        mosquitto.start()
        w = Watcher(mosquitto, [agent.base + "/#"])
        i, t, p = w.wait_for(lambda t, p: t == agent.base + "/error", "the snapshot error")
        assert json.loads(p)["error"].startswith("snapshot: ")
        maj.fault(None, "/image.jpg")
        start = w.mark()
        w.publish(agent.base + "/snapshot/get", b"")
        assert _snapshot(w, agent, start)[2] == maj.image(160, 90, 90)
        assert agent.alive() and "Traceback" not in agent.log()
    finally:
        w.close()


@pytest.mark.parametrize("runtime", RUNTIMES, ids=lambda r: "micropython" if r else "cpython")
def test_commands_during_a_snapshot_are_carried_out_and_their_acks_wait(tmp_path, mosquitto,
                                                                         runtime):
    """A QoS 1 command read while the picture is half-written: carried out at once (a
    stop must not wait for a picture), its PUBACK held until the packet ends."""
    agent, w = _start(tmp_path, mosquitto, micropython=runtime)
    maj = agent.sim.majestic
    image = maj.image(160, 90, 90)
    maj.set_image(image)
    maj.fault("slow", "/image.jpg")
    try:
        start = w.mark()
        w.publish(agent.base + "/snapshot/get", b"")
        wait_until(lambda: "/image.jpg" in maj.requests, what="the snapshot to start")
        time.sleep(0.5)   # the PUBLISH header and a few pieces are out
        for led in ("green", "red"):
            w.publish(agent.base + "/led_%s/set" % led, b"ON", qos=1)
        wait_until(lambda: agent.sim.levels("led_green") == agent.sim.levels("led_red") == 1,
                   what="the LEDs on")
        assert not w.all(agent.base + "/snapshot", start)   # while the picture still flows
        i, t, payload = _snapshot(w, agent, start)
        assert payload == image
        assert not w.all(agent.base + "/availability", start)   # the same session throughout
        w.wait_for(lambda t, p: t == agent.base + "/state" and
                   json.loads(p)["led_red"] == "ON", "the state after the picture", start=i)
    finally:
        w.close()
