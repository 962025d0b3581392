"""`make bench`: the agent's speed and footprint, each figure beside its baseline.

    .venv/bin/python bench/run.py [--only steps,latency,idle,stall,footprint,flash,local] [--quick]
                                  [--out FILE] [--markdown]

Prints one table (--markdown: as markdown tables, the README's "Latest results") and
writes bench/results.json. Set MICROPYTHON to a MicroPython
unix-port binary to measure the agent under MicroPython too. Targets are goals
printed beside the figures; the exit code is 0 whether they are met or not, 1
when a benchmark itself broke (its section says so; the others still run), 2 for
bad arguments.
"""
import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402  (sets up the import paths)
import table  # noqa: E402

# name -> (module, title when it cannot run); run in this order, timing-critical first
SECTIONS = {"steps": ("steps", "Steps"), "latency": ("latency", "Command latency"),
            "idle": ("idle", "Idle cost"), "stall": ("stall", "Misbehaving broker"),
            "footprint": ("footprint", "Footprint"),
            "flash": ("flashbytes", "Flash"),
            "actioncam": ("actioncam", "Action camera relay"),
            "bridges": ("bridges", "Camera bridges"),
            "discovery": ("discovery", "Discovery heap"),
            "local": ("localchan", "Local channel"),
            "snapshot": ("snapshot", "Snapshot relay")}


def _load():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def machine():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mp = os.environ.get("MICROPYTHON") or None
    return {"cpu": cpu, "cpus": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "micropython": mp,
            "tmpfs": os.path.isdir("/dev/shm"), "load_at_start": _load()}


# --quick: tiny sizes, for checking that the benchmarks work (figures meaningless)
QUICK = {"steps": {"rates": (1000,), "duration_s": 0.05, "repeats": 1},
         "latency": {"commands": 5, "nodelay_pass": False},
         "idle": {"window_s": 0.1, "warm_s": 0, "align": False},
         "stall": {"steps": 200, "big": 64 * 1024},
         "footprint": {"heap_search": False},
         "flash": {"scale": 0.05},
         "actioncam": {"seconds": 2, "client_counts": (1,)},
         "bridges": {"repeats": 2},
         "discovery": {},
         "local": {"duration_s": 0.05, "repeats": 1},
         "snapshot": {"repeats": 1, "steps": 300, "image": (320, 180, 90)}}


def run_section(name, quick=False):
    """(section dict, raw dict); a section that breaks is reported, not fatal."""
    module, title = SECTIONS[name]
    started = time.monotonic()
    try:
        sec, raw = importlib.import_module(module).run(**(QUICK[name] if quick else {}))
    except common.Skip as e:
        sec, raw = table.section(title, skipped=str(e)), {}
    except Exception as e:  # keep the other sections' figures
        traceback.print_exc()
        sec, raw = table.section(title, skipped="the benchmark broke: %s: %s"
                                 % (type(e).__name__, e)), {}
        sec["broke"] = True
    sec["seconds"] = round(time.monotonic() - started, 1)
    return sec, raw


def main(argv=None):
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0])
    parser.add_argument("--only", metavar="LIST", help="comma-separated sections (default: "
                        "all: %s)" % ",".join(SECTIONS))
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes: checks that every benchmark runs; figures meaningless")
    parser.add_argument("--out", default=os.path.join(common.BENCH, "results.json"),
                        metavar="FILE", help="where the JSON goes (default bench/results.json)")
    parser.add_argument("--markdown", action="store_true",
                        help="print the tables as markdown (README's \"Latest results\")")
    args = parser.parse_args(argv)
    names = list(SECTIONS)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in SECTIONS]
        if unknown or not names:
            parser.error("unknown section(s) %s; the sections are %s"
                         % (", ".join(unknown) or repr(args.only), ", ".join(SECTIONS)))
    info = machine()
    print("camagent benchmarks on %s (%d CPUs), Linux %s, load %s; MicroPython: %s"
          % (info["cpu"] or "?", info["cpus"] or 0, info["kernel"],
             " ".join("%.2f" % x for x in info["load_at_start"]), info["micropython"]
             or "not set (MICROPYTHON=...)"), flush=True)
    sections, raw = [], {}
    for name in names:
        print("running %s ..." % name, flush=True)
        sec, detail = run_section(name, args.quick)
        sec["key"] = name
        sections.append(sec)
        raw[name] = detail
    info["load_at_end"] = _load()
    results = {"version": 1, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": info,
               "quick": args.quick,
               "sections": sections, "raw": raw}
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    print(table.markdown(sections) if args.markdown else table.render(sections))
    missed = sum(1 for s in sections for f in s["figures"] if f["met"] is False)
    met = sum(1 for s in sections for f in s["figures"] if f["met"] is True)
    print("\ntargets: %d met, %d missed (goals, not assertions); load %s -> %s; results in %s"
          % (met, missed, " ".join("%.2f" % x for x in info["load_at_start"]),
             " ".join("%.2f" % x for x in info["load_at_end"]), args.out))
    broke = [s["key"] for s in sections if s.get("broke")]
    if broke:
        print("bench/run.py: the benchmark itself failed in: %s (traceback above)"
              % ", ".join(broke), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
