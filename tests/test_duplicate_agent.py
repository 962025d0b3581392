"""Two agents with the same device_id are detected (issue 9, item 13).

Real agents on simulated cameras and one real mosquitto: with different client ids
(both online, the retained state flips between them) and with the same client id
(they throw each other off the broker). Each must say so in `problems` and on
stderr. One agent restarted, finding its own earlier retained state, must not.
With MICROPYTHON set, one of the two twins is a MicroPython agent.
"""
import json
import os

import pytest

from broker_fixtures import (Agent, Watcher, mosquitto, send,  # noqa: F401
                             stop_leftovers, wait_until)
from mpvm import MicroVM

MICROPYTHON = os.environ.get("MICROPYTHON")
# The same-client-id twins take turns with reconnect backoff in between: usually a few
# seconds, but each round doubles the delay, so a loaded machine gets headroom.
SLOW_S = 150


def conflict(device_id, other):
    return "another agent with device_id %s is publishing on camagent/%s (instance %s)" % (
        device_id, device_id, other)


def states(w, base, start=0):
    return [json.loads(p) for p, r in w.all(base + "/state", start)]


def twins(tmp_path, mosquitto, client_ids):
    """Two agents, one device_id; the second on MicroPython when it is available."""
    pythons = (None, MICROPYTHON)
    return [Agent(tmp_path / name, mosquitto, device_id="twin", micropython=python,
                  mqtt={"client_id": client_id} if client_id else None,
                  sd_reset_on_start=False).start()
            for name, client_id, python in zip("ab", client_ids, pythons)]


def each_reports_the_other(w, agents, timeout):
    """Wait until each of two instances publishes a state naming the other one."""
    def reported():
        found = {}
        for doc in states(w, "camagent/twin"):
            found.setdefault(doc["instance"], set()).update(doc["problems"])
        ids = list(found)
        return len(ids) == 2 and all(conflict("twin", ids[1 - i]) in found[ids[i]]
                                     for i in range(2))
    try:
        wait_until(reported, timeout=timeout, what="each twin to report the other")
    except AssertionError as e:   # say what each saw, for a failure that is rare
        seen = [(d["instance"], d["states"], d["problems"]) for d in states(w, "camagent/twin")]
        raise AssertionError("%s; states (instance, count, problems): %s; logs: %s" % (
            e, seen[-12:], [agent.log()[-1500:] for agent in agents])) from None
    ids = {doc["instance"] for doc in states(w, "camagent/twin")}
    for agent in agents:
        wait_until(lambda: "another agent with device_id twin" in agent.log(),
                   what="the conflict on stderr")
        others = [i for i in ids if "(instance %s)" % i in agent.log()]
        assert len(others) == 1 and agent.log().count("another agent") == 1
    return ids


def test_twins_with_different_client_ids_report_each_other(tmp_path, mosquitto):
    w = Watcher(mosquitto, ["camagent/twin/#"])
    try:
        agents = twins(tmp_path, mosquitto, ("twin-a", "twin-b"))
        wait_until(lambda: len({d["instance"] for d in states(w, "camagent/twin")}) == 2,
                   what="two instances")
        # any command to the shared base makes both publish: each sees the other's
        # second state, which proves it alive (its first could be a leftover)
        w.publish("camagent/twin/led_green/set", b"ON")
        each_reports_the_other(w, agents, timeout=30)
        assert all(agent.alive() for agent in agents)
    finally:
        w.close()


def test_twins_with_one_client_id_report_each_other(tmp_path, mosquitto):
    w = Watcher(mosquitto, ["camagent/twin/#"])
    try:
        agents = twins(tmp_path, mosquitto, (None, None))   # both camagent-twin
        each_reports_the_other(w, agents, timeout=SLOW_S)
        assert all(agent.alive() for agent in agents)
        assert all("Traceback" not in agent.log() for agent in agents)
    finally:
        w.close()


@pytest.mark.parametrize("micropython", [None, MICROPYTHON] if MICROPYTHON else [None],
                         ids=["cpython", "micropython"][:2 if MICROPYTHON else 1])
def test_a_restarted_agent_is_not_its_own_twin(tmp_path, mosquitto, micropython):
    agent = Agent(tmp_path, mosquitto, device_id="solo", micropython=micropython,
                  sd_reset_on_start=False)
    w = Watcher(mosquitto, [agent.base + "/#"])
    try:
        seen = []
        for stop in ("kill", "stop", None):   # gone without a word, then a clean stop
            mark = w.mark()
            agent.start()
            i, t, p = w.wait_for(lambda t, p: t == agent.base + "/state" and
                                 json.loads(p)["instance"] not in seen, "the new instance",
                                 start=mark)
            seen.append(json.loads(p)["instance"])
            # answered after the retained state of the run before was delivered and read
            for payload in ("ON", "OFF", "BLINK"):
                kind, st = send(w, agent.base, "led_red/set", payload)
                assert kind == "state" and st["problems"] == [] and st["instance"] == seen[-1]
            assert [d["states"] for d in states(w, agent.base, mark)] == \
                list(range(1, len(states(w, agent.base, mark)) + 1))
            if stop == "kill":
                agent.kill()
            elif stop == "stop":
                assert agent.stop() == 0
        assert len(set(seen)) == 3 and "another agent" not in agent.log()
    finally:
        w.close()


def test_instance_logic_in_the_micropython_vm():
    """The detection rule itself, on the shipped .mpy: a leftover state proves nothing,
    a second, different state from the same other instance does."""
    with MicroVM() as vm:
        vm.run("""
import json
from camagent.instance import Instance
me = Instance("cam", "camagent/cam")
doc = {"problems": []}
me.stamp(doc)
own = json.dumps(doc).encode()
old = json.dumps({"instance": "0badf00d", "states": 7}).encode()
newer = json.dumps({"instance": "0badf00d", "states": 8}).encode()
results = [me.seen(own), me.seen(old), me.seen(old), me.seen(b"not json"),
           me.seen(b'{"pan": 1}'), me.seen(newer), me.seen(newer)]
""")
        assert vm.eval("results") == [False, False, False, False, False, True, False]
        assert vm.eval("me.problem") == conflict("cam", "0badf00d")
        assert vm.eval("len(me.id)") == 8 and vm.eval("doc['states']") == 1
