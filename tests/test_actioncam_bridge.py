"""`camhost actioncam bridge`: the simulated action camera on real mosquitto.

The bridge runs in a thread on the object API for most tests, and as the user runs it
(`python -m camhost actioncam bridge`) for the CLI, SIGTERM and the Last Will.
"""
import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from broker_fixtures import (WAIT_S, Mosquitto, Watcher, availability, free_port,  # noqa: F401
                             mosquitto, send, stop_leftovers, wait_state, wait_until)
from camhost.actioncam import ActionCam
from camhost.actioncam_bridge import ActionCamBridge
from camhost.bridge import Bridge
from camhost.simactioncam import SimActionCam, make_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = "camagent/ac1"


@pytest.fixture
def sim(tmp_path):
    cam = SimActionCam(files_dir=make_files(str(tmp_path / "sd"), count=5, size=2000),
                       alive_interval_s=0.2, file_list_part_size=60)
    with cam:
        yield cam


class Running:
    """An ActionCamBridge on its own thread, polling every 0.2 s."""

    def __init__(self, sim_port, broker, rtsp_url=None):
        self.cam = ActionCam("127.0.0.1", sim_port, timeout=1)
        self.bridge = Bridge(broker.url, "ac1", {"model": "test"})
        self.ab = ActionCamBridge(self.cam, self.bridge, rtsp_url)
        self.bridge.connect()
        self.thread = threading.Thread(target=self.bridge.run_forever,
                                       args=(self.ab.poll, 0.2, self.ab.publish), daemon=True)
        self.thread.start()

    def close(self):
        self.bridge.close()
        self.thread.join(WAIT_S)
        self.cam.close()


@pytest.fixture
def watcher(mosquitto):
    w = Watcher(mosquitto, topics=("camagent/#", "homeassistant/#"))
    yield w
    w.close()


def test_commands_state_and_discovery_end_to_end(sim, mosquitto, watcher):
    run = Running(sim.control_port, mosquitto, rtsp_url="rtsp://cam.lan:8554/preview")
    try:
        wait_until(lambda: availability(watcher, BASE) == b"online", what="online")
        state = wait_state(watcher, BASE, lambda d: d["files"] == 5, "the file count")
        assert state["firmware"] == "v1.0 rc5" and state["recording"] is None
        assert state["problems"] == [] and state["rtsp_url"] == "rtsp://cam.lan:8554/preview"

        kind, doc = send(watcher, BASE, "still/take", "TAKE", lambda d: d["stills"] == 1)
        assert kind == "state" and doc["last_still"] and sim.stills == 1
        kind, doc = send(watcher, BASE, "record/set", "ON", lambda d: d["recording"] is True)
        assert kind == "state" and sim.recording is True
        kind, doc = send(watcher, BASE, "record/set", "off", lambda d: d["recording"] is False)
        assert kind == "state" and sim.recording is False
        assert doc["commands"] == {"accepted": 3, "rejected": 0}

        configs = {t: json.loads(p) for t, p, r in watcher.messages
                   if t.startswith("homeassistant/") and p}
        node = "homeassistant/%s/camhost_ac1/%s/config"
        button = configs[node % ("button", "still")]
        assert button["command_topic"] == "~/still/take" and button["~"] == BASE
        switch = configs[node % ("switch", "recording")]
        assert switch["command_topic"] == "~/record/set" and switch["payload_on"] == "ON"
        assert configs[node % ("sensor", "rtsp_url")]["value_template"] == \
            "{{ value_json.rtsp_url }}"
        for doc in (button, switch, configs[node % ("sensor", "files")]):
            assert doc["availability_topic"] == "~/availability"
            assert doc["origin"]["name"] == "camhost"
            assert doc["device"]["identifiers"] == ["camhost_ac1"]
        # the firmware learnt at the first poll is the device's sw_version
        last = [json.loads(p) for t, p, r in watcher.messages if t == node % ("button", "still")]
        assert last[-1]["device"]["sw_version"] == "v1.0 rc5"
        # Home Assistant restarting: discovery and state go out again
        start = watcher.mark()
        watcher.publish("homeassistant/status", b"online")
        watcher.wait_for(lambda t, p: t == node % ("switch", "recording"), "discovery again",
                         start=start)
        watcher.wait_for(lambda t, p: t == BASE + "/state", "the state again", start=start)
    finally:
        run.close()
    assert availability(watcher, BASE) == b"offline"


