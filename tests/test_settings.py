"""Settings set over MQTT survive a restart: state_dir/settings.json, written sparingly.

In-process on the camera rig (virtual time, recorded GPIO writes), and the same
logic inside the MicroPython VM. The end-to-end restart over MQTT is in
test_home_assistant.py.
"""
import json
import os

import pytest

from agent_rig import Rig
from mpvm import MicroVM

NIGHT = {"initial_mode": "DAY", "dark_below": 20, "light_above": 40, "min_dwell_s": 0}


def make_rig(tmp_path, saved=None, interval=30):
    rig = Rig(tmp_path, start=False, sd_reset_on_start=False, night=NIGHT,
              persist_min_interval_s=interval)
    if saved is not None:
        with open(os.path.join(rig.cfg["state_dir"], "settings.json"), "w") as f:
            f.write(saved if isinstance(saved, str) else json.dumps(saved))
    rig.restart()
    rig.loop.run_for(1000000)    # the IR-cut pulse of the start
    return rig


def settings_file(rig):
    with open(os.path.join(rig.cfg["state_dir"], "settings.json")) as f:
        return json.load(f)


def state(rig):
    doc = rig.cam.hardware_state()
    return {k: doc[k] for k in ("night_mode", "ir_cut", "ir_led", "led_green", "led_red")}


@pytest.fixture
def rigs():
    made = []
    yield made
    for r in made:
        r.close()


def test_saved_settings_are_restored(tmp_path, rigs):
    rig = make_rig(tmp_path, {"night_mode": "NIGHT", "ir_led": "OFF", "led_green": "BLINK",
                              "led_red": "ON"})
    rigs.append(rig)
    assert state(rig) == {"night_mode": "NIGHT", "ir_cut": "NIGHT", "ir_led": "OFF",
                          "led_green": "BLINK", "led_red": "ON"}
    assert rig.cam.problems() == []
    # the pins follow: IR LED off although NIGHT, red on, green toggling
    since = len(rig.rec.writes)
    rig.loop.run_for(3000000)
    green = [v for p, v, t in rig.writes_to(rig.pins("led_green"), since)]
    assert 0 in green and 1 in green
    assert rig.fs.value(rig.pins("led_red")[0]) == 1 and rig.fs.value(rig.pins("ir_led")[0]) == 0
    assert rig.cam.settings.writes == 0      # restoring is not a change


def test_defaults_without_a_file_and_no_write_for_them(tmp_path, rigs):
    rig = make_rig(tmp_path)
    rigs.append(rig)
    assert state(rig)["night_mode"] == "DAY" and state(rig)["led_green"] == "OFF"
    rig.loop.run_for(60000000)
    assert rig.cam.settings.writes == 0
    assert not os.path.exists(os.path.join(rig.cfg["state_dir"], "settings.json"))


def test_writes_are_spared(tmp_path, rigs):
    rig = make_rig(tmp_path, interval=30)
    rigs.append(rig)
    s = rig.cam.settings
    rig.cam.leds["green"].set("BLINK")
    rig.loop.run_for(1000)
    assert s.writes == 1 and settings_file(rig)["led_green"] == "BLINK"   # the first at once
    rig.cam.leds["red"].set("ON")
    rig.cam.leds["red"].set("OFF")
    rig.cam.leds["red"].set("ON")
    rig.loop.run_for(10000000)
    assert s.writes == 1                      # inside the gap: held back
    rig.loop.run_for(21000000)
    assert s.writes == 2 and settings_file(rig)["led_red"] == "ON"       # three changes, one write
    rig.cam.leds["red"].set("ON")             # no change
    rig.loop.run_for(60000000)
    assert s.writes == 2


def test_auto_switching_writes_nothing(tmp_path, rigs):
    rig = make_rig(tmp_path, interval=0)
    rigs.append(rig)
    rig.cam.ir.set_mode("AUTO")
    rig.loop.run_for(1000000)
    assert settings_file(rig) == {"night_mode": "AUTO", "led_green": "OFF", "led_red": "OFF"}
    writes = rig.cam.settings.writes
    for level in (5, 90, 5, 90):
        rig.cam.ir.set_light(level)
        rig.loop.run_for(1000000)
    assert rig.cam.ir.cut == "DAY" and rig.cam.settings.writes == writes


def test_a_change_inside_the_gap_is_flushed_at_exit(tmp_path, rigs):
    rig = make_rig(tmp_path, interval=300)
    rigs.append(rig)
    rig.cam.leds["green"].set("ON")
    rig.loop.run_for(1000)
    rig.cam.ir.set_mode("NIGHT")
    rig.cam.ir.set_led(False)
    rig.loop.run_for(1000000)
    assert settings_file(rig)["night_mode"] == "DAY"     # held back by the gap
    rig.restart()                                         # close() flushes
    rig.loop.run_for(1000000)
    assert state(rig) == {"night_mode": "NIGHT", "ir_cut": "NIGHT", "ir_led": "OFF",
                          "led_green": "ON", "led_red": "OFF"}


