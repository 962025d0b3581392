"""Config loading: defaults, and one clear line with exit 2 for every kind of bad file."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from broker_fixtures import Agent, Watcher, mosquitto, stop_leftovers  # noqa: F401 (fixtures)
from camagent import config
from sysfs_fake import FakeSysfs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


MICROPYTHON = os.environ.get("MICROPYTHON")


def agent_cmd(path, python=sys.executable):
    return [python, "-m", "camagent", "-c", str(path)]


def agent_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(ROOT, "agent"),
                                         os.path.join(ROOT, "build", "vendor")])
    env["MICROPYPATH"] = env["PYTHONPATH"].replace(os.pathsep, ":")
    return env


def interpreters():
    """CPython, and the camera's interpreter when MICROPYTHON names a 1.22 unix binary."""
    found = [pytest.param(sys.executable, id="cpython")]
    if MICROPYTHON:
        found.append(pytest.param(MICROPYTHON, id="micropython"))
    return found


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


def short_id(value):
    return value if not isinstance(value, str) or len(value) < 60 else value[:50] + "..."


BAD_TEXTS = [
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
    ('{"overrides": {"pan": {"max_steps": -5}}}', "overrides.pan.max_steps",
     "from 0 to 16777216"),
    ('{"overrides": {"pan": {"max_steps": 1.5}}}', "overrides.pan.max_steps", "whole number"),
    ('{"overrides": {"tilt": {"speed": 900}}}', "overrides.tilt",
     "needs start_speed <= speed <= max_speed"),
    ('{"overrides": {"tilt": {"park": 5000}}}', "overrides.tilt", "park between"),
    ('{"overrides": {"pins": {"pan": [1, 2, 3]}}}', "overrides.pins.pan", "list of 4"),
    ('{"overrides": {"pins": {"tilt": [1, 2, 3, 2000]}}}', "overrides.pins.tilt[3]",
     "from 0 to 1023"),
    ('{"overrides": {"pins": {"led_red": true}}}', "overrides.pins.led_red", "whole number"),
    ('{"overrides": {"ircut_pulse_ms": 5}}', "overrides.ircut_pulse_ms", "from 20 to 1000"),
    ('{"night": 5}', "night", "must be a JSON object"),
    ('{"night": {"initial_mode": ""}}', "night.initial_mode", "one of DAY, NIGHT, AUTO"),
    ('{"overrides": {"motor": 1}}', "overrides.motor", "unknown key"),
    # waits the agent times: MicroPython's ticks_add() refuses ~537 s or more on the camera
    ('{"light_poll_s": 600}', "light_poll_s", "from 1 to 500 (seconds; the camera's "
     "microsecond timers reach at most ~537 s ahead)"),
    ('{"night": {"min_dwell_s": 501}}', "night.min_dwell_s", "from 0 to 500 (seconds;"),
    ('{"persist_min_interval_s": 86400}', "persist_min_interval_s", "from 0 to 500 (seconds;"),
    # axis settings bounded to what the motors and the step loop can do (issue 9.8)
    ('{"overrides": {"pan": {"accel": 1}}}', "overrides.pan.accel", "from 100 to 10000000"),
    ('{"overrides": {"pan": {"accel": 100000000}}}', "overrides.pan.accel",
     "from 100 to 10000000"),
    ('{"overrides": {"pan": {"max_speed": 2000000}}}', "overrides.pan.max_speed",
     "from 1 to 10000"),
    ('{"overrides": {"tilt": {"start_speed": 0}}}', "overrides.tilt.start_speed",
     "from 1 to 10000"),
    ('{"overrides": {"tilt": {"home_speed": 50000}}}', "overrides.tilt.home_speed",
     "from 1 to 10000"),
    ('{"overrides": {"pan": {"max_steps": 16777217}}}', "overrides.pan.max_steps",
     "from 0 to 16777216"),
    ('{"overrides": {"pan": {"home_margin": 100000000}}}', "overrides.pan.home_margin",
     "from 0 to 16777216"),
    ('{"overrides": {"pan": {"steps_per_degree": 1e999}}}', "overrides.pan.steps_per_degree",
     "from 1 to 1000"),
    ('{"overrides": {"pan": {"steps_per_degree": 0.01}}}', "overrides.pan.steps_per_degree",
     "from 1 to 1000"),
    # each in range, together a 4800-entry ramp table: the table is bounded too
    ('{"overrides": {"pan": {"accel": 100}}}', "overrides.pan.accel",
     "must be at least 480 with start_speed 200 and top speed 1000 (the ramp would take "
     "4800 half-steps; at most 1000)"),
    ('{"overrides": {"tilt": {"accel": 1500, "max_speed": 8000, "home_speed": 10}}}',
     "overrides.tilt.accel", "must be at least 31980 with start_speed 200 and top speed 8000"),
    # topics (issue 9.9)
    ('{"mqtt": {"discovery_prefix": "ha/#"}}', "mqtt.discovery_prefix", "no MQTT wildcards"),
    ('{"mqtt": {"discovery_prefix": "ha/+"}}', "mqtt.discovery_prefix", "no MQTT wildcards"),
    ('{"mqtt": {"prefix": "cam#"}}', "mqtt.prefix", "no MQTT wildcards"),
    ('{"mqtt": {"prefix": "/cams"}}', "mqtt.prefix", "no empty topic levels"),
    ('{"mqtt": {"discovery_prefix": "ha/"}}', "mqtt.discovery_prefix", "no empty topic levels"),
    ('{"mqtt": {"prefix": "home//cams"}}', "mqtt.prefix", "no empty topic levels"),
    ('{"mqtt": {"prefix": "cams\\u0000x"}}', "mqtt.prefix", "no control characters"),
    ('{"mqtt": {"discovery_prefix": "ha\\nx"}}', "mqtt.discovery_prefix",
     "no control characters"),
    ('{"mqtt": {"prefix": "$SYS/cams"}}', "mqtt.prefix", "the broker's own"),
    ('{"mqtt": {"prefix": ""}}', "mqtt.prefix", "must not be empty"),
    ('{"mqtt": {"discovery_prefix": "%s"}}' % ("h" * 129), "mqtt.discovery_prefix",
     "129 characters; at most 128"),
    ('{"device_id": "%s"}' % ("c" * 70000), "device_id", "70000 characters; at most 64"),
    ('{"device_id": "%s"}' % ("c" * 65), "device_id", "65 characters; at most 64"),
    # nesting: CPython's parser gives up with RecursionError
    ("[" * 10000 + "]" * 10000, None, "not valid JSON (nested too deeply"),
]


