"""Fuzzed commands: random bytes, oversize, wrong types, NaN/inf, negatives, unicode.

The same seeded corpus (over 1,000 payloads across every command topic and some
unknown ones) goes once through the real agent process over mosquitto, where
each rejection must come back on the error topic, and once through the command
table on the in-process rig, where every GPIO write is recorded and checked.
"""
import json
import random
import threading

import pytest

from agent_rig import Rig
from broker_fixtures import (Agent, Watcher, accepted, latest_state, mosquitto,  # noqa: F401
                             preview, send, stop_leftovers, wait_until)
from camagent.commands import TOPICS, CommandError, Commands
from camagent.presets import Presets

SEED = 20261121
COUNT = 1100
NIGHT = {"initial_mode": "DAY", "dark_below": 20, "light_above": 40, "min_dwell_s": 0}
EXTRA_TOPICS = ("bogus", "pan/bogus", "ptz", "PAN/SET", "a/b/c", "preset", "ir_led/set/x")

_NUMBERS = ("nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e309", "-1e309", "1e-400", "0x10",
            "1,5", "+", "-", ".", "e5", "--1", "1e", "9" * 300, "-0", "007", "1_0", " ", "",
            "\u0663", "\uff11", "\u00bd", "12abc", "-5", "355.1", "90.05", "-1000", "1e3")
_WORDS = ("ON", "OFF", "DAY", "NIGHT", "AUTO", "BLINK", "LEFT", "RIGHT", "UP", "DOWN")
_INJECTIONS = ("ON; rm -rf /", "$(reboot)", "`id`", "ON\x00", "ON\n\nOFF", "../../etc/passwd",
               "/tmp/x", "%s%s%n", "{{7*7}}", "'; DROP TABLE x; --", "\\x00", "ON OFF")
_JSON_VALUES = (None, True, False, "90", [], {}, float("nan"), float("inf"), -1, 0, 90, 1000,
                "nan", 1e308, -1e-320, [90], {"pan": 1})


def _unicode(rng):
    pool = "\u00e9\u4e2d\u0627\U0001f4f7\u200f\u0301\ufeff\uff10\u2028\x7f"
    return "".join(rng.choice(pool) for _ in range(rng.randint(1, 12))).encode()


def _json(rng):
    doc = {}
    for key in rng.sample(["pan", "tilt", "speed", "zoom", "PAN", ""], rng.randint(0, 3)):
        doc[key] = rng.choice(_JSON_VALUES)
    text = json.dumps(doc) if rng.random() < 0.8 else json.dumps(list(doc.values()))
    if rng.random() < 0.1:
        text = text[:rng.randint(0, len(text))]       # truncated JSON
    return text.encode()


_TOPIC_WORDS = {"ir_led/set": ("ON", "OFF"), "ir_cut/set": ("DAY", "NIGHT"),
                "night_mode/set": ("DAY", "NIGHT", "AUTO"), "led_green/set": ("ON", "OFF", "BLINK"),
                "led_red/set": ("ON", "OFF", "BLINK"), "ptz/move": ("LEFT", "RIGHT", "UP", "DOWN")}


def _mixed_case(rng, word):
    return "".join(c.lower() if rng.random() < 0.5 else c for c in word)


def corpus(seed=SEED, count=COUNT):
    """[(topic suffix, payload bytes)]: every command topic many times, a few unknown ones.

    Most payloads are wrong in some way; about a fifth are right for their topic
    (in random case), so the agent also acts, and the interlocks get exercised.
    """
    rng = random.Random(seed)
    suffixes = sorted(TOPICS) + list(EXTRA_TOPICS)
    kinds = (
        lambda s: bytes(rng.randrange(256) for _ in range(rng.randint(0, 64))),
        lambda s: bytes(rng.randrange(32, 127) for _ in range(rng.randint(513, 1500))),
        lambda s: rng.choice(_NUMBERS).encode(),
        lambda s: ("%.3f" % rng.uniform(-2000, 2000)).encode(),
        lambda s: ("%.1f" % rng.uniform(-5, 95)).encode(),
        lambda s: _json(rng),
        lambda s: (_mixed_case(rng, rng.choice(_WORDS)) +
                   rng.choice(("", "", "X", " ", "\t"))).encode(),
        lambda s: _mixed_case(rng, rng.choice(_TOPIC_WORDS.get(s, _WORDS))).encode(),
        lambda s: _mixed_case(rng, rng.choice(_TOPIC_WORDS.get(s, _WORDS))).encode(),
        lambda s: rng.choice(_INJECTIONS).encode(),
        lambda s: _unicode(rng),
        lambda s: ("p%d" % rng.randint(0, 30)).encode(),         # plausible preset names
    )
    cases = []
    for i in range(count):
        suffix = suffixes[i % len(suffixes)] if i < 2 * len(suffixes) else rng.choice(suffixes)
        cases.append((suffix, rng.choice(kinds)(suffix)))
    return cases


def test_corpus_covers_every_topic_and_kind():
    cases = corpus()
    assert len(cases) >= 1000
    assert {s for s, p in cases} >= set(TOPICS) | set(EXTRA_TOPICS)
    assert any(len(p) > 512 for s, p in cases) and any(b"nan" in p.lower() for s, p in cases)