@pytest.mark.parametrize("text, why", [
    ('{"led_green": "BLI', "not JSON ("),
    ("", "not JSON ("),
    ("[1, 2]", "not a JSON object"),
    ('{"led_green": "PURPLE"}', "led_green is 'PURPLE'; accepted: ON, OFF, BLINK"),
    ('{"night_mode": true}', "night_mode is True"),
    ('{"ir_led": [1, 2]}', "ir_led is [1, 2]"),
    ('{"led_red": "%s"}' % ("x" * 200), "led_red is '...'"),
])
def test_a_damaged_file_gives_defaults_and_a_problem(tmp_path, rigs, text, why):
    rig = make_rig(tmp_path, text)
    rigs.append(rig)
    path = os.path.join(rig.cfg["state_dir"], "settings.json")
    assert state(rig)["night_mode"] == "DAY" and state(rig)["led_green"] == "OFF"
    [problem] = rig.cam.problems()
    assert problem.startswith("%s is damaged (%s" % (path, why))
    assert problem.endswith("); using the default settings until one is set")
    with open(path) as f:
        assert f.read() == text               # left for inspection until a setting changes
    rig.cam.leds["green"].set("BLINK")
    rig.loop.run_for(1000)
    assert rig.cam.problems() == [] and settings_file(rig)["led_green"] == "BLINK"


def test_a_failed_write_is_a_problem_not_a_crash(tmp_path, rigs):
    rig = make_rig(tmp_path, interval=0)
    rigs.append(rig)
    path = os.path.join(rig.cfg["state_dir"], "settings.json")
    os.mkdir(path)                             # the rename onto it fails
    rig.cam.leds["red"].set("ON")
    rig.loop.run_until_idle(limit_us=10000000)  # and it does not retry in a busy loop
    assert rig.cam.leds["red"].mode == "ON"
    [problem] = rig.cam.problems()
    assert problem.startswith("cannot save settings to %s" % path)
    os.rmdir(path)
    rig.cam.leds["red"].set("OFF")
    rig.loop.run_for(1000)
    assert rig.cam.problems() == [] and settings_file(rig)["led_red"] == "OFF"


def test_settings_in_the_vm():
    doc = {"gpio_root": "host", "state_dir": "/input/state", "device_id": "vmcam",
           "sd_reset_on_start": False, "persist_min_interval_s": 0, "night": NIGHT}
    files = {"state/settings.json": json.dumps({"night_mode": "NIGHT", "led_green": "BLINK",
                                                "ir_led": "OFF", "led_red": "ON"})}
    with MicroVM(files=files) as vm:
        vm.use_fake_clock()
        vm.put("doc", doc)
        vm.run("import json\n"
               "from camagent import config\n"
               "from camagent.camera import Camera\n"
               "from camagent.loop import Loop\n"
               "loop = Loop()\n"
               "cam = Camera(config.parse(json.dumps(doc)), gpio=HostGpio(), loop=loop)\n"
               "cam.start()\n"
               "clock.run_loop(loop, 1000000)\n"
               "def st():\n"
               "    d = cam.hardware_state()\n"
               "    return [d[k] for k in ('night_mode', 'ir_cut', 'ir_led', 'led_green', "
               "'led_red')] + [cam.settings.writes, cam.problems()]")
        assert vm.eval("st()") == ["NIGHT", "NIGHT", "OFF", "BLINK", "ON", 0, []]
        vm.run("cam.leds['green'].set('OFF')\ncam.ir.set_mode('AUTO')\n"
               "clock.run_loop(loop, 1000000)")
        assert vm.eval("st()")[3:6] == ["OFF", "ON", 1]
        vm.run("f = open('/input/state/settings.json')\nsaved = json.load(f)\nf.close()")
        assert vm.eval("saved") == {"night_mode": "AUTO", "led_green": "OFF", "led_red": "ON"}
        vm.run("f = open('/input/state/settings.json', 'w')\nf.write('{\"led_red\": 3')\n"
               "f.close()\ncam.close()\n"
               "cam = Camera(config.parse(json.dumps(doc)), gpio=HostGpio(), loop=Loop())\n"
               "cam.start()")
        [problem] = vm.eval("st()")[-1]
        assert "settings.json is damaged (not JSON (" in problem
        assert vm.eval("st()")[:5] == ["DAY", "DAY", "OFF", "OFF", "OFF"]


def test_a_device_out_of_service_is_not_restored_and_the_others_are(tmp_path):
    rig = Rig(tmp_path, start=False, sd_reset_on_start=False, night=NIGHT)
    try:
        with open(os.path.join(rig.cfg["state_dir"], "settings.json"), "w") as f:
            json.dump({"night_mode": "NIGHT", "ir_led": "OFF", "led_green": "BLINK",
                       "led_red": "ON"}, f)
        rig.cam.close()
        rig.fs.sync()                                  # every line unexported
        rig.fs.break_line(rig.pins("led_green")[0])   # its first write fails
        cam = rig.build()
        rig.loop.run_for(1000000)
        assert sorted(cam.failed) == ["led_green"]
        assert state(rig) == {"night_mode": "NIGHT", "ir_cut": "NIGHT", "ir_led": "OFF",
                              "led_green": "OFF", "led_red": "ON"}
        assert cam.problems() == [cam.failed["led_green"]]   # the settings file is fine
    finally:
        rig.close()


def test_a_fault_after_the_start_does_not_overwrite_the_saved_setting(tmp_path, rigs):
    rig = make_rig(tmp_path, {"led_green": "BLINK", "led_red": "ON"}, interval=0)
    rigs.append(rig)
    rig.rec.fail_pins.add(rig.pins("led_green")[0])    # the next toggle fails
    rig.cam.run(lambda: rig.loop.run_for(3000000))
    assert "led_green" in rig.cam.failed and rig.cam.leds["green"].mode == "OFF"
    rig.cam.leds["red"].set("OFF")                      # a real change is still saved
    rig.loop.run_for(1000)
    rig.cam.close()
    assert settings_file(rig) == {"night_mode": "DAY", "ir_cut": "DAY", "ir_led": "OFF",
                                  "led_green": "BLINK", "led_red": "OFF"}