@pytest.mark.parametrize("text,key,words", BAD_TEXTS, ids=short_id)
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


def test_values_at_the_limits_are_taken():
    cfg = config.parse(json.dumps({
        "device_id": "c" * 64, "mqtt": {"prefix": "p" * 128, "discovery_prefix": "home/ha"},
        "overrides": {"pan": {"accel": 480, "max_steps": 1 << 24, "home_margin": 1 << 24},
                      "tilt": {"max_speed": 10000, "speed": 1, "start_speed": 1,
                               "accel": 10000000}}}))
    assert len(cfg["device_id"]) == 64 and cfg["mqtt"]["discovery_prefix"] == "home/ha"


def test_the_ramp_table_stays_within_its_bound_for_accepted_settings():
    """The stepper builds its ramp from these; the config bound must hold for it."""
    from camagent.stepper import ramp_levels
    assert ramp_levels(200, 1000, 480) <= config.MAX_RAMP_STEPS
    assert ramp_levels(200, 8000, 31980) <= config.MAX_RAMP_STEPS
    assert ramp_levels(1, 10000, 50000) <= config.MAX_RAMP_STEPS
    config.parse('{"overrides": {"tilt": {"start_speed": 1, "speed": 1, '
                 '"accel": 50000, "max_speed": 10000}}}')
    with pytest.raises(config.ConfigError):
        config.parse('{"overrides": {"tilt": {"start_speed": 1, "speed": 1, '
                     '"accel": 49999, "max_speed": 10000}}}')


# Files the agent must refuse with one line and exit 2, never a traceback (issue 9.7):
# (id, bytes of the file, words of the message)
BAD_FILES = [
    ("invalid_utf8", b'{"device_id": "cam\xff\xfe"}', "not valid JSON (invalid UTF-8)"),
    ("nested", b"[" * 8000 + b"]" * 8000, "not valid JSON (nested too deeply"),
    ("nested_object", b'{"mqtt": ' * 1500 + b"1" + b"}" * 1500, "not valid JSON (nested"),
    ("too_big", None, "too big: 41943042 bytes, more than the 16384 accepted"),
]


