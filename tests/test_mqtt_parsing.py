"""The command table, presets, status and discovery, in-process on the camera rig.

No broker here: commands go straight into camagent.commands.Commands, motion runs
on the rig's virtual loop, and every GPIO write is recorded.
"""
import json
import os

import pytest

import ha_schema
from agent_rig import Rig
from camagent import commands, presets, discovery, status
from camagent.commands import CommandError, Commands, error_document
from camagent.mqtt import heartbeat_s
from camagent.presets import Presets


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path, sd_reset_on_start=False,
            night={"initial_mode": "DAY", "dark_below": 20, "light_above": 40, "min_dwell_s": 0})
    r.loop.run_until_idle()
    yield r
    r.close()


@pytest.fixture
def cmd(rig, tmp_path):
    return Commands(rig.cam, Presets(str(tmp_path / "state" / "presets.json")), 10.0)


def run(rig, cmd, suffix, payload):
    cmd.handle(suffix, payload)
    rig.loop.run_until_idle()


def rejected(cmd, suffix, payload):
    with pytest.raises(CommandError) as e:
        cmd.handle(suffix, payload)
    return str(e.value)


# --- accepted forms -------------------------------------------------------------------
def test_absolute_and_relative_moves(rig, cmd):
    run(rig, cmd, "pan/set", b"90")
    assert rig.cam.pan.position_deg() == 90.0
    run(rig, cmd, "pan/step", b"-12.5")
    assert rig.cam.pan.position_deg() == 77.5
    run(rig, cmd, "tilt/set", b" 30 \n")         # surrounding blanks are fine
    run(rig, cmd, "tilt/step", b"+5")
    assert rig.cam.tilt.position_deg() == 35.0
    run(rig, cmd, "ptz/set", b'{"pan": 200, "tilt": 10.5, "speed": 40}')
    assert (rig.cam.pan.position_deg(), rig.cam.tilt.position_deg()) == (200.0, 10.5)
    assert cmd.accepted == 5 and cmd.rejected == 0


def test_relative_steps_stop_at_the_soft_limit(rig, cmd):
    run(rig, cmd, "tilt/set", b"85")
    run(rig, cmd, "tilt/step", b"20")
    assert rig.cam.tilt.position_deg() == rig.cam.tilt.max_deg


def test_move_directions_use_the_configured_increment(rig, cmd):
    run(rig, cmd, "ptz/set", b'{"pan": 100, "tilt": 40}')
    for word, pan, tilt in ((b"LEFT", 90, 40), (b"right", 100, 40), (b"Up", 100, 50),
                            (b"down", 100, 40)):
        run(rig, cmd, "ptz/move", word)
        assert (rig.cam.pan.position_deg(), rig.cam.tilt.position_deg()) == (pan, tilt)


def test_stop_releases_the_coils_mid_move(rig, cmd):
    cmd.handle("pan/set", b"0")
    rig.loop.run_for(200000)
    assert rig.cam.pan.moving
    run(rig, cmd, "ptz/stop", b"PRESS")
    assert not rig.cam.pan.moving
    assert all(line.value == 0 for line in rig.cam.pan._lines)
    assert 0 < rig.cam.pan.position_deg() < 177.5


def test_home_then_commands_while_homing_are_busy(rig, cmd):
    cmd.handle("ptz/home", b"")
    rig.loop.run_for(100000)
    message = rejected(cmd, "pan/set", b"10")
    assert "pan is homing" in message and "ptz/stop" in message
    rig.loop.run_until_idle()
    assert rig.cam.pan.homed and rig.cam.tilt.homed


def test_words_are_case_insensitive(rig, cmd):
    run(rig, cmd, "ir_led/set", b"on")
    assert rig.cam.ir.led is True
    run(rig, cmd, "ir_cut/set", b"Night")
    assert rig.cam.ir.cut == "NIGHT"
    run(rig, cmd, "night_mode/set", b"dAy")
    assert (rig.cam.ir.mode, rig.cam.ir.cut, rig.cam.ir.led) == ("DAY", "DAY", False)
    run(rig, cmd, "led_red/set", b"ON")
    cmd.handle("led_green/set", b"blink")       # blinking never goes idle
    assert (rig.cam.leds["green"].mode, rig.cam.leds["red"].mode) == ("BLINK", "ON")


