"""`camhost toupcam bridge`: the simulated ToupCam on real mosquitto, on the same
camhost.bridge plumbing as the action-camera bridge."""
import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from broker_fixtures import (WAIT_S, Watcher, availability, mosquitto,  # noqa: F401
                             send, stop_leftovers, wait_state, wait_until)
from camhost import toupcam
from camhost.bridge import Bridge
from camhost.toupcam_bridge import ToupCamBridge
from test_toupcam import cam, free_udp_port, jpeg, listen  # noqa: F401 (fixtures)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = "camagent/tc1"


@pytest.fixture
def watcher(mosquitto):
    w = Watcher(mosquitto, topics=("camagent/#", "homeassistant/#"))
    yield w
    w.close()


class Running:
    def __init__(self, sim, listen, broker, out_dir=None):
        self.controls = toupcam.Controls("127.0.0.1", sim.control_port, listen, "127.0.0.1")
        self.bridge = Bridge(broker.url, "tc1", {"model": "test"})
        self.tb = ToupCamBridge(self.bridge, self.controls, dict(toupcam.REGISTERS),
                                sim.snap_port, stale_s=1.0, timeout=1, out_dir=out_dir)
        self.bridge.connect()
        self.tb.start()
        self.thread = threading.Thread(target=self.bridge.run_forever,
                                       args=(self.tb.poll, 0.2, self.tb.publish), daemon=True)
        self.thread.start()

    def close(self):
        self.bridge.close()
        self.thread.join(WAIT_S)
        self.tb.stop()
        self.controls.close()


@pytest.fixture
def running(cam, listen, mosquitto, tmp_path):
    run = Running(cam, listen, mosquitto, str(tmp_path / "saved"))
    yield run
    run.close()


def test_snap_registers_and_discovery_end_to_end(cam, running, watcher, tmp_path):
    wait_until(lambda: availability(watcher, BASE) == b"online", what="online")
    state = wait_state(watcher, BASE, lambda d: len(d["registers"]) == 3, "three registers")
    assert state["registers"] == {"color_temperature": 58000, "exposure": 180, "gamma": 700}

    kind, doc = send(watcher, BASE, "snap/take", "TAKE", lambda d: d["snaps"] == 1)
    assert kind == "state" and doc["last_snap_size"] == [1280, 720]
    assert doc["last_snap_bytes"] == len(cam.jpeg) and doc["last_snap"]
    images = watcher.all(BASE + "/snap/image")
    assert images == [(cam.jpeg, 0)]           # byte-identical (retain flag: live delivery)
    saved = os.listdir(str(tmp_path / "saved"))
    assert len(saved) == 1 and open(str(tmp_path / "saved" / saved[0]), "rb").read() == cam.jpeg

    kind, doc = send(watcher, BASE, "exposure/set", "250")
    assert kind == "state" and cam.writes == [(3, 250)]
    doc = wait_state(watcher, BASE, lambda d: d["registers"].get("exposure") == 250 and
                     not d["unconfirmed"], "the write reported back")
    kind, doc = send(watcher, BASE, "register/set", "0x0B=7")
    assert kind == "state"
    wait_state(watcher, BASE, lambda d: d["registers"].get("0x0B") == 7, "register 0x0B")

    configs = {t: json.loads(p) for t, p, r in watcher.messages
               if t.startswith("homeassistant/") and p}
    node = "homeassistant/%s/camhost_tc1/%s/config"
    assert configs[node % ("camera", "snap")]["topic"] == "~/snap/image"
    assert configs[node % ("button", "snap")]["command_topic"] == "~/snap/take"
    number = configs[node % ("number", "exposure")]
    assert number["command_topic"] == "~/exposure/set"
    assert number["value_template"] == "{{ value_json.registers.get('exposure') }}"
    assert number["origin"]["name"] == "camhost" and number["~"] == BASE
    assert {node % ("number", n) for n in ("gamma", "color_temperature")} <= set(configs)


@pytest.mark.parametrize("suffix, payload, message", [
    ("exposure/set", "lots", "value 'lots' is not a whole number (e.g. 180 or 0xB4)"),
    ("exposure/set", "-5", "value -5 does not fit the register's 32 bits (0-4294967295)"),
    ("register/set", "0x0B", "register/set takes REG=VALUE, e.g. 0x03=180 or exposure=180"),
    ("register/set", "brightness=1", "unknown register 'brightness'; known names: "
                                     "color_temperature, exposure, gamma, or give a number "
                                     "such as 0x03"),
    ("snap/take", "now", "snap/take takes TAKE or PRESS"),
    ("focus/set", "1", "unknown command topic; accepted: color_temperature/set, exposure/set, "
                       "gamma/set, register/set, snap/take"),
])
def test_bad_commands_are_answered_on_the_error_topic(cam, running, watcher, suffix, payload,
                                                      message):
    wait_until(lambda: availability(watcher, BASE) == b"online", what="online")
    kind, doc = send(watcher, BASE, suffix, payload)
    assert kind == "error" and doc["error"] == message
    assert cam.writes == [] and cam.snaps == 0


def test_a_snap_that_fails_is_an_error_and_a_problem(cam, running, watcher):
    wait_until(lambda: availability(watcher, BASE) == b"online", what="online")
    cam.fault = "no_jpeg"
    kind, doc = send(watcher, BASE, "snap/take", "TAKE")
    assert kind == "error"
    assert doc["error"].startswith("the camera did not do it: snap reply, GEPJ layer: no 'GEPJ'")
    state = wait_state(watcher, BASE, lambda d: d["commands"]["rejected"] == 1, "the rejected count")
    assert state["problems"][0].startswith("the last snap failed: snap reply, GEPJ layer")
    assert watcher.all(BASE + "/snap/image") == []
    cam.fault = None
    kind, doc = send(watcher, BASE, "snap/take", "TAKE", lambda d: d["snaps"] == 1)
    assert kind == "state" and doc["problems"] == []


def test_offline_while_the_camera_is_silent_and_unconfirmed_writes(cam, running, watcher):
    wait_until(lambda: availability(watcher, BASE) == b"online", what="online")
    cam.udp_fault = "ignore_writes"
    send(watcher, BASE, "exposure/set", "90")
    state = wait_state(watcher, BASE, lambda d: d["unconfirmed"] == {"exposure": 90},
                       "the write unconfirmed")
    assert state["registers"]["exposure"] == 180
    cam.udp_fault = "silent"
    wait_until(lambda: availability(watcher, BASE) == b"offline", what="offline")
    state = wait_state(watcher, BASE, lambda d: d["problems"], "a problem")
    assert state["problems"][0].startswith("no report from the camera at 127.0.0.1")
    cam.udp_fault = None
    wait_until(lambda: availability(watcher, BASE) == b"online", what="online again")


def test_the_cli_bridge_and_sigterm(cam, listen, mosquitto, watcher):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "hostside"))
    proc = subprocess.Popen([sys.executable, "-m", "camhost", "toupcam", "--host", "127.0.0.1",
                             "--snap-port", str(cam.snap_port), "--control-port",
                             str(cam.control_port), "--listen-port", str(listen), "bridge",
                             "--broker", mosquitto.url, "--device-id", "tc1", "--poll", "0.3"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: availability(watcher, BASE) == b"online", what="online")
        kind, doc = send(watcher, BASE, "snap/take", "PRESS", lambda d: d["snaps"] == 1)
        assert kind == "state" and watcher.all(BASE + "/snap/image")[0][0] == cam.jpeg
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(WAIT_S) == 0
        wait_until(lambda: availability(watcher, BASE) == b"offline", what="offline")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
