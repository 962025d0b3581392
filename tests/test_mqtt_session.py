"""The MQTT session in-process, where its timing can be looked at exactly.

With the rig's virtual loop (time jumps to the next deadline; sockets are real
but never polled): reconnect backoff and state coalescing during moves. With the
real loop in a thread: the wakeups an idle connection costs.
"""
import json
import threading

import pytest

from agent_rig import Rig
from broker_fixtures import (Watcher, free_port, mosquitto, stop_leftovers,  # noqa: F401
                             wait_until)
from camagent import config
from camagent.camera import Camera
from camagent.compat import ticks_diff
from camagent.mqtt import BACKOFF_MAX_S, Session, heartbeat_s
from camhost.simcam import SimCamera


def test_reconnect_backoff_is_capped_exponential_with_jitter(tmp_path, capsys):
    port = free_port()        # nothing listens there: every attempt is refused at once
    rig = Rig(tmp_path, sd_reset_on_start=False, mqtt={"host": "127.0.0.1", "port": port})
    session = Session(rig.cam, rig.cfg)
    try:
        ratios = []
        for attempt in range(12):
            rig.loop.run_until(lambda: session._attempts > attempt, limit_us=200 * 1000000)
            delay = ticks_diff(session.due, rig.loop.t)
            base = min(BACKOFF_MAX_S, 2 ** attempt) * 1000000
            assert base // 2 <= delay <= base, (attempt, delay)
            ratios.append(delay / base)
        assert len(set(ratios)) > 6           # jittered, not a fixed schedule
        assert session.connects == 0 and rig.cam.loop is rig.loop
        err = capsys.readouterr().err
        assert err.count("retrying with backoff (up to 60 s)") == 1    # logged once
        assert "Connection refused" in err or "ECONNREFUSED" in err
    finally:
        session.close()
        rig.close()


def test_no_blocking_connect_while_an_ircut_coil_is_driven(tmp_path, mosquitto):
    rig = Rig(tmp_path, sd_reset_on_start=False,
              mqtt={"host": "127.0.0.1", "port": mosquitto.port})
    rig.loop.run_for(1000000)                 # the start-up IR-cut pulse is over
    session = Session(rig.cam, rig.cfg)
    try:
        rig.cam.ir.set_cut("NIGHT")           # a 150 ms pulse starts now
        pulse_end = rig.loop.elapsed + rig.cam.board["ircut_pulse_ms"] * 1000
        rig.loop.run_until(lambda: session.connected)
        # a connect may block for seconds: it waited until the coil was released
        assert rig.loop.elapsed >= pulse_end and not rig.cam.ir.pulsing
        assert rig.fs.value(76) == 0 and rig.fs.value(77) == 0
    finally:
        session.close()
        rig.close()


def test_state_is_coalesced_during_a_move_and_the_end_is_published(tmp_path, mosquitto):
    rig = Rig(tmp_path, sd_reset_on_start=False,
              mqtt={"host": "127.0.0.1", "port": mosquitto.port, "state_interval": 3600})
    w = Watcher(mosquitto, ["camagent/testcam/state"])
    session = Session(rig.cam, rig.cfg)
    try:
        rig.loop.run_until(lambda: session.connected)
        start, began = w.mark(), rig.loop.elapsed
        rig.cam.pan.move_to(rig.cam.pan.min_steps)   # 2020 half-steps at 600/s: 3.4 s
        rig.loop.run_until(lambda: not rig.cam.moving)
        seconds = (rig.loop.elapsed - began) / 1e6   # the move: first moving state to the last
        rig.loop.run_for(1000000)
        w.wait_for(lambda t, p: json.loads(p)["pan"]["position"] == 0.0, "the final state",
                   start=start)
        states = [json.loads(p) for p, r in w.all("camagent/testcam/state", start)]
        states = states[next(i for i, s in enumerate(states) if s["pan"]["moving"]):]
        moving = [s for s in states if s["pan"]["moving"]]
        # one state at the start, then one every 200 ms while moving, then the end
        assert 10 <= len(moving) <= 5 * seconds + 1
        assert states[-1]["pan"]["position"] == 0.0 and not states[-1]["pan"]["moving"]
        assert len(states) == len(moving) + 1
        assert seconds > 3
    finally:
        session.close()
        w.close()
        rig.close()


