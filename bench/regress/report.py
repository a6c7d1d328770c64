"""What the guard prints: the table of checks and the notes on the measurement."""
from __future__ import annotations

import math

from bench.regress.compare import Check


def _fmt(metric: str, v: float | None) -> str:
    if v is None:
        return "-"
    if metric == "backward_fraction":
        return f"{v:.6f}"
    if metric == "total_steps":
        return f"{v:g}"
    if metric in ("speedup", "train_cost"):
        return f"{v:.3f}x"
    return f"{v:+.2f} pt"


def _detects(c: Check) -> str:
    if c.detectable is None:
        return ""
    return f"+{100 * c.detectable:.0f}%" if math.isfinite(c.detectable) else "never"


def table(checks: list[Check]) -> str:
    head = ("method", "metric", "baseline", "now", "change", "tolerance", "detects", "verdict")
    rows = [(c.method, c.metric, _fmt(c.metric, c.baseline), _fmt(c.metric, c.now), c.change, c.tolerance,
             _detects(c), c.verdict) for c in checks]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    line = lambda r: "  ".join(s.ljust(w) for s, w in zip(r, widths)).rstrip()  # noqa: E731
    legend = ("detects: the slowdown of the method's training that this check fails on 9 times in 10, "
              "from the tolerance and this run's spread")
    return "\n".join([line(head), line(tuple("-" * w for w in widths)), *(line(r) for r in rows), legend])


def detectable_summary(checks: list[Check]) -> str:
    """One line: per method, the smallest slowdown any of its timing checks catches."""
    best: dict[str, float] = {}
    for c in checks:
        if c.detectable is not None:
            best[c.method] = min(best.get(c.method, math.inf), c.detectable)
    return "detectable slowdown: " + ", ".join(f"{m} {100 * d:.0f}%" for m, d in sorted(best.items()))


def warnings(baseline: dict, now: dict) -> list[str]:
    out = []
    if baseline.get("suite") != now["suite"]:
        out.append(f"baseline was made with suite {baseline.get('suite')!r}, this run used {now['suite']!r}")
    if baseline.get("hardware") != now["hardware"] or baseline.get("torch") != now["torch"]:
        out.append(f"baseline hardware/torch {baseline.get('hardware')} / torch {baseline.get('torch')} differ from "
                   f"this machine's {now['hardware']} / torch {now['torch']}: CPU-time ratios differ between CPUs and "
                   "torch versions; --update on the CI machine")
    changed = [m for m, row in now["methods"].items()
               if m in baseline.get("methods", {}) and baseline["methods"][m].get("config_key") not in (None, row["config_key"])]
    if changed:
        out.append(f"cell settings changed since the baseline for {', '.join(changed)} (suite edited?): run --update")
    shaky = [m for m, row in now["methods"].items() if not row.get("deterministic", True)]
    if shaky:
        out.append(f"accuracy or realized work differed between identical runs of {', '.join(shaky)}: "
                   "CPU training is not deterministic here")
    for m, row in now["methods"].items():
        if "remeasured" in row:
            r = row["remeasured"]
            out.append(f"{m} re-measured after a timing check failed: train_cost {r['train_cost'][0]:.3f}x then "
                       f"{r['train_cost'][1]:.3f}x, speedup {r['speedup'][0]:.3f}x then {r['speedup'][1]:.3f}x; "
                       "the better of each counts")
    return out