def test_light_level_feeds_auto(rig, cmd):
    run(rig, cmd, "night_mode/set", b"AUTO")
    run(rig, cmd, "light/set", b"5")
    assert (rig.cam.ir.cut, rig.cam.ir.led) == ("NIGHT", True)
    run(rig, cmd, "light/set", b"80.5")
    assert (rig.cam.ir.cut, rig.cam.ir.light) == ("DAY", 80.5)


def test_sd_reset_pulses_the_reader_line(rig, cmd):
    start = len(rig.rec.writes)
    run(rig, cmd, "sd/reset", b"anything at all")
    assert [v for p, v, t in rig.writes_to(rig.pins("sd_reset"), start)] == [1, 0]


# --- rejections -----------------------------------------------------------------------
# (topic suffix, payload, part of the error sentence); also run in the MicroPython VM
REJECTIONS = [
    ("pan/set", b"", "must be a decimal number"),
    ("pan/set", b"abc", "must be a decimal number"),
    ("pan/set", b"nan", "must be a decimal number"),
    ("pan/set", b"inf", "must be a decimal number"),
    ("pan/set", b"1e999", "must be a finite number"),
    ("pan/set", b"1_000", "must be a decimal number"),
    ("pan/set", "\uff19\uff10".encode(), "plain ASCII"),           # fullwidth "90"
    ("pan/set", "\u0669\u0660".encode(), "plain ASCII"),           # Arabic-Indic "90"
    ("pan/set", b"400", "out of range; 0.0 to 355.1 degrees accepted"),
    ("pan/set", b"-0.5", "out of range"),
    ("tilt/set", b"91", "0.0 to 90.0 degrees accepted"),
    ("tilt/step", b"1000", "tilt step 1000.0 is out of range; -90.0 to 90.0 degrees accepted"),
    ("pan/step", b"1 2", "must be a decimal number"),
    ("ptz/set", b"90", "JSON object"),
    ("ptz/set", b"[1, 2]", "JSON object"),
    ("ptz/set", b"{}", "needs pan or tilt"),
    ("ptz/set", b'{"speed": 10}', "needs pan or tilt"),
    ("ptz/set", b'{"pan": "90"}', "pan must be a number"),
    ("ptz/set", b'{"pan": true}', "pan must be a number"),
    # CPython's json reads NaN and the finite check refuses it; MicroPython's json
    # refuses the non-standard token itself: the sentences differ, both name ptz/set
    ("ptz/set", b'{"pan": NaN}', "ptz/set"),
    ("ptz/set", b'{"pan": 1e999}', "pan must be a finite number"),
    ("ptz/set", b'{"pan": 10, "zoom": 2}', "unknown key 'zoom'"),
    ("ptz/set", b'{"pan": 10, "speed": 0}', "speed 0.0 is out of range"),
    ("ptz/set", b'{"pan": 10, "speed": 5000}', "degrees/s accepted"),
    ("ptz/set", b'{"pan": 10, "tilt": 500}', "tilt position 500.0 is out of range"),
    ("ptz/move", b"SIDEWAYS", "LEFT or RIGHT or UP or DOWN"),
    ("ir_led/set", b"1", "ON or OFF"),
    ("ir_led/set", b"ON;reboot", "ON or OFF"),
    ("ir_cut/set", b"$(reboot)", "DAY or NIGHT"),
    ("night_mode/set", b"DUSK", "DAY or NIGHT or AUTO"),
    ("led_red/set", b"FLASH", "ON or OFF or BLINK"),
    ("light/set", b"101", "light level must be a number from 0 to 100"),
    ("light/set", b"-1", "light level must be a number from 0 to 100"),
    ("preset/save", b"", "a preset name is needed"),
    ("preset/save", b"../../etc/passwd", "character that is not accepted"),
    ("preset/save", b"x" * 25, "at most 24 accepted"),
    ("preset/save", "caf\u00e9".encode(), "plain ASCII"),
    ("preset/goto", b"nowhere", "no preset named 'nowhere'; saved presets: none"),
    ("preset/delete", b"nowhere", "no preset named"),
    ("sd/reset", b"x" * 513, "513 bytes; at most 512 accepted"),
    ("pan/set", b"9" * 600, "at most 512 accepted"),
    ("reboot", b"now", "unknown command topic; accepted: ir_cut/set, ir_led/set, led_green"),
    ("pan", b"1", "unknown command topic"),
    ("pan/set/x", b"1", "unknown command topic"),
]