@pytest.mark.parametrize("quiet_us", [300 * 1000000, 800 * 1000000, (1 << 30) + 100000],
                         ids=["300s", "800s", "period+100ms"])
def test_a_change_after_a_long_quiet_time_is_published_at_once(tmp_path, mosquitto, quiet_us):
    """The last state went out `quiet_us` ago (state_interval 3600 s: only heartbeats in
    between). A change is published at once, not held back by a publication so old
    that ticks_diff() reads its age as negative (~274 s late at 800 s) or, a whole
    ticks period later, as 100 ms: the heartbeats must have forgotten it."""
    rig = Rig(tmp_path, start=False, sd_reset_on_start=False,
              mqtt={"host": "127.0.0.1", "port": mosquitto.port, "state_interval": 3600})
    rig.loop.t = (1 << 30) - 100 * 1000000       # the ticks wrap during the quiet time
    rig.cam.start()
    w = Watcher(mosquitto, ["camagent/testcam/state"])
    session = Session(rig.cam, rig.cfg)
    try:
        rig.loop.run_until(lambda: session.connected)   # ...and the state published
        published = rig.loop.elapsed
        while rig.loop.elapsed - published < quiet_us:  # the clock moves < ~537 s at once
            rig.loop.run_for(min(100 * 1000000, published + quiet_us - rig.loop.elapsed))
        beat_us = heartbeat_s(60, 3600)[0] * 1000000   # pings inside the quiet time
        assert session.connected and session.pings >= (quiet_us - 1) // beat_us
        mark = w.mark()
        rig.cam.leds["red"].set("ON")
        asked = rig.loop.elapsed
        rig.loop.run_until(lambda: session._publish_at is None, limit_us=600 * 1000000)
        assert rig.loop.elapsed == asked          # published in the same instant
        w.wait_for(lambda t, p: json.loads(p)["led_red"] == "ON", "the new state", start=mark)
    finally:
        session.close()
        w.close()
        rig.close()


def test_idle_session_wakes_once_per_heartbeat(tmp_path, mosquitto):
    """The idle cost target of `make bench`: one wakeup per heartbeat, the periodic
    state included."""
    sim = SimCamera(tmp_path / "camera")
    cfg = config.parse(json.dumps(sim.config(device_id="idlecam", sd_reset_on_start=False,
                                             mqtt={"host": "127.0.0.1", "port": mosquitto.port,
                                                   "keepalive": 5, "state_interval": 8})))
    assert heartbeat_s(5, 8) == (5, 1)        # ping every 5 s, answered within 1 s
    cam = Camera(cfg)
    session = Session(cam, cfg)
    stop = threading.Event()

    def run():
        while not stop.is_set():
            cam.loop.run_once()
    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    w = Watcher(mosquitto, ["camagent/idlecam/#"])
    try:
        w.wait_for(lambda t, p: t.endswith("/availability") and p == b"online", "online")
        wait_until(lambda: session.pings == 1, timeout=30, what="the first heartbeat")
        before, mark = cam.loop.wakeups, w.mark()
        wait_until(lambda: session.pings == 2, timeout=30, what="the next heartbeat")
        # a heartbeat is one wakeup that pings and reads the answer; nothing else wakes.
        # Every second one also carries the periodic state (state_interval 8 s).
        assert cam.loop.wakeups - before == 1
        w.wait_for(lambda t, p: t.endswith("/state"), "the periodic state", start=mark)
        assert session.connected and session.connects == 1
    finally:
        stop.set()
        w.publish("camagent/idlecam/led_red/set", "OFF")   # wakes the loop so it can stop
        runner.join(10)
        w.close()
        session.close()
        cam.close()
        sim.close()
    assert not runner.is_alive()
