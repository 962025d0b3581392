"""bench/footprint.py's heap search counts only MemoryError as "does not fit".

On stock MicroPython 1.22.0 the agent's connection was lost to the fd-0 bug of issue
15 at any heap size, and the bisection took that for a heap that is too small (its
203,776 B figure was the bug, not memory). A try now ends in one of: fits, MemoryError,
or another failure, which is tried again and then stops the search with its reason.
"""
import os
import shutil
import sys

import pytest

from broker_fixtures import mosquitto, stop_leftovers  # noqa: F401 (fixtures)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import footprint  # noqa: E402  (bench/ is not a package)
from common import ShmSysfs, compile_agent, micropython  # noqa: E402

MICROPYTHON = os.environ.get("MICROPYTHON")

MEMORY_LOG = """Traceback (most recent call last):
  File "camagent/mqtt.py", line 240, in _connect
MemoryError: memory allocation failed, allocating 4096 bytes
"""
EBADF_LOG = "camagent: mqtt: connection lost: [Errno 9] EBADF\n" \
            "camagent: mqtt: broker 127.0.0.1:1883: [Errno 9] EBADF; retrying with backoff\n"


def test_a_log_is_read_for_what_ended_the_try():
    assert footprint.ended_by(MEMORY_LOG) == (
        footprint.MEMORY, "MemoryError: memory allocation failed, allocating 4096 bytes")
    assert footprint.ended_by("camagent: mqtt: connection lost: memory allocation failed")[0] \
        == footprint.MEMORY
    assert footprint.ended_by(EBADF_LOG) == (
        footprint.OTHER, "camagent: mqtt: connection lost: [Errno 9] EBADF")
    assert footprint.ended_by("") == (footprint.OTHER, "")


class Outcomes:
    """A run of the agent per heap size, as a table: what the search is given to decide."""

    def __init__(self, verdict):
        self.verdict = verdict
        self.sizes = []

    def runs(self, heapsize):
        self.sizes.append(heapsize)
        return self.verdict(heapsize)


def test_the_search_bisects_on_memory_errors_only():
    probe = Outcomes(lambda size: (footprint.FITS, "") if size >= 100000
                     else (footprint.MEMORY, "MemoryError: memory allocation failed"))
    tries = []
    need, why = footprint.min_heap(probe, tries)
    assert why is None and 100000 <= need < 100000 + 1024
    assert [t[0] for t in tries] == probe.sizes
    assert {t[1] for t in tries} == {footprint.FITS, footprint.MEMORY}


def test_a_failure_that_is_not_memory_ends_the_search_with_its_reason():
    """The fd-0 bug's lost connection below ~200 KB used to read as "does not fit"."""
    probe = Outcomes(lambda size: (footprint.FITS, "") if size >= 200000
                     else (footprint.OTHER, "camagent: mqtt: connection lost: EBADF"))
    tries = []
    need, why = footprint.min_heap(probe, tries)
    assert need is None
    assert "failed 2 times for a reason other than memory" in why and "EBADF" in why, why
    assert tries[-1][1] == tries[-2][1] == footprint.OTHER and tries[-1][0] == tries[-2][0]
    note = footprint.describe_tries(tries)
    assert "%d: fits" % footprint.HEAP_SEARCH[1] in note
    assert "other failure (camagent: mqtt: connection lost: EBADF)" in note


@pytest.mark.skipif(not MICROPYTHON, reason="MICROPYTHON not set")
def test_the_real_agent_reports_memory_error_and_fits(tmp_path, mosquitto):
    out = str(tmp_path / "mpy")
    compile_agent(out)
    mp = micropython()
    with ShmSysfs() as fs:
        probe = footprint.HeapProbe(mp, out, mosquitto.port, fs)
        kind, line = probe.runs(16 * 1024)
        # at the smallest heaps MicroPython cuts its own message short ("memory allocation")
        assert kind == footprint.MEMORY and "memory allocation" in line, (kind, line)
        assert probe.runs(1024 * 1024) == (footprint.FITS, "")
        # an agent without its MQTT library: a failure, and not one of memory
        shutil.rmtree(os.path.join(out, "umqtt"))
        kind, line = probe.runs(1024 * 1024, 3)
        assert kind == footprint.OTHER and "umqtt" in line, (kind, line)