def test_fuzzed_commands_through_the_agent_process(tmp_path, mosquitto):
    fuzz_agent(tmp_path, mosquitto)


def fuzz_agent(tmp_path, mosquitto, micropython=None):
    """The corpus through an agent process (CPython, or the MicroPython binary given)."""
    agent = Agent(tmp_path, mosquitto, night=NIGHT, sd_reset_on_start=False,
                  micropython=micropython).start()
    w = Watcher(mosquitto, [agent.base + "/#"])
    unsafe = []
    stop = threading.Event()

    def watch_pins():   # the IR-cut interlock, sampled while the fuzz runs
        while not stop.is_set():
            problem = agent.sim.unsafe()
            if problem:
                unsafe.append(problem)
            stop.wait(0.001)
    sampler = threading.Thread(target=watch_pins, daemon=True)
    try:
        w.wait_for(lambda t, p: t == agent.base + "/state", "the first state")
        sampler.start()
        cases = corpus()
        start = w.mark()
        # the agent takes <base>/+/+: one- and three-level topics never reach it
        taken = [c for c in cases if c[0].count("/") == 1]
        assert len(taken) < len(cases)

        def answered():   # accepted ones are counted in the state, the others answered
            return accepted(latest_state(w, agent.base)) + len(w.all(agent.base + "/error", start))
        for batch in range(0, len(cases), 100):
            infos = [w.client.publish("%s/%s" % (agent.base, s), p, qos=1)
                     for s, p in cases[batch:batch + 100]]
            for info in infos:
                info.wait_for_publish(20)
            total = sum(1 for c in cases[:batch + len(infos)] if c[0].count("/") == 1)
            wait_until(lambda: answered() >= total, what="answers to %d commands" % total)
            assert agent.alive(), agent.log()
        assert answered() == len(taken)
        errors = [json.loads(p) for p, r in w.all(agent.base + "/error", start)]
        assert len(errors) > 0.5 * len(taken)   # most are wrong; how many depends on timing
        # each answer names a payload that was sent to that topic
        sent = {("%s/%s" % (agent.base, s), preview(p)) for s, p in taken}
        assert all((e["topic"], e["payload"]) in sent and e["error"] for e in errors)
        # still in charge: stop everything, and the outputs are left safe
        for suffix, payload in (("ptz/stop", "STOP"), ("led_green/set", "OFF"),
                                ("led_red/set", "OFF")):
            kind, doc = send(w, agent.base, suffix, payload)
            assert kind == "state"
        wait_until(lambda: agent.sim.levels("pan") == (0, 0, 0, 0) and
                   agent.sim.levels("tilt") == (0, 0, 0, 0), what="coils released")
        wait_until(lambda: (agent.sim.levels("ircut_open"), agent.sim.levels("ircut_close")) ==
                   (0, 0), what="IR-cut coils released")
        assert not unsafe, unsafe[:3]
        assert agent.alive() and "Traceback" not in agent.log()
    finally:
        stop.set()
        w.close()
        agent.close()


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path, sd_reset_on_start=False, night=NIGHT)
    r.loop.run_for(500000)
    yield r
    r.close()


def test_fuzzed_commands_never_drive_an_unsafe_gpio_state(rig, tmp_path):
    """Every write recorded: the two IR-cut coils are never high together, and once
    the commands stop and the motors come to rest, every coil line is low."""
    cmd = Commands(rig.cam, Presets(str(tmp_path / "presets.json")), 10.0)
    cases = corpus()
    start = len(rig.rec.writes)
    rejections = 0
    for suffix, payload in cases:
        try:
            cmd.handle(suffix, payload)
        except CommandError as e:
            assert str(e)
            rejections += 1
        rig.loop.run_for(20000)            # 20 ms of agent time between commands
    assert (cmd.accepted, cmd.rejected) == (len(cases) - rejections, rejections)
    # then IR requests faster than the 150 ms pulse: they land during pulses
    rng = random.Random(SEED)
    for i in range(300):
        suffix = rng.choice(("ir_cut/set", "night_mode/set"))
        words = ("DAY", "NIGHT", "AUTO") if suffix == "night_mode/set" else ("DAY", "night")
        cmd.handle(suffix, rng.choice(words).encode())
        rig.loop.run_for(rng.choice((0, 1000, 50000, 149000, 151000)))
    open_pin, close_pin = rig.pins("ircut_open")[0], rig.pins("ircut_close")[0]
    level = {open_pin: 0, close_pin: 0}
    for pin, value, t in rig.writes_to([open_pin, close_pin], start):
        level[pin] = value
        assert not (level[open_pin] and level[close_pin]), "both IR-cut coils high at %d us" % t
    cmd.handle("led_green/set", b"OFF")
    cmd.handle("led_red/set", b"OFF")
    rig.loop.run_until_idle()
    for name in ("pan", "tilt", "ircut_open", "ircut_close"):
        assert all(line.value == 0 for line in _lines(rig, name)), name
    assert not rig.cam.moving


def _lines(rig, name):
    pins = set(rig.pins(name))
    return [line for pin, line in rig.cam.gpio._lines.items() if pin in pins]