@pytest.mark.parametrize("suffix, payload, message", [
    ("record/set", "MAYBE", "record/set takes ON or OFF"),
    ("still/take", "now", "still/take takes TAKE or PRESS"),
    ("still/take", "\xff\x00", "still/take takes TAKE or PRESS"),
    ("zoom/set", "5", "unknown command topic; accepted: record/set, still/take"),
    ("record/set", "ON" * 300, "payload is 600 bytes; at most 512 accepted"),
])
def test_bad_payloads_are_answered_on_the_error_topic(sim, mosquitto, watcher, suffix,
                                                      payload, message):
    run = Running(sim.control_port, mosquitto)
    try:
        wait_until(lambda: availability(watcher, BASE) == b"online", what="online")
        kind, doc = send(watcher, BASE, suffix, payload.encode("latin-1"))
        assert kind == "error" and doc["error"] == message
        assert doc["topic"] == "%s/%s" % (BASE, suffix)
        assert sim.recording is False and sim.stills == 0
        wait_state(watcher, BASE, lambda d: d["commands"]["rejected"] == 1, "the rejected count")
    finally:
        run.close()


def test_offline_when_the_camera_goes_and_online_when_it_returns(sim, mosquitto, watcher,
                                                                 tmp_path):
    port = sim.control_port
    run = Running(port, mosquitto)
    try:
        wait_until(lambda: availability(watcher, BASE) == b"online", what="online")
        sim.close()
        wait_until(lambda: availability(watcher, BASE) == b"offline", what="offline")
        state = wait_state(watcher, BASE, lambda d: d["problems"], "a problem in the state")
        assert state["problems"][0].startswith("the camera at 127.0.0.1:%d does not answer: "
                                               % port)
        kind, doc = send(watcher, BASE, "still/take", "TAKE")
        assert kind == "error" and doc["error"].startswith("the camera is offline (")
        back = SimActionCam(control_port=port, alive_interval_s=0.2)
        with back:
            wait_until(lambda: availability(watcher, BASE) == b"online", what="online again")
            kind, doc = send(watcher, BASE, "still/take", "TAKE", lambda d: d["stills"] == 1)
            assert kind == "state" and back.stills == 1 and doc["problems"] == []
    finally:
        run.close()


def test_the_bridge_survives_a_broker_restart(sim, tmp_path):
    broker = Mosquitto(tmp_path / "broker").start()
    run = Running(sim.control_port, broker)
    try:
        first = Watcher(broker, topics=("camagent/#",))
        wait_until(lambda: availability(first, BASE) == b"online", what="online")
        first.close()
        broker.stop()               # no persistence: every retained message is gone
        broker.start()
        again = Watcher(broker, topics=("camagent/#", "homeassistant/#"))
        try:
            # retained again: the bridge republished them on reconnecting
            wait_until(lambda: availability(again, BASE) == b"online", what="online after restart")
            again.wait_for(lambda t, p: t.endswith("/switch/camhost_ac1/recording/config"),
                           "discovery after restart")
            kind, doc = send(again, BASE, "record/set", "ON", lambda d: d["recording"])
            assert kind == "state" and sim.recording is True
        finally:
            again.close()
        assert run.bridge.connects >= 2
    finally:
        run.close()


