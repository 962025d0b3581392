"""`make bench` must not rot: every benchmark runs with tiny sizes and reports sane counts.

Runs bench/run.py --quick (CPython only) in a subprocess and checks the JSON it
writes: the structure every section promises, and the figures that are counted
rather than timed: one sysfs write per half-step for the agent and the floor,
no lost commands, one MQTT connection while idle, nothing flashed for an
unchanged image. Timed figures are only checked to be there, never their size.
"""
import glob
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, "bench", "run.py")
FIGURE_KEYS = {"name", "unit", "value", "baseline", "baseline_name", "ratio", "target", "met"}


def run_bench(tmp_path, *args, micropython=None):
    env = dict(os.environ)
    env.pop("MICROPYTHON", None)
    if micropython:
        env["MICROPYTHON"] = micropython
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, RUN, "--quick", "--out", str(out)] + list(args),
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=110)
    text = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, text
    with open(out) as f:
        return json.load(f), text


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    return run_bench(tmp_path_factory.mktemp("bench"))


def sections(results):
    return {s["key"]: s for s in results["sections"]}


def test_every_section_runs_and_reports_figures(quick):
    results, text = quick
    secs = sections(results)
    assert list(secs) == ["steps", "latency", "idle", "stall", "footprint", "flash", "actioncam",
                          "bridges", "discovery", "local", "snapshot"]
    for key, sec in secs.items():
        if key == "discovery":   # measured under MicroPython only
            assert (sec["status"], sec["reason"]) == ("skipped", "MICROPYTHON not set")
            continue
        assert sec["status"] == "ok", (key, sec["reason"])
        assert sec["figures"], key
        for fig in sec["figures"]:
            assert set(fig) >= FIGURE_KEYS, fig
            assert fig["met"] in (True, False, None)
            assert (fig["target"] is None) == (fig["met"] is None) or fig["value"] is None
            assert fig["name"] in text  # every figure is in the printed table
    assert results["quick"] is True
    assert results["machine"]["cpus"] >= 1
    assert "skipped: MICROPYTHON not set" in text


def test_steps_counts_one_sysfs_write_per_half_step(quick):
    results, _ = quick
    runs = results["raw"]["steps"]["CPython"]
    assert [r["rate"] for r in runs] == [1000]
    for r in runs:
        for who in ("agent", "floor"):
            figures = r[who]
            # write(2) calls counted by the kernel, and the writes the wrapper saw
            assert figures["writes_per_half_step"] == 1.0, (who, figures)
            assert figures["logged_per_half_step"] == 1.0, (who, figures)
            # 0.05 s at 1000/s, two axes; the loop stops once both have made 50, and the
            # first to get there goes on while the other catches up (a step or two on a
            # loaded machine)
            assert 2 * 50 <= figures["half_steps"] <= 2 * 50 + 10, figures["half_steps"]
            assert figures["intervals"] > 0
            assert figures["achieved"] > 0 and figures["p99"] >= figures["p50"] >= 0
    names = [f["name"] for f in sections(results)["steps"]["figures"]]
    assert "CPython 1000/s value writes/half-step" in names


def test_latency_measures_every_contender_without_losses(quick):
    results, _ = quick
    contenders = results["raw"]["latency"]["default broker"]
    assert set(contenders) == {"agent (CPython)", "builtins", "fork"}
    for name, s in contenders.items():
        assert s["n"] == 5 and s["lost"] == 0, (name, s)
        assert 0 < s["p50"] <= s["p99"]
    targets = [f for f in sections(results)["latency"]["figures"] if f["target"]]
    assert {f["baseline_name"] for f in targets} == {"builtins", "fork"}


def test_idle_counts_wakeups_of_one_connection(quick):
    results, _ = quick
    measured = results["raw"]["idle"]["CPython"]["measured"]
    assert measured["connects"] == 1
    assert measured["wakeups"] >= 1 and measured["cpu_ns"] > 0
    assert measured["heartbeat_s"] == 5          # keepalive 5 s: one ping per period
    assert measured["window_us"] >= 100000


def test_footprint_compiles_every_agent_module(quick):
    results, _ = quick
    mpy = results["raw"]["footprint"]["mpy"]
    sources = glob.glob(os.path.join(ROOT, "agent", "camagent", "*.py"))
    assert sorted(mpy["modules"]) == sorted(os.path.basename(p)[:-3] + ".mpy" for p in sources)
    assert mpy["total"] == sum(mpy["modules"].values())
    assert 0 < mpy["xz"] < mpy["total"]
    memory = results["raw"]["footprint"]["memory"]["CPython"]
    assert memory["mqtt_connected"] and memory["mqtt_connects"] == 1
    assert memory["heap_idle"] > memory["heap_import"] > 0


