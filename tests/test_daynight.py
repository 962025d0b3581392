"""Day/night from majestic's ISP gain, the pieces that need no network: the gain-to-level
mapping, /metrics/isp read in pieces of any size, the night colour calls, and the
config keys. The same code runs under the MicroPython VM (tests/mpvm.py)."""
import json

import pytest

from camagent import config
from camagent.daynight import GainLight, NightColour, gain_to_level
from camagent.majestic import MajesticError
from mpvm import vm_fixture

vm = vm_fixture()

METRICS = (b"# HELP isp_again Analog gain\n# TYPE isp_again gauge\n"
           b"isp_again_max 99999\n" + b"x" * 500 + b"\nisp_again 12345\nisp_dgain 1024\n")
NIGHT = dict(config.DEFAULTS["night"], gain_on=10000.0, gain_off=3000.0)


class FakeIr:
    def __init__(self):
        self.levels = []

    def set_light(self, level):
        self.levels.append(level)


class FakeCamera:
    def __init__(self):
        self.ir = FakeIr()
        self.changes = 0

    def now(self):
        return 0

    def changed(self):
        self.changes += 1


class FakeHttp:
    def __init__(self):
        self.gets = []

    def get(self, path, handler):
        self.gets.append(path)


def feed(light, body, piece):
    light.head(len(body))
    buf = bytearray(2048)
    for i in range(0, len(body), piece):
        part = body[i:i + piece]
        buf[:len(part)] = part
        light.chunk(buf, len(part))
    light.done(None)


def test_gain_maps_onto_the_hysteresis_band():
    low, high = NIGHT["dark_below"], NIGHT["light_above"]
    assert gain_to_level(10000, NIGHT) == low and gain_to_level(3000, NIGHT) == high
    assert gain_to_level(10001, NIGHT) < low and gain_to_level(2999, NIGHT) > high
    assert low < gain_to_level(6500, NIGHT) < high
    assert gain_to_level(1e9, NIGHT) == 0 and high < gain_to_level(0, NIGHT) <= 100


@pytest.mark.parametrize("piece", [1, 2, 7, 64, 501, 2048])
def test_metrics_read_in_any_pieces(piece):
    cam = FakeCamera()
    light = GainLight(cam, FakeHttp(), NIGHT)
    feed(light, METRICS, piece)
    assert light.gain == 12345.0 and light.error is None
    assert cam.ir.levels == [gain_to_level(12345.0, NIGHT)]


def test_a_last_line_without_newline_and_missing_gain():
    cam = FakeCamera()
    light = GainLight(cam, FakeHttp(), NIGHT)
    feed(light, b"isp_again 42", 5)
    assert light.gain == 42.0
    # the only gain line is too long to be read
    feed(light, b"isp_dgain 1\n" + b"isp_again 7" * 40 + b"\n", 64)
    assert light.error == "night: majestic's /metrics/isp has no isp_again line"
    assert cam.changes == 1 and cam.ir.levels == [gain_to_level(42.0, NIGHT)]
    light.done("majestic is not running (127.0.0.1:80: connection refused)")
    assert light.error.startswith("night: majestic is not running")


def test_bad_answers_are_refused():
    light = GainLight(FakeCamera(), FakeHttp(), NIGHT)
    light.head(None)
    with pytest.raises(MajesticError, match="longer than"):
        feed(light, b"a" * 40000, 2048)


def test_night_colour_follows_the_switch():
    http = FakeHttp()
    colour = NightColour(http)
    colour.switched("NIGHT")
    colour.switched("DAY")
    assert http.gets == ["/night/on", "/night/off"]
    colour.head(1)
    colour.done("majestic answered HTTP 500 for /night/on")
    assert colour.error == "night colour: majestic answered HTTP 500 for /night/on"
    colour.done(None)
    assert colour.error is None


@pytest.mark.parametrize("doc,key,words", [
    ({"night": {"gain_on": 100, "gain_off": 200}}, "night", "gain_off must be lower"),
    ({"night": {"gain_poll_s": 600}}, "night.gain_poll_s", "from 0 to 500"),
    ({"majestic": {"port": 70000}}, "majestic.port", "from 0 to 65535"),
    ({"majestic": {"timeout_s": 0}}, "majestic.timeout_s", "from 1 to 60"),
    ({"snapshot": {"interval_s": -1}}, "snapshot.interval_s", "from 0 to 500"),
    ({"snapshot": {"query": "a b"}}, "snapshot.query", "only letters"),
    ({"snapshot": {"query": "x=1\r\nHost: evil"}}, "snapshot.query", "only letters"),
    ({"snapshot": {"retain": "yes"}}, "snapshot.retain", "true or false"),
])
def test_config_keys_are_checked(doc, key, words):
    with pytest.raises(config.ConfigError) as e:
        config.parse(json.dumps(doc))
    assert str(e.value).startswith("(config): %s: " % key) and words in str(e.value)


def test_config_defaults_leave_majestic_off():
    cfg = config.parse(json.dumps({"snapshot": {"query": "width=640&height=360"}}))
    assert cfg["majestic"] == {"port": 0, "timeout_s": 10, "username": "", "password": ""}
    assert cfg["snapshot"]["interval_s"] == 0 and cfg["snapshot"]["retain"] is False


@pytest.mark.micropython
def test_gain_parsing_under_micropython(vm):
    vm.put("body", list(METRICS))
    vm.put("night", NIGHT)
    vm.run('''
from camagent.daynight import GainLight, NightColour, gain_to_level
class Ir:
    def __init__(self):
        self.levels = []
    def set_light(self, level):
        self.levels.append(level)
class Cam:
    ir = Ir()
    def now(self):
        return 0
    def changed(self):
        pass
class Http:
    gets = []
    def get(self, path, handler):
        self.gets.append(path)
results = []
data = bytes(body)
buf = bytearray(2048)
for piece in (1, 7, 501, 2048):
    light = GainLight(Cam(), Http(), night)
    light.head(len(data))
    for i in range(0, len(data), piece):
        part = data[i:i + piece]
        buf[:len(part)] = part
        light.chunk(buf, len(part))
    light.done(None)
    results.append(light.gain)
colour = NightColour(Http())
colour.switched("NIGHT")
levels = [gain_to_level(g, night) for g in (0, 3000, 6500, 10000, 1e9)]
''')
    assert vm.eval("results") == [12345.0] * 4
    assert vm.eval("Http.gets") == ["/night/on"]
    assert vm.eval("levels") == [gain_to_level(g, NIGHT) for g in (0, 3000, 6500, 10000, 1e9)]


def test_night_colour_asked_during_a_running_call_is_not_lost(tmp_path):
    """NIGHT then DAY while /night/on is still running: /night/off must follow it."""
    from camagent.majestic import Http

    class Loop:
        def add(self, dev):
            pass

        def watch(self, obj, cb):
            pass

        def unwatch(self, obj):
            pass

    class Cam:
        loop = Loop()

        def now(self):
            return 0
    http = Http(Cam(), 9, 1)      # port 9: nothing answers; the jobs are only queued
    colour = NightColour(http)
    colour.switched("NIGHT")
    assert http.busy and http._job[0] == "/night/on"
    colour.switched("NIGHT")      # the same call again: nothing more
    colour.switched("DAY")
    colour.switched("NIGHT")      # the last one asked for wins in the queue
    colour.switched("DAY")
    assert [job[0] for job in http._queue] == ["/night/off"]
    http._finish("test")          # the running call ends: the queued one starts
    assert http._job[0] == "/night/off" and not http._queue
    http._finish("test")