def _cli(sim, broker, *extra):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "hostside"))
    return subprocess.Popen([sys.executable, "-m", "camhost", "actioncam", "--host", "127.0.0.1",
                             "--control-port", str(sim.control_port), "--timeout", "1",
                             "bridge", "--device-id", "ac1", "--poll", "0.3"] + list(extra) +
                            ["--broker", broker], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_the_cli_says_offline_on_exit_and_its_will_says_it_on_a_crash(sim, mosquitto, watcher,
                                                                      how):
    proc = _cli(sim, mosquitto.url)
    try:
        wait_until(lambda: availability(watcher, BASE) == b"online", what="online")
        kind, doc = send(watcher, BASE, "still/take", "PRESS", lambda d: d["stills"] == 1)
        assert kind == "state" and sim.stills == 1
        proc.send_signal(getattr(signal, how))
        assert proc.wait(WAIT_S) == (0 if how == "SIGTERM" else -signal.SIGKILL)
        wait_until(lambda: availability(watcher, BASE) == b"offline", what="offline")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_the_cli_refuses_a_broker_that_is_not_there(sim):
    proc = _cli(sim, "mqtt://127.0.0.1:%d" % free_port())
    out, err = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == 4
    assert b"nothing is listening at mqtt://127.0.0.1:" in err


def _has_gst_rtsp():
    return os.path.exists("/usr/bin/python3") and subprocess.run(
        ["/usr/bin/python3", "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"],
        capture_output=True).returncode == 0


@pytest.mark.skipif(not _has_gst_rtsp(), reason="needs Debian's python3-gi and "
                                                 "gir1.2-gst-rtsp-server-1.0")
def test_the_bridge_serves_the_preview_and_publishes_its_url(mosquitto, watcher, tmp_path):
    """--rtsp-port: the relay runs on the bridge's own control session (the camera takes
    one control client), ffmpeg decodes from the published URL while commands work."""
    from camhost.simactioncam import encode_test_stream
    from test_actioncam import free_udp_port
    h264 = encode_test_stream(str(tmp_path / "t.h264"), seconds=2, size="320x240")
    with SimActionCam(h264, preview_port=free_udp_port(), alive_interval_s=0.2) as sim:
        proc = _cli(sim, mosquitto.url, "--rtsp-port", "0", "--preview-port",
                    str(sim.preview_port))
        try:
            state = wait_state(watcher, BASE, lambda d: d["rtsp_url"] and not d["problems"],
                               "the stream's URL")
            url = state["rtsp_url"]
            assert url.startswith("rtsp://127.0.0.1:") and url.endswith("/preview")
            p = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-rtsp_transport",
                                "tcp", "-i", url, "-frames:v", "10", "-f", "framecrc", "-"],
                               capture_output=True, text=True, timeout=60)
            sizes = [int(line.split(",")[4]) for line in p.stdout.splitlines()
                     if line and not line.startswith("#")]
            assert p.returncode == 0 and sizes == [320 * 240 * 3 // 2] * 10, p.stderr
            kind, doc = send(watcher, BASE, "still/take", "TAKE", lambda d: d["stills"] == 1)
            assert kind == "state" and sim.stills == 1
            configs = [t for t, p, r in watcher.messages if t.endswith("/rtsp_url/config")]
            assert configs
        finally:
            proc.terminate()
            proc.wait(WAIT_S)
            proc.stdout.close()
            proc.stderr.close()


def test_an_answer_that_does_not_parse_is_a_problem_not_a_crash(sim, mosquitto, watcher,
                                                                 monkeypatch):
    from camhost import actioncam_wire
    monkeypatch.setattr(actioncam_wire, "firmware_payload", lambda version: b"short")
    run = Running(sim.control_port, mosquitto)
    try:
        state = wait_state(watcher, BASE, lambda d: d["problems"], "the problem")
        assert state["problems"][0].endswith("firmware information of 5 bytes has no version "
                                             "string (at offset 80)")
        assert availability(watcher, BASE) == b"offline" and run.thread.is_alive()
        monkeypatch.undo()
        wait_until(lambda: availability(watcher, BASE) == b"online", what="online once it parses")
    finally:
        run.close()