def test_flash_writes_nothing_for_an_unchanged_image(quick):
    results, _ = quick
    flash = results["raw"]["flash"]
    assert flash["unchanged image"]["programmed_bytes"] == 0
    assert flash["unchanged image"]["chip_bytes_changed"] == 0
    agent, full = flash["agent-only change"], flash["full image"]
    assert 0 < agent["programmed_bytes"] < full["programmed_bytes"]
    for r in (agent, full):
        # flashrom's own block log agrees with a comparison of the chip file
        assert r["erased_blocks"] == r["chip_sectors_changed"]


def test_only_picks_sections_markdown_and_rejects_unknown_ones(tmp_path):
    results, text = run_bench(tmp_path, "--only", "steps", "--markdown")
    assert [s["key"] for s in results["sections"]] == ["steps"]
    # the README's "Latest results" tables
    assert "**Steps (fake sysfs on tmpfs, wall clock)**" in text
    row = ("| CPython 1000/s value writes/half-step | 1.000 | 1.000 (floor) | 1.000 "
           "| == 1.000 | ok |")
    assert row in text.splitlines()
    proc = subprocess.run([sys.executable, RUN, "--only", "steps,speed"], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    assert proc.returncode == 2
    assert b"unknown section(s) speed" in proc.stdout


@pytest.mark.skipif(not os.environ.get("MICROPYTHON"), reason="MICROPYTHON not set")
def test_steps_under_micropython_count_one_write_per_half_step(tmp_path):
    results, _ = run_bench(tmp_path, "--only", "steps", micropython=os.environ["MICROPYTHON"])
    runs = [v for k, v in results["raw"]["steps"].items() if k.startswith("MicroPython")]
    assert runs and isinstance(runs[0], list), results["raw"]["steps"]
    for r in runs[0]:
        assert r["agent"]["writes_per_half_step"] == 1.0
        assert r["floor"]["writes_per_half_step"] == 1.0
        assert r["floor"]["allocated_per_half_step"] is not None


def test_stall_reports_step_delays_and_the_heap_while_skipping(quick):
    results, text = quick
    raw = results["raw"]["stall"]["CPython"]
    for broker in ("normal", "stalling", "skipping"):
        assert all(len(axis) > 100 for axis in raw[broker]["intervals"]), broker
    assert raw["skip"]["connects"] == 1          # the big message did not cost the connection
    assert raw["skip"]["peak_skipping"] > 0 and raw["skip"]["peak_idle"] > 0


def test_bridges_lose_no_command_and_snap_byte_identical(quick):
    results, _ = quick
    raw = results["raw"]["bridges"]
    assert raw["snap"]["identical"] and raw["snap"]["reply_bytes"] > raw["jpeg_bytes"]
    assert raw["snap_take"] == {"n": 2, "lost": 0}
    for key in ("still_take", "still_take_nagle"):     # direct stills, then bridged ones
        assert raw[key] == {"n": 2, "lost": 0, "camera_stills": 4}


def test_actioncam_latency_matches_every_frame_for_relay_and_baseline(quick):
    results, _ = quick
    latency = results["raw"]["actioncam"]["latency"]
    for who in ("relay", "baseline"):
        s = latency[who]
        # 25 warm-up frames, then 2 s at 25 fps, each told apart by the marks in its picture
        assert (s["decoded"], s["n"], s["lost"], s["unreadable"]) == (75, 50, 0, 0), (who, s)
        assert 0 < s["p50"] <= s["p99"]
    figures = {f["name"]: f for f in sections(results)["actioncam"]["figures"]}
    for p in ("p50", "p99"):
        fig = figures["glass-to-client latency " + p]
        assert fig["value"] and fig["baseline"] and fig["baseline_name"] == "ffmpeg -c copy -f rtp"


@pytest.mark.skipif(not os.environ.get("MICROPYTHON"), reason="MICROPYTHON not set")
def test_discovery_heap_under_micropython_counts_every_document(tmp_path):
    results, _ = run_bench(tmp_path, "--only", "discovery", micropython=os.environ["MICROPYTHON"])
    raw = results["raw"]["discovery"]
    assert raw["documents"] >= 26 and raw["payload_bytes"] > 0
    assert raw["garbage"] > 0 and raw["baseline"] > 0


def test_snapshot_relay_publishes_whole_pictures(quick):
    results, _ = quick
    raw = results["raw"]["snapshot"]
    heap, steps = raw["CPython_heap"], raw["CPython_steps"]
    assert (heap["published"], heap["failed"]) == (1, 0) and heap["chunks"] > 1
    assert (steps["with"]["published"], steps["with"]["failed"]) == (1, 0)
    assert steps["without"]["published"] == 0
    assert steps["with"]["connects"] == steps["without"]["connects"] == 1
    assert raw["CPython_relay_s"] > 0
