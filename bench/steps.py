"""Section 1: stepping speed, timing jitter and sysfs writes, agent against the floor.

Both axes step together through the agent's Camera and Loop on a fake sysfs on
tmpfs, on the wall clock; then a bare loop (the floor) writes the same coil
changes to the same files at the same rate, in the same process; the pair runs
REPEATS times per rate and the timed figures are the medians. Each
write is timestamped as it is made (the same wrapper for both), and the write(2)
calls are counted by the kernel (/proc/self/io syscw) over the stepping window.
A high acceleration keeps the ramp to a few steps, which are left out of the
timing figures.
"""
from common import ShmSysfs, percentile, runtimes
from table import figure, section

RATES = (500, 1000, 2000)
DURATION_S = 1.0         # per run; each rate runs REPEATS times for the agent and the floor
REPEATS = 3
ACCEL = 1000000          # half-steps/s^2: the ramp to 2000/s takes 3 steps
TARGET_RATE = 1000       # the rate the achieved/jitter targets are stated for


def analyse(run, rate):
    """Achieved rate, jitter percentiles and writes per half-step of one driver run."""
    interval = 1000000 // rate
    achieved = []
    deviations = []
    for axis in run["intervals"]:
        cruise = axis[run["skip"]:]
        if not cruise:
            continue
        achieved.append(len(cruise) * 1e6 / sum(cruise) / rate)
        deviations.extend(abs(d - interval) for d in cruise)
    return {"achieved": min(achieved) if achieved else None,
            "p50": percentile(deviations, 50) if deviations else None,
            "p99": percentile(deviations, 99) if deviations else None,
            "max": max(deviations) if deviations else None,
            "writes": run["writes"], "logged": run["logged"], "allocated": run["allocated"],
            "half_steps": run["half_steps"], "intervals": len(deviations)}


def median(values):
    values = sorted(v for v in values if v is not None)
    return values[len(values) // 2] if values else None


def combine(reps):
    """One figure set from the repeats: medians of the timed figures, sums of the counts."""
    out = dict((key, median(r[key] for r in reps)) for key in ("achieved", "p50", "p99", "max"))
    steps = sum(r["half_steps"] for r in reps)
    out["half_steps"] = steps
    out["intervals"] = sum(r["intervals"] for r in reps)
    for key in ("writes", "logged", "allocated"):
        total = [r[key] for r in reps]
        out[key + "_per_half_step"] = None if None in total else float(sum(total)) / steps
    out["repeats"] = [dict((k, r[k]) for k in ("achieved", "p50", "p99", "max")) for r in reps]
    return out


def run(rates=RATES, duration_s=DURATION_S, repeats=REPEATS):
    figures, notes, raw = [], [], {}
    for rt, why in runtimes():
        if rt is None:
            notes.append("%s: skipped: %s" % ("MicroPython", why))
            raw["MicroPython"] = {"skipped": why}
            continue
        with ShmSysfs() as fs:
            result = rt.driver("steps", {"gpio_root": fs.gpio_root, "state_dir": fs.state_dir,
                                         "rates": list(rates), "duration_s": duration_s,
                                         "accel": ACCEL, "repeats": repeats})
        raw[rt.name] = []
        for rate in rates:
            reps = [r for r in result["runs"] if r["rate"] == rate]
            a = combine([analyse(r["agent"], rate) for r in reps])
            f = combine([analyse(r["floor"], rate) for r in reps])
            raw[rt.name].append({"rate": rate, "agent": a, "floor": f})
            at_target = rate == TARGET_RATE
            label = "%s %d/s" % (rt.name, rate)
            figures.append(figure(label + " achieved/commanded", a["achieved"], "",
                                  f["achieved"], "floor", (">=", 0.99) if at_target else None))
            figures.append(figure(label + " jitter p50", a["p50"], "us", f["p50"], "floor"))
            figures.append(figure(label + " jitter p99", a["p99"], "us", f["p99"], "floor",
                                  ("<=", 200) if at_target else None))
            figures.append(figure(label + " value writes/half-step", a["writes_per_half_step"],
                                  "", f["writes_per_half_step"], "floor", ("==", 1.0)))
            if a["allocated_per_half_step"] is not None:
                figures.append(figure(label + " heap bytes allocated/half-step",
                                      a["allocated_per_half_step"], "B",
                                      f["allocated_per_half_step"], "floor"))
    notes.append("both axes step together, agent and floor alternately, %d x %.1f s each per "
                 "rate; timed figures are the median of the %d runs, counts their sum" %
                 (repeats, duration_s, repeats))
    notes.append("jitter = |step interval - commanded interval| over both axes, ramp steps "
                 "left out; achieved = the slower axis; writes = write(2) calls counted by the "
                 "kernel (/proc/self/io syscw) over the stepping window / half-steps of both "
                 "axes; allocated = MicroPython's micropython.mem_total() over the same window")
    return section("Steps (fake sysfs on tmpfs, wall clock)", figures, notes), raw
