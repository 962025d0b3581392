"""`camhost ctl` against a running agent on a real mosquitto."""
import io
import itertools
import json
import os
import subprocess
import sys
import threading
import types

import pytest

from broker_fixtures import (WAIT_S, Agent, Mosquitto, Watcher, stop_leftovers,  # noqa: F401
                             wait_until)
from camhost import cli, ctl as camhost_ctl, mqttclient
from camhost.errors import CamhostError
from camhost.mqttclient import BrokerURL, Link

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("ctl")
    broker = Mosquitto(d / "broker").start()
    agent = Agent(d, broker, sd_reset_on_start=False,
                  night={"initial_mode": "DAY", "dark_below": 20, "light_above": 40,
                         "min_dwell_s": 0}).start()
    w = Watcher(broker, [agent.base + "/availability"])
    w.wait_for(lambda t, p: p == b"online", "the agent online")
    w.close()
    yield broker, agent
    agent.close()
    broker.kill()


@pytest.fixture
def ctl(setup, capsys):
    broker, agent = setup

    def run(*argv):
        code = cli.main(["ctl", "--broker", broker.url, "--timeout", "20"] + list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    return run


def test_list_and_status(ctl):
    code, out, err = ctl("list")
    assert code == 0
    assert out.splitlines()[0].split() == ["DEVICE", "STATUS", "PAN", "TILT", "VERSION"]
    assert out.splitlines()[1].split()[:2] == ["testcam", "online"]
    code, out, err = ctl("status")
    assert code == 0 and out.startswith("testcam  [online]") and "pan  [" in out
    code, out, err = ctl("status", "--json")
    assert code == 0 and json.loads(out)["pan"]["max"] == 355.1


def test_motion_commands_wait_for_the_result(ctl):
    assert ctl("home") == (0, "testcam: homed; parked at pan 177.5°, tilt 45.0°\n", "")
    assert ctl("pan", "90") == (0, "testcam: pan at 90.0°\n", "")
    assert ctl("pan", "--by", "-10.5") == (0, "testcam: pan at 79.5°\n", "")
    assert ctl("tilt", "10") == (0, "testcam: tilt at 10.0°\n", "")
    assert ctl("ptz", "--pan", "200", "--tilt", "30", "--speed", "60") == \
        (0, "testcam: pan at 200.0°, tilt at 30.0°\n", "")
    # 200 degrees is half-step 2276; the 10 degree increment is 114 half-steps
    assert ctl("move", "right")[1] == "testcam: pan at 210.1°, tilt at 30.0°\n"
    assert ctl("stop")[1] == "testcam: stopped at pan 210.1°, tilt 30.0°\n"
    # a JSON number goes to the agent as typed
    assert ctl("ptz", "--pan", "1.2e2")[1] == "testcam: pan at 120.0°, tilt at 30.0°\n"


def test_presets(ctl):
    ctl("ptz", "--pan", "12", "--tilt", "34")
    assert ctl("preset", "save", "desk") == (0, "testcam: preset desk saved; presets: desk\n", "")
    assert ctl("preset", "list")[1] == "testcam: presets: desk (pan 12.0°, tilt 34.0°)\n"
    ctl("pan", "300")
    assert ctl("preset", "goto", "desk")[1] == "testcam: at preset desk: pan 12.0°, tilt 34.0°\n"
    assert ctl("preset", "delete", "desk")[1] == "testcam: preset desk deleted; presets: none\n"


def test_ir_night_and_leds(ctl, setup):
    sim = setup[1].sim
    assert ctl("ir", "led", "on")[1] == "testcam: IR LED ON, IR-cut DAY\n"
    assert sim.levels("ir_led") == 1
    assert ctl("ir", "cut", "night")[1] == "testcam: IR LED ON, IR-cut NIGHT\n"
    assert ctl("night", "day")[1] == "testcam: night mode DAY (IR LED OFF, IR-cut DAY)\n"
    assert ctl("led", "red", "blink")[1] == "testcam: red LED BLINK\n"
    assert ctl("led", "red", "off")[1] == "testcam: red LED OFF\n"
    assert sim.levels("led_red") == 0


@pytest.mark.parametrize("argv,message", [
    (("pan", "999"), "testcam: pan position 999.0 is out of range; 0.0 to 355.1 degrees accepted"),
    (("tilt", "ten"), "testcam: tilt position in degrees must be a decimal number such as 90 or "
                      "-12.5"),
    (("ptz", "--pan", "abc"), "testcam: ptz/set: pan must be a number"),
    # not JSON numbers, though float() takes them: refused as `pan` refuses them
    (("ptz", "--pan", "\u0669\u0660"), "testcam: ptz/set: pan must be a number"),
    (("ptz", "--tilt", "1_0"), "testcam: ptz/set: tilt must be a number"),
    (("ptz", "--pan", " 90"), "testcam: ptz/set: pan must be a number"),
    (("ptz", "--pan", "1e999"), "testcam: ptz/set: pan must be a finite number"),  # JSON's, inf
    (("ptz",), "testcam: ptz/set needs pan or tilt (degrees); speed alone moves nothing"),
    (("preset", "goto", "nowhere"), "testcam: no preset named 'nowhere'; saved presets: none"),
])
def test_rejected_commands_exit_1_with_the_agents_own_words(ctl, argv, message):
    assert ctl(*argv) == (1, "", "camhost: error: %s\n" % message)


def test_unknown_device_and_unreachable_broker(ctl, capsys):
    code, out, err = ctl("--device", "nosuch", "pan", "1")
    assert code == 3 and "no agent 'nosuch'" in err
    code = cli.main(["ctl", "--broker", "mqtt://127.0.0.1:1", "list"])
    out, err = capsys.readouterr()
    assert code == 4 and "nothing is listening at mqtt://127.0.0.1:1" in err


def test_several_agents_need_device(setup, tmp_path, capsys):
    broker, agent = setup
    second = Agent(tmp_path, broker, device_id="othercam").start()
    try:
        w = Watcher(broker, [second.base + "/availability"])
        w.wait_for(lambda t, p: p == b"online", "the second agent")
        w.close()
        code = cli.main(["ctl", "--broker", broker.url, "pan", "1"])
        out, err = capsys.readouterr()
        assert code == 2 and "several agents are online (othercam, testcam)" in err
        code = cli.main(["ctl", "--broker", broker.url, "--device", "othercam", "pan", "100"])
        assert code == 0 and capsys.readouterr().out == "othercam: pan at 100.0°\n"
    finally:
        second.close()


def test_offline_agent_is_not_sent_commands(setup, tmp_path, capsys):
    broker, agent = setup
    gone = Agent(tmp_path, broker, device_id="gonecam").start()
    w = Watcher(broker, [gone.base + "/availability"])
    w.wait_for(lambda t, p: p == b"online", "online")
    gone.kill()
    w.wait_for(lambda t, p: p == b"offline", "offline")
    w.close()
    gone.close()
    code = cli.main(["ctl", "--broker", broker.url, "--device", "gonecam", "pan", "1"])
    assert code == 3 and "agent gonecam is offline; nothing sent" in capsys.readouterr().err


def test_watch_updates_until_count(setup):
    broker, agent = setup
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "hostside"))
    proc = subprocess.Popen([sys.executable, "-m", "camhost", "ctl", "--broker", broker.url,
                             "--device", "testcam", "watch", "--count", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = proc.stdout.readline()            # the panel as it stands
        assert first.startswith("pan  [") and "IR LED OFF " in first
        assert cli.main(["ctl", "--broker", broker.url, "ir", "led", "on"]) == 0
        assert cli.main(["ctl", "--broker", broker.url, "ir", "led", "off"]) == 0
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        lines = out.splitlines()
        assert len(lines) == 2     # one state per command, then it stops
        assert "IR LED ON " in lines[0] and "IR LED OFF " in lines[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_watch_has_no_deadline(setup, monkeypatch):
    """An agent may stay quiet for a day (state_interval up to 86400 s): watch waits for
    the next state however long it takes."""
    broker, agent = setup
    link = Link(broker.url)
    try:
        watched = camhost_ctl.Agent(link, "camagent", "testcam", 20)
        hours = itertools.count()   # from here on, every clock reading is an hour later
        monkeypatch.setattr(mqttclient, "time",
                            types.SimpleNamespace(monotonic=lambda: 3600.0 * next(hours)))
        out, result = io.StringIO(), {}

        def run():
            try:
                result["code"] = camhost_ctl.watch(watched, out, count=1)
            except CamhostError as e:
                result["error"] = str(e)
        t = threading.Thread(target=run)
        t.start()
        wait_until(lambda: out.getvalue(), what="the first panel")   # watch is waiting now
        link.publish(agent.base + "/ir_led/set", "OFF")               # answered with a state
        t.join(WAIT_S)
        assert result == {"code": 0} and len(out.getvalue().splitlines()) == 2
    finally:
        link.close()


def test_broker_urls(mosq_auth):
    b = BrokerURL("mqtt://user:p%40ss@example.net:1884")
    assert (b.host, b.port, b.username, b.password, b.tls) == ("example.net", 1884, "user",
                                                               "p@ss", False)
    b = BrokerURL("mqtts://h?ca=/x/ca.crt&cert=/x/c.crt&key=/x/c.key")
    assert (b.port, b.tls, b.ca, b.cert, b.key) == (8883, True, "/x/ca.crt", "/x/c.crt", "/x/c.key")
    assert BrokerURL("10.0.0.2").port == 1883
    with pytest.raises(CamhostError) as e:
        BrokerURL("http://h")
    assert e.value.exit_code == 2
    ok = "mqtt://viewer:v@127.0.0.1:%d" % mosq_auth.port
    assert cli.main(["ctl", "--broker", ok, "list"]) == 0
    bad = "mqtt://viewer:wrong@127.0.0.1:%d" % mosq_auth.port
    assert cli.main(["ctl", "--broker", bad, "list"]) == 4


@pytest.fixture
def mosq_auth(tmp_path):
    b = Mosquitto(tmp_path / "auth", users={"viewer": "v"}).start()
    yield b
    b.kill()


def test_forget_removes_a_retired_cameras_retained_messages(tmp_path, capsys):
    broker = Mosquitto(tmp_path / "broker").start()
    agent = Agent(tmp_path, broker, device_id="retired", sd_reset_on_start=False).start()
    try:
        w = Watcher(broker, ["homeassistant/+/camagent_retired/+/config"])
        w.wait_for(lambda t, p: True, "discovery")
        w.close()
        argv = ["ctl", "--broker", broker.url, "forget", "retired"]
        assert cli.main(argv) == 2            # online: it would publish them again
        assert "retired is online: stop its agent first" in capsys.readouterr().err
        agent.close()
        assert cli.main(argv) == 0
        out = capsys.readouterr().out
        assert out.startswith("retired: removed ") and int(out.split()[2]) > 10, out
        w = Watcher(broker, ["homeassistant/#", "camagent/retired/#"])
        try:
            import time
            time.sleep(1)
            assert [m[0] for m in w.messages if m[2]] == []
        finally:
            w.close()
        assert cli.main(argv) == 3            # nothing left to remove
    finally:
        agent.close()
        broker.kill()


def test_the_answer_is_the_commands_own_under_a_busy_automation(tmp_path, capsys):
    """Another client toggles a LED every 20 ms: each of its commands raises the agent's
    count and brings a state, but `ctl home` must only answer once homing has ended."""
    broker = Mosquitto(tmp_path / "broker").start()
    agent = Agent(tmp_path, broker, device_id="busy", sd_reset_on_start=False).start()
    stop = threading.Event()
    try:
        w = Watcher(broker, ["camagent/busy/availability"])
        w.wait_for(lambda t, p: p == b"online", "the agent online")

        def automation():
            for i in itertools.count():
                if stop.wait(0.02):
                    return
                w.publish("camagent/busy/led_red/set", b"ON" if i % 2 else b"OFF", qos=0)
        threading.Thread(target=automation, daemon=True).start()
        for _ in range(3):
            assert cli.main(["ctl", "--broker", broker.url, "--timeout", "60", "home"]) == 0
            out = capsys.readouterr().out
            assert out.startswith("busy: homed; parked at"), out
            # what the camera says right now, not what ctl believed
            link = Link(broker.url)
            try:
                link.subscribe("camagent/busy/state")
                state = json.loads(link.last["camagent/busy/state"])
            finally:
                link.close()
            for axis in ("pan", "tilt"):
                assert state[axis]["homed"] and not state[axis]["moving"], state[axis]
    finally:
        stop.set()
        w.close()
        agent.close()
        broker.kill()


@pytest.mark.parametrize("argv, message", [
    (["--timeout", "0", "list"], "give a timeout from 0 to 3600 s"),
    (["--timeout", "-1", "list"], "give a timeout from 0 to 3600 s"),
    (["led", "blue", "on"], "LED 'blue' is not one of green, red"),
    (["led", "green", "dim"], "MODE 'dim' is not one of ON, OFF, BLINK"),
    (["night", "dusk"], "MODE 'dusk' is not one of DAY, NIGHT, AUTO"),
    (["move", "north"], "DIRECTION 'north' is not one of LEFT, RIGHT, UP, DOWN"),
    (["preset", "save"], "preset save needs a NAME"),
    (["ir", "cut", "ON"], "ir cut: 'ON' is not one of DAY, NIGHT"),
])
def test_the_cli_refuses_bad_words_before_connecting(argv, message, capsys):
    # a closed port: nothing may be sent, so no connection is even tried
    with pytest.raises(SystemExit) if message.startswith(("give", "LED", "MODE", "DIRECTION")) \
            else _no_raise():
        code = cli.main(["ctl", "--broker", "mqtt://127.0.0.1:1"] + argv)
        assert code == 2
    err = capsys.readouterr().err
    assert message in err and "nothing is listening" not in err, err


class _no_raise:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_single_command_help_lists_the_accepted_values(capsys):
    for argv, words in ((["night"], "DAY, NIGHT, AUTO"), (["move"], "LEFT, RIGHT, UP, DOWN"),
                        (["led"], "ON, OFF, BLINK")):
        with pytest.raises(SystemExit):
            cli.main(["ctl"] + argv + ["--help"])
        assert words in capsys.readouterr().out
