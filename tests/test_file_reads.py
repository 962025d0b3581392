"""The agent reads and writes files without ever blocking on them or half-opening them.

A light_file that is a FIFO used to block the whole loop in open() until something
wrote to it; a state_dir on a read-only or full file system failed every save in
open(), which on a stock MicroPython 1.22.0 also costs fd 0 (see
tests/test_missing_files_micropython.py). Both are found out with stat/statvfs now.
"""
import json
import os
import subprocess

import pytest

from agent_rig import Rig
from broker_fixtures import Agent, Watcher, mosquitto, stop_leftovers  # noqa: F401 (fixtures)

MICROPYTHON = os.environ.get("MICROPYTHON")


def test_a_fifo_light_file_is_a_problem_and_blocks_nothing(tmp_path):
    fifo = tmp_path / "light"
    os.mkfifo(str(fifo))
    rig = Rig(tmp_path, sd_reset_on_start=False, light_file=str(fifo), light_poll_s=1)
    try:
        rig.loop.run_for(3000000)        # three polls: each would have blocked in open()
        assert rig.cam.problems() == ["light file %s: not a regular file" % fifo]
        rig.cam.pan.move_to(rig.cam.pan.steps + 20)
        rig.loop.run_until(lambda: not rig.cam.moving)
    finally:
        rig.close()


def test_a_directory_as_light_file_is_a_problem(tmp_path):
    rig = Rig(tmp_path, sd_reset_on_start=False, light_file=str(tmp_path), light_poll_s=1)
    try:
        rig.loop.run_for(1000000)
        assert rig.cam.problems() == ["light file %s: is a directory" % tmp_path]
    finally:
        rig.close()


@pytest.fixture
def read_only_dir(tmp_path):
    """A read-only tmpfs (needs the right to mount: root here, skipped elsewhere)."""
    where = tmp_path / "ro"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs",
                              str(where)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if mounted.returncode:
        pytest.skip("cannot mount a read-only tmpfs here")
    yield str(where)
    subprocess.run(["umount", str(where)], check=True)


def interpreters():
    return [None] + ([MICROPYTHON] if MICROPYTHON else [])


@pytest.mark.parametrize("python", interpreters(), ids=["cpython", "micropython"][:len(
    interpreters())])
def test_a_read_only_state_dir_is_a_problem_and_keeps_the_connection(tmp_path, mosquitto,
                                                                      read_only_dir, python):
    agent = Agent(tmp_path / "agent", mosquitto, micropython=python, sd_reset_on_start=False,
                  state_dir=read_only_dir, persist_min_interval_s=0)
    w = Watcher(mosquitto, [agent.base + "/#"])
    try:
        agent.start()
        w.wait_for(lambda t, p: t.endswith("/availability") and p == b"online", "online")
        for n in range(3):   # each move ends in a save that cannot be written
            start = w.mark()
            w.publish(agent.base + "/pan/step", "5")
            w.wait_for(lambda t, p: t.endswith("/state") and json.loads(p)["problems"]
                       and not json.loads(p)["pan"]["moving"], "a state after move %d" % n,
                       start=start)
        i, t, p = w.wait_for(lambda t, p: t.endswith("/state") and json.loads(p)["problems"],
                             "the problem", start=start)
        assert json.loads(p)["problems"] == ["cannot save position to %s/position.json: "
                                             "read-only file system" % read_only_dir]
        log = agent.log()
        assert "connection lost" not in log and "Traceback" not in log, log
    finally:
        w.close()
        agent.close()


# Where the agent may call open(), and why the path is known to be there first. A new
# open() of a file that may be missing must go through compat.read_text instead.
OPEN_ALLOWED = {
    ("compat", "read_text"): "after os.stat found a regular file",
    ("persist", "write_json"): "after _check_writable found the directory writable",
    ("gpio", "output"): "sysfs value file of a pin just exported (checked with _exists)",
    ("gpio", "_write"): "sysfs direction file of an exported pin",
    ("gpio", "_export"): "the kernel's sysfs export file",
    ("gpio", "release_all"): "the kernel's sysfs unexport file",
    ("mqtt", "_read"): "a TLS file config.load found to be a regular file",
    ("discovery", "camera_ip"): "/proc/net/fib_trie after os.stat found it; read a line at a time",
}


def test_every_open_in_the_agent_is_of_a_file_known_to_be_there():
    import ast
    agent = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "agent", "camagent")
    found = set()
    for name in sorted(os.listdir(agent)):
        if not name.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(agent, name)).read())
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.Call) and (
                        getattr(node.func, "id", None) == "open"
                        or getattr(node.func, "attr", None) == "_open"):
                    found.add((name[:-3], func.name))
    assert found - set(OPEN_ALLOWED) == set(), "open() of a file that may be missing: " \
        "use compat.read_text (MicroPython 1.22's failed open() closes fd 0)"
    assert found, "the scan found no open() at all: it is broken"
