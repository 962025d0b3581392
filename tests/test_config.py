"""Config loading: defaults, and one clear line with exit 2 for every kind of bad file."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from camagent import config
from sysfs_fake import FakeSysfs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def agent_cmd(path):
    return [sys.executable, "-m", "camagent", "-c", str(path)]


def agent_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(ROOT, "agent"),
                                         os.path.join(ROOT, "build", "vendor")])
    return env


def test_defaults_fill_everything(tmp_path):
    cfg = config.parse("{}")
    assert cfg["board"] == "imou-ranger-rc-4mp"
    assert cfg["gpio_root"] == "/sys/class/gpio"
    assert cfg["device_id"]                     # the hostname
    assert cfg["mqtt"]["port"] == 1883 and cfg["night"]["dark_below"] == 20


def test_overrides_reach_the_profile(tmp_path):
    cfg = config.parse(json.dumps({"board": "imou-ranger-rc-3mp",
                                   "overrides": {"pan": {"max_steps": 3000},
                                                 "pins": {"led_red": 80},
                                                 "ircut_swap": True}}))
    from camagent.boards import profile
    prof = profile(cfg["board"], cfg["overrides"])
    assert prof["pan"]["max_steps"] == 3000 and prof["pins"]["led_red"] == 80
    assert prof["ircut_swap"] is True and prof["soc"] == "SSC332"


@pytest.mark.parametrize("text,key,words", [
    ("{", None, "not valid JSON"),
    ("[]", "(top level)", "JSON object"),
    ('{"bord": "x"}', "bord", "unknown key"),
    ('{"board": "imou-ranger-rc-8mp"}', "board", "unknown board"),
    ('{"home_on_boot": "yes"}', "home_on_boot", "true or false"),
    ('{"led_blink_ms": 5}', "led_blink_ms", "from 100 to 10000"),
    ('{"night": {"dark_below": 50, "light_above": 40}}', "night", "hysteresis"),
    ('{"night": {"initial_mode": "DUSK"}}', "night.initial_mode", "one of"),
    ('{"mqtt": {"port": 70000}}', "mqtt.port", "from 1 to 65535"),
    ('{"mqtt": {"tls": {"ca": "x"}}}', "mqtt.tls.ca", "unknown key"),
    ('{"device_id": "cam/1"}', "device_id", "letters, digits"),
    ('{"device_id": "kam\u00e9ra"}', "device_id", "letters, digits"),
    ('{"overrides": {"pins": {"led_red": 14}}}', "overrides.pins", "assigned twice"),
    ('{"overrides": {"pan": {"max_steps": -5}}}', "overrides.pan.max_steps", "not negative"),
    ('{"overrides": {"tilt": {"park": 99999}}}', "overrides.tilt", "park between"),
    ('{"overrides": {"pins": {"pan": [1, 2, 3]}}}', "overrides.pins.pan", "list of 4"),
    ('{"overrides": {"motor": 1}}', "overrides.motor", "unknown key"),
    # waits the agent times: MicroPython's ticks_add() refuses ~537 s or more on the camera
    ('{"light_poll_s": 600}', "light_poll_s", "from 1 to 500 (seconds; the camera's "
     "microsecond timers reach at most ~537 s ahead)"),
    ('{"night": {"min_dwell_s": 501}}', "night.min_dwell_s", "from 0 to 500 (seconds;"),
    ('{"persist_min_interval_s": 86400}', "persist_min_interval_s", "from 0 to 500 (seconds;"),
])
def test_bad_config_names_file_and_key(text, key, words):
    with pytest.raises(config.ConfigError) as e:
        config.parse(text, "/etc/camagent.json")
    msg = str(e.value)
    assert msg.startswith("/etc/camagent.json: ")
    if key:
        assert msg.startswith("/etc/camagent.json: %s: " % key)
    assert words in msg and "\n" not in msg


def test_timer_settings_up_to_500_s_are_taken_and_run(tmp_path):
    """The longest waits the config allows work on the ticks clock (CPython's compat
    refuses ticks_add() deltas exactly as a 32-bit MicroPython does)."""
    from agent_rig import Rig
    light = tmp_path / "light"
    light.write_text("50")
    rig = Rig(tmp_path, sd_reset_on_start=False, light_file=str(light), light_poll_s=500,
              persist_min_interval_s=500,
              night={"initial_mode": "AUTO", "dark_below": 20, "light_above": 40,
                     "min_dwell_s": 500})
    try:
        ir = rig.cam.ir
        for level, cut in (("5", "NIGHT"), ("90", "DAY"), ("3", "NIGHT")):
            light.write_text(level)      # read within 500 s, acted on within 500 s more
            rig.loop.run_until(lambda: ir.cut == cut, limit_us=1001 * 1000000)
        rig.cam.pan.move_to(rig.cam.pan.steps + 10)
        rig.loop.run_until(lambda: not rig.cam.moving)
        rig.cam.pan.move_to(rig.cam.pan.steps + 10)
        rig.loop.run_until(lambda: not rig.cam.moving)
        rig.loop.run_until(lambda: rig.cam.positions.due is None, limit_us=501 * 1000000)
    finally:
        rig.close()


@pytest.mark.parametrize("content", [None, "{", '{"board": 7}'])
def test_agent_exits_2_with_one_line(tmp_path, content):
    path = tmp_path / "camagent.json"
    if content is not None:
        path.write_text(content)
    p = subprocess.run(agent_cmd(path), env=agent_env(), capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "Traceback" not in p.stderr


def test_agent_runs_without_mqtt_and_stops_cleanly(tmp_path, request):
    fs = FakeSysfs(tmp_path / "gpio")
    try:
        path = tmp_path / "camagent.json"
        path.write_text(json.dumps({"gpio_root": fs.root, "state_dir": str(tmp_path / "st"),
                                    "home_on_boot": True, "sd_reset_on_start": True}))
        p = subprocess.Popen(agent_cmd(path), env=agent_env(), stderr=subprocess.PIPE, text=True)
        request.addfinalizer(p.kill)   # never leave an agent behind, even on failure
        deadline = time.time() + 10
        while time.time() < deadline and 1 not in (fs.value(14), fs.value(15)):
            time.sleep(0.01)       # homing has energised the pan coils
        assert fs.exported(14)
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0, p.stderr.read()
        fs.sync()
        for pin in (14, 15, 16, 17, 31, 36, 37, 38, 76, 77):
            assert not fs.exported(pin)    # released, after being driven low
        assert fs.exported(46) and fs.direction(46) == "high"   # wifi power kept on
        doc = json.load(open(tmp_path / "st" / "position.json"))
        assert doc["pan"]["homed"] is False            # homing was interrupted
    finally:
        fs.close()
