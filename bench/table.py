"""Figures, their targets, and the printed table.

A figure is a dict, the unit of bench/results.json:
  {"name", "unit", "value", "baseline", "baseline_name", "ratio", "target", "met"}
`target` is a short text such as ">= 0.99" or "ratio <= 0.5"; `met` is True, False
or None (no target). Targets are goals printed beside the figures, never assertions.
"""

_OPS = {"<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b,
        "==": lambda a, b: abs(a - b) < 1e-9, "<": lambda a, b: a < b}


def figure(name, value, unit="", baseline=None, baseline_name=None, target=None):
    """A figure; `target` is (op, limit) on the value or ("ratio", op, limit) on the ratio."""
    ratio = None
    if value is not None and baseline not in (None, 0):
        ratio = value / baseline
    fig = {"name": name, "unit": unit, "value": value, "baseline": baseline,
           "baseline_name": baseline_name, "ratio": ratio, "target": None, "met": None}
    if target:
        on_ratio = target[0] == "ratio"
        op, limit = target[-2:]
        subject = ratio if on_ratio else value
        fig["target"] = "%s%s %s" % ("ratio " if on_ratio else "", op, _num(limit))
        if subject is not None:
            fig["met"] = bool(_OPS[op](subject, limit))
    return fig


def section(title, figures=None, notes=None, skipped=None):
    return {"title": title, "status": "skipped" if skipped else "ok", "reason": skipped,
            "figures": figures or [], "notes": notes or []}


def _num(x):
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return "%.0f" % x
    if abs(x) >= 10:
        return "%.1f" % x
    if abs(x) >= 1:
        return "%.3f" % x
    return "%.4f" % x


def _cell(value, unit):
    if value is None:
        return "-"
    text = _num(value)
    return text + (" " + unit if unit else "")


def render(sections):
    """The whole report as text: one block per section, one row per figure."""
    header = ("figure", "measured", "baseline", "ratio", "target", "")
    out = []
    for sec in sections:
        out.append("")
        out.append("== %s" % sec["title"])
        if sec["status"] == "skipped":
            out.append("   skipped: %s" % sec["reason"])
            continue
        rows = [header]
        for f in sec["figures"]:
            base = _cell(f["baseline"], f["unit"])
            if f["baseline"] is not None and f.get("baseline_name"):
                base = "%s (%s)" % (base, f["baseline_name"])
            met = {True: "ok", False: "MISS", None: ""}[f["met"]]
            rows.append((f["name"], _cell(f["value"], f["unit"]), base,
                         _num(f["ratio"]) if f["ratio"] is not None else "-",
                         f["target"] or "", met))
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        for r in rows:
            out.append("   " + "  ".join(c.ljust(w) if i in (0, 2, 4, 5) else c.rjust(w)
                                         for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        for note in sec["notes"]:
            out.append("   note: %s" % note)
    return "\n".join(out)


def markdown(sections):
    """The same figures as markdown, one table per section (for the README's "Latest results")."""
    out = []
    for sec in sections:
        out.append("**%s**" % sec["title"])
        out.append("")
        if sec["status"] == "skipped":
            out.append("skipped: %s" % sec["reason"])
            out.append("")
            continue
        out.append("| figure | measured | baseline | ratio | target | |")
        out.append("|---|---:|---|---:|---|---|")
        for f in sec["figures"]:
            base = _cell(f["baseline"], f["unit"])
            if f["baseline"] is not None and f.get("baseline_name"):
                base = "%s (%s)" % (base, f["baseline_name"])
            out.append("| %s | %s | %s | %s | %s | %s |" % (
                f["name"], _cell(f["value"], f["unit"]), base,
                _num(f["ratio"]) if f["ratio"] is not None else "-", f["target"] or "",
                {True: "ok", False: "**miss**", None: ""}[f["met"]]))
        out.append("")
    return "\n".join(out)