@pytest.mark.parametrize("suffix,payload,says", REJECTIONS)
def test_rejections_say_what_is_accepted_and_change_nothing(rig, cmd, suffix, payload, says):
    notified = []
    rig.cam.on_change = lambda: notified.append(1)    # what the session publishes on
    before = (rig.cam.hardware_state(), len(rig.rec.writes), dict(cmd.presets.items))
    assert says in rejected(cmd, suffix, payload)
    rig.loop.run_until_idle()
    assert (rig.cam.hardware_state(), len(rig.rec.writes), dict(cmd.presets.items)) == before
    assert notified == []
    assert (cmd.accepted, cmd.rejected) == (0, 1)


def test_a_bad_value_in_ptz_set_moves_neither_axis(rig, cmd):
    rejected(cmd, "ptz/set", b'{"pan": 10, "tilt": 95}')
    rig.loop.run_until_idle()
    assert rig.cam.pan.position_deg() == 177.5


def test_hardware_failure_is_reported(rig, cmd):
    rig.rec.fail_pins.add(rig.pins("led_red")[0])
    pin = rig.pins("led_red")[0]
    assert rejected(cmd, "led_red/set", b"ON") == \
        "led_red is out of service: GPIO %d: write failed (EIO)" % pin


def test_error_document():
    doc = json.loads(error_document(b"camagent/c/pan/set", b"\xff\x00ab\\" + b"z" * 100,
                                    "a sentence"))
    assert doc == {"topic": "camagent/c/pan/set", "error": "a sentence",
                   "payload": "\\xff\\x00ab\\x5c" + "z" * 59}


# --- presets --------------------------------------------------------------------------
def test_presets_save_goto_delete_and_persist(rig, cmd, tmp_path):
    run(rig, cmd, "ptz/set", b'{"pan": 42, "tilt": 12}')
    run(rig, cmd, "preset/save", b"  front   door ")
    assert cmd.presets.names() == ["front door"]
    run(rig, cmd, "ptz/set", b'{"pan": 300, "tilt": 80}')
    run(rig, cmd, "preset/goto", b"FRONT DOOR")            # names match in any case
    assert (rig.cam.pan.position_deg(), rig.cam.tilt.position_deg()) == (42.0, 12.0)
    path = str(tmp_path / "state" / "presets.json")
    with open(path) as f:
        assert json.load(f) == {"presets": {"front door": {"pan": rig.cam.pan.steps,
                                                           "tilt": rig.cam.tilt.steps}}}
    assert Presets(path).items == cmd.presets.items          # a restart reads them back
    run(rig, cmd, "preset/delete", b"Front Door")
    assert Presets(path).names() == []


def test_saving_while_moving_is_refused(rig, cmd):
    cmd.handle("pan/set", b"10")
    rig.loop.run_for(50000)
    assert "moving" in rejected(cmd, "preset/save", b"a")