def write_bad_file(path, content):
    if content is None:   # 40 MB: a valid JSON object padded with spaces
        with open(path, "wb") as f:
            f.write(b"{")
            f.write(b" " * (40 << 20))
            f.write(b"}")
    else:
        path.write_bytes(content)


@pytest.mark.parametrize("python", interpreters())
@pytest.mark.parametrize("content,words", [c[1:] for c in BAD_FILES],
                         ids=[c[0] for c in BAD_FILES])
def test_bad_config_files_exit_2_with_one_line(tmp_path, content, words, python):
    """On MicroPython (the camera's 1 MB heap) the 40 MB file ended in MemoryError and the
    bad UTF-8 in UnicodeError tracebacks; on CPython the nesting in RecursionError."""
    if python == MICROPYTHON and content and content.startswith((b"[[", b'{"mqtt')):
        words = ""   # MicroPython's parser takes this depth; the structure is refused
    path = tmp_path / "camagent.json"
    write_bad_file(path, content)
    p = subprocess.run(agent_cmd(path, python), env=agent_env(), capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert lines[0].startswith("camagent: %s: " % path) and words in lines[0], lines


def state_dir_cases(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    return [(str(blocker / "camagent"), "not a directory"),     # under a file: ENOTDIR
            (str(blocker), "not a directory"),                  # the file itself
            # sysfs: EPERM for root, EACCES (its mode) for anyone else
            ("/sys/camagent-test-state",
             "operation not permitted" if os.geteuid() == 0 else "permission denied")]


@pytest.mark.parametrize("python", interpreters())
def test_a_state_dir_that_cannot_be_created_is_named_with_the_reason(tmp_path, python):
    """Was "cannot set up the hardware: 20"; MicroPython's errno.errorcode has no ENOTDIR."""
    for state_dir, why in state_dir_cases(tmp_path):
        path = tmp_path / "camagent.json"
        path.write_text(json.dumps({"state_dir": state_dir}))
        p = subprocess.run(agent_cmd(path, python), env=agent_env(), capture_output=True,
                           text=True, timeout=30)
        assert p.returncode == 2, p.stderr
        assert p.stderr.strip() == "camagent: %s: state_dir: cannot create %s (%s)" % (
            path, state_dir, why), p.stderr


def test_reason_words_cover_what_micropython_errno_lacks():
    from camagent.compat import reason
    assert reason(OSError(20, "x")) == "not a directory"
    assert reason(OSError(30, "x")) == "read-only file system"
    assert reason(OSError(28)) == "no space left on device"
    assert reason(OSError(13)) == "permission denied"
    assert reason(OSError(1234)) == "error 1234"


@pytest.mark.skipif(not MICROPYTHON, reason="MICROPYTHON not set")
def test_nesting_that_exhausts_a_small_heap_is_one_line_on_micropython(tmp_path):
    """MicroPython's json builds nesting on the heap: on a 512 KB heap 8000 levels run
    out (MemoryError), which must still be the one-line config error."""
    path = tmp_path / "camagent.json"
    path.write_bytes(b"[" * 8000 + b"]" * 8000)
    p = subprocess.run([MICROPYTHON, "-X", "heapsize=512k", "-m", "camagent", "-c", str(path)],
                       env=agent_env(), capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip() == ("camagent: %s: not valid JSON (nested too deeply for the "
                                "memory left)" % path), p.stderr


@pytest.mark.parametrize("python", interpreters())
def test_a_5_mb_presets_file_is_a_problem_not_a_crash(tmp_path, mosquitto, python):
    """MicroPython read it whole: MemoryError at every start, a crash loop until the file
    was removed. Now: a sentence in problems, no presets, and the agent works."""
    agent = Agent(tmp_path / "agent", mosquitto, micropython=None if python == sys.executable
                  else python, sd_reset_on_start=False)
    os.makedirs(agent.sim.state_dir, exist_ok=True)
    presets = os.path.join(agent.sim.state_dir, "presets.json")
    entry = '"p%06d": {"pan": 1, "tilt": 2}'
    count = (5 << 20) // len(entry % 0)
    with open(presets, "w") as f:
        f.write('{"presets": {%s}}' % ", ".join(entry % i for i in range(count)))
    size = os.path.getsize(presets)
    w = Watcher(mosquitto, [agent.base + "/state"])
    try:
        agent.start()
        i, t, p = w.wait_for(lambda t, p: True, "the first state (log: %s)" % agent.log(),
                             timeout=30)
        state = json.loads(p)
        assert state["presets"] == {} and state["problems"] == [
            "%s is damaged (too big: %d bytes, more than the 4096 accepted); starting with "
            "no presets"
            % (presets, size)], state["problems"]
        assert agent.alive() and "Traceback" not in agent.log(), agent.log()
        assert os.path.getsize(presets) == size        # kept for the user to look at
    finally:
        w.close()
        agent.close()


# The pure checks again inside MicroPython (tests/mpvm.py): the same one-line messages
# from the .mpy files the camera runs. (Nesting is MicroPython's heap's business: above.)
VM_TEXTS = [t for t in BAD_TEXTS if t[1] and (t[1].startswith(("overrides.pan", "overrides.tilt",
                                                               "mqtt.prefix", "mqtt.disc"))
                                            or t[1] == "device_id")]


@pytest.mark.micropython
def test_bad_values_give_the_same_errors_in_micropython():
    from mpvm import MicroVM
    with MicroVM() as vm:
        vm.put("texts", [t[0] for t in VM_TEXTS])
        vm.run("""
from camagent import config
from camagent.compat import reason
messages = []
for text in texts:
    try:
        config.parse(text, "/etc/camagent.json")
        messages.append(None)
    except config.ConfigError as e:
        messages.append(str(e))
reasons = [reason(OSError(n)) for n in (20, 30, 28, 13)]
""")
        messages = vm.eval("messages")
        reasons = vm.eval("reasons")
    for (text, key, words), msg in zip(VM_TEXTS, messages):
        assert msg and msg.startswith("/etc/camagent.json: %s: " % key) and words in msg, (
            key, msg)
    assert reasons == ["not a directory", "read-only file system", "no space left on device",
                       "permission denied"]


@pytest.mark.micropython
def test_damaged_state_files_are_reasons_not_exceptions_in_micropython():
    # (invalid UTF-8 is left out: this VM's build does not check it; the real 1.22 unix
    # binary does, see the MICROPYTHON config file tests above)
    from mpvm import MicroVM
    with MicroVM() as vm:
        vm.run("""
import os
from camagent import persist
from camagent.presets import Presets
try:
    os.mkdir("/input/st")
except OSError:
    pass
cases = {"big": b'{"presets": {}}' + b" " * 5000,
         "truncated": b'{"presets": {"a": ', "deep": b"[" * 2000 + b"]" * 2000}
found = {}
for name, data in cases.items():
    with open("/input/st/" + name, "wb") as f:
        f.write(data)
    found[name] = Presets("/input/st/" + name).load_error
found["missing"] = Presets("/input/st/none").load_error
found["dir"] = Presets("/input/st").load_error
""")
        found = vm.eval("found")
    tail = "; starting with no presets"
    assert found["missing"] is None
    assert found["big"] == "/input/st/big is damaged (too big: 5015 bytes, more than the 4096 " \
        "accepted)" + tail
    assert found["truncated"].startswith("/input/st/truncated is damaged (not JSON (")
    assert found["deep"] == "/input/st/deep is damaged (not a presets file)" + tail
    assert found["dir"] == "/input/st is damaged (cannot read it: is a directory)" + tail


@pytest.mark.parametrize("python", interpreters())
def test_a_missing_tls_file_is_a_config_error_naming_the_key(tmp_path, python):
    """It was a failed open() at every connect attempt, retried with backoff forever."""
    present = tmp_path / "ca.pem"
    present.write_text("not checked here: the TLS handshake judges the contents\n")
    for key, value, why in (("ca_file", str(tmp_path / "none.pem"), "no such file or directory"),
                            ("cert_file", str(tmp_path), "not a regular file")):
        path = tmp_path / "camagent.json"
        path.write_text(json.dumps({"state_dir": str(tmp_path / "st"), "mqtt": {
            "host": "127.0.0.1", "tls": {"enabled": True, "ca_file": str(present),
                                         key: value}}}))
        p = subprocess.run(agent_cmd(path, python), env=agent_env(), capture_output=True,
                           text=True, timeout=30)
        assert p.returncode == 2, p.stderr
        assert p.stderr.strip() == "camagent: %s: mqtt.tls.%s: cannot read %s (%s)" % (
            path, key, value, why), p.stderr