def test_preset_count_is_bounded(rig, cmd):
    for i in range(presets.MAX_PRESETS):
        cmd.handle("preset/save", b"p%d" % i)
    assert "delete one first" in rejected(cmd, "preset/save", b"one more")
    cmd.handle("preset/save", b"P3")                          # overwriting is still fine
    assert len(cmd.presets.names()) == presets.MAX_PRESETS and "P3" in cmd.presets.names()


def test_a_failed_write_loses_nothing(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    p = Presets(str(blocker / "presets.json"))
    with pytest.raises(ValueError) as e:
        p.save("a", 1, 2)
    assert "presets unchanged" in str(e.value) and p.items == {} and p.changes == 0


def test_damaged_presets_file_keeps_the_good_entries(tmp_path):
    path = tmp_path / "presets.json"
    path.write_text(json.dumps({"presets": {"ok": {"pan": 1, "tilt": 2},
                                            "../bad": {"pan": 1, "tilt": 2},
                                            "nopos": {}, "float": {"pan": 1.5, "tilt": 2}}}))
    assert Presets(str(path)).items == {"ok": (1, 2)}
    path.write_text("{not json")
    assert Presets(str(path)).items == {}


# --- status ---------------------------------------------------------------------------
def test_status_reads_the_kernel_files(tmp_path):
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    (proc / "meminfo").write_text("MemTotal: 100 kB\nMemFree: 10 kB\nMemAvailable: 30 kB\n")
    (proc / "net" / "wireless").write_text(
        "Inter-| sta-|   Quality        |   Discarded packets\n"
        " face | tus | link level noise |  nwid  crypt   frag\n"
        "  eth9: 0000   10.  -90.  -256        0      0      0\n"
        " wlan0: 0000   54.  -61.  -256        0      0      0\n")
    card = tmp_path / "my card"
    card.mkdir()
    escaped = str(card).replace(" ", "\\040")     # as the kernel writes a space
    (proc / "mounts").write_text("/dev/root / squashfs ro 0 0\n"
                                 "/dev/mmcblk0p1 %s vfat rw 0 0\n" % escaped)
    (proc / "uptime").write_text("1234.56 789.00\n")
    net = tmp_path / "net"
    (net / "wlan0").mkdir(parents=True)
    (net / "wlan0" / "address").write_text("AA:bb:cc:00:11:22\n")
    s = status.Status(str(proc), str(net))

    def free():
        st = os.statvfs(str(card))
        return st.f_frsize * st.f_bavail
    # the "card" is a folder on a disk other processes write to: its free space is
    # taken just before and just after, and the agent's reading must lie between
    before = free()
    got = s.read()
    after = free()
    assert min(before, after) <= got.pop("sd_free") <= max(before, after)
    assert got == {"memory_free": 30 * 1024, "wifi_rssi": -61}
    assert s.uptime() == 1234 and s.mac() == "aa:bb:cc:00:11:22"


def test_status_without_wifi_card_or_files_is_none(tmp_path):
    (tmp_path / "meminfo").write_text("MemFree: 7 kB\n")      # an old kernel
    s = status.Status(str(tmp_path), str(tmp_path))
    assert s.read() == {"memory_free": 7 * 1024, "wifi_rssi": None, "sd_free": None}
    assert s.uptime() is None and s.mac() is None


# --- discovery ------------------------------------------------------------------------
def test_discovery_documents(rig):
    d = discovery.Discovery("homeassistant", "camagent/cam1", "cam1", "IMOU Ranger RC (4 MP)",
                            "0.1.0", "aa:bb:cc:00:11:22")
    docs = _texts(d.documents(rig.cam.axes, ["door", "gate"]))
    served = set("camagent/cam1/" + s for s in commands.TOPICS)
    published = {"camagent/cam1/" + s for s in ("state", "motion", "snapshot")}
    ids = set()
    for topic, text in docs.items():
        component = topic.split("/")[1]
        doc = ha_schema.expanded(json.loads(text))
        assert ha_schema.check(component, doc) == [], topic
        assert doc["availability_topic"] == "~/availability" and doc["~"] == "camagent/cam1"
        assert doc["device"] == {"identifiers": ["camagent_cam1"], "name": "cam1",
                                 "model": "IMOU Ranger RC (4 MP)", "manufacturer": "IMOU",
                                 "sw_version": "camagent 0.1.0",
                                 "connections": [["mac", "aa:bb:cc:00:11:22"]]}
        assert doc["origin"] == {"name": "camagent", "sw_version": "0.1.0"}
        for key in doc:
            if key.endswith("_topic") and key != "availability_topic":
                assert ha_schema.expand(doc, key) in (served if key == "command_topic"
                                                      else published), (topic, key)
        ids.add(doc["unique_id"])
    assert len(ids) == len(docs)
    pan = ha_schema.expanded(json.loads(docs["homeassistant/number/camagent_cam1/pan/config"]))
    assert (pan["min"], pan["max"]) == (rig.cam.pan.min_deg, rig.cam.pan.max_deg)
    select = ha_schema.expanded(
        json.loads(docs["homeassistant/select/camagent_cam1/preset/config"]))
    assert select["options"] == ["door", "gate"] and select["state_topic"] == "~/state"
    # HA refuses a select without options: with no presets the entity is removed
    assert d.preset_document([]) == (b"homeassistant/select/camagent_cam1/preset/config", ())


def test_discovery_categories():
    d = discovery.Discovery("homeassistant", "camagent/cam1", "cam1", "m", "0.1.0")
    docs = {t.split("/")[3]: ha_schema.expanded(json.loads(p)) for t, p in _texts(d.documents(
        {"pan": _Axis(0, 355.1), "tilt": _Axis(0, 90)}, ["door"])).items()}
    category = {name: doc.get("entity_category", "") for name, doc in docs.items()}
    assert {n for n, c in category.items() if c == "config"} == {
        "ir_led", "ir_cut", "night_mode", "led_green", "led_red", "sd_reset"}
    assert {n for n, c in category.items() if c == "diagnostic"} == {
        "homed", "problems", "uptime", "wifi_rssi", "memory_free", "sd_free", "rtsp_main",
        "rtsp_sub"}
    assert docs["motion"]["device_class"] == "motion"
    assert docs["preset_save"]["command_topic"] == "~/preset/save"


def test_snapshot_entities_come_with_the_snapshot_command(monkeypatch):
    """The camera and its button are announced only when the agent serves snapshot/get."""
    axes = {"pan": _Axis(0, 355.1), "tilt": _Axis(0, 90)}
    d = discovery.Discovery("homeassistant", "camagent/cam1", "cam1", "m", "0.1.0")
    monkeypatch.delitem(discovery.TOPICS, "snapshot/get", raising=False)
    without = {t.split("/")[3] for t in _texts(d.documents(axes, ["a"]))}
    assert not {"snapshot", "snapshot_get"} & without
    monkeypatch.setitem(discovery.TOPICS, "snapshot/get", ("_snapshot", None))
    docs = {t.split("/")[3]: (t.split("/")[1], ha_schema.expanded(json.loads(p)))
            for t, p in _texts(d.documents(axes, ["a"])).items()}
    assert set(docs) - without == {"snapshot", "snapshot_get"}
    component, camera = docs["snapshot"]
    assert component == "camera" and ha_schema.check(component, camera) == []
    assert camera["topic"] == "~/snapshot" and "image_encoding" not in camera   # raw JPEG
    assert docs["snapshot_get"][1]["command_topic"] == "~/snapshot/get"


def test_discovery_follows_the_camera_address():
    d = discovery.Discovery("homeassistant", "camagent/cam1", "cam1", "m", "0.1.0")
    axes = {"pan": _Axis(0, 355.1), "tilt": _Axis(0, 90)}
    assert all("cu" not in json.loads(p)["dev"] for p in _texts(d.documents(axes, ["a"])).values())
    assert d.set_ip("192.0.2.7") is True and d.set_ip("192.0.2.7") is False
    for p in _texts(d.documents(axes, ["a"])).values():
        assert ha_schema.expanded(json.loads(p))["device"]["configuration_url"] == \
            "http://192.0.2.7/"
    assert discovery.video_urls("192.0.2.7") == {"rtsp_main": "rtsp://192.0.2.7:554/stream=0",
                                                 "rtsp_sub": "rtsp://192.0.2.7:554/stream=1"}
    assert discovery.video_urls(None) == {"rtsp_main": None, "rtsp_sub": None}


def test_camera_ip_from_the_routing_trie(tmp_path):
    from camhost.simcam import fib_trie
    (tmp_path / "net").mkdir()
    trie = tmp_path / "net" / "fib_trie"
    assert discovery.camera_ip(str(tmp_path)) is None          # no file: no open() either
    trie.write_text(fib_trie(None))
    assert discovery.camera_ip(str(tmp_path)) is None          # loopback only
    trie.write_text(fib_trie("10.1.2.3"))
    assert discovery.camera_ip(str(tmp_path)) == "10.1.2.3"


class _Axis:
    def __init__(self, low, high):
        self.min_deg, self.max_deg = low, high


def _texts(documents):
    """{topic: payload} as text (the agent publishes bytes, the payload in pieces)."""
    return {t.decode(): b"".join(p).decode() for t, p in documents}


def test_heartbeat_pings_once_per_keepalive_and_notices_a_dead_broker_soon_after():
    for keepalive in (5, 7, 60, 600, 3600):
        for interval in (5, 300, 86400):
            beat, answer = heartbeat_s(keepalive, interval)
            # never later than the keepalive (the broker allows 1.5 x), one wakeup per
            # period; a broker that stops answering is noticed within keepalive + answer
            assert 1 <= beat <= keepalive and 1 <= answer <= min(3, keepalive / 4)
            assert beat <= interval and beat <= 300
    assert heartbeat_s(60, 300) == (60, 3)


def test_the_schema_checker_catches_what_home_assistant_would_refuse():
    """ha_schema.check() is what the discovery tests trust: it must fail bad payloads."""
    good = {"name": "Led", "unique_id": "u1", "command_topic": "~/led/set", "options": ["A"],
            "device": {"identifiers": ["x"]}}
    assert ha_schema.check("select", good) == []
    cases = [
        ("select", dict(good, options=[]), "options must be a non-empty list"),
        ("select", {k: v for k, v in good.items() if k != "command_topic"},
         "missing required command_topic"),
        ("select", dict(good, payload_press="X"), "payload_press is not a documented select key"),
        ("sensor", {"name": "s", "unique_id": "u", "state_topic": "~/state",
                    "entity_category": "config", "device": {"identifiers": ["x"]}},
         "entity_category config is refused for a sensor"),
        ("sensor", {"name": "s", "unique_id": "u", "state_topic": "~/state",
                    "device": {"identifiers": ["x"]}, "value_template": "{{ value_json.a"},
         "value_template does not parse"),
        ("text", {"name": "t", "unique_id": "u", "command_topic": "~/t", "pattern": "[",
                  "device": {"identifiers": ["x"]}}, "text pattern is not a regex"),
        ("select", dict(good, device={"identifiers": ["x"], "configuration_url": "ftp://x"}),
         "configuration_url 'ftp://x' is not an http(s) URL"),
        ("camera", {"name": "c", "unique_id": "u", "topic": "~/s", "image_encoding": "none",
                    "device": {"identifiers": ["x"]}}, "image_encoding 'none'"),
        ("cover", good, "cover is not a component camagent should announce"),
    ]
    for component, doc, expected in cases:
        found = ha_schema.check(component, doc)
        assert any(expected in p for p in found), (expected, found)
    assert ha_schema.expanded({"cmd_t": "~/x", "dev": {"ids": ["a"], "cu": "http://h/"}}) == \
        {"command_topic": "~/x", "device": {"identifiers": ["a"], "configuration_url": "http://h/"}}
