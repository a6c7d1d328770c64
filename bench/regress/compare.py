"""Compare a measurement with the baseline (pure: no training, no files).

Per method:
- backward_fraction and total_steps: realized work, exact. A change in either direction
  is a change in behaviour.
- train_cost: fails when it rose by more than the method's rel_rise. A method whose own
  code (its hooks, its search) got slower fails here; the rise is the slowdown
  of its training, steps included.
- speedup: fails when it fell by more than the method's rel_drop. Catches what train_cost
  cannot: steps that got dearer for this method only.
- acc_delta_points: fails when it fell by more than drop_points (other_cpu_points against
  another CPU model's baseline: a short run's accuracy is exact on one CPU model only).
The uniform reference gets the realized-work and train_cost checks (its speedup is 1 and
its accuracy change 0 by definition).

Each timing check also says the slowdown it detects: the tolerance plus 1.28 standard
errors of this measurement, the slowdown caught 9 times in 10.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from bench.regress.baseline import DEFAULT_TOLERANCES, TIMING, sigma_of_median, spread, tolerance

METRICS = ("backward_fraction", "total_steps", "train_cost", "speedup", "acc_delta_points")
NEW = "new (not in baseline; run --update)"


@dataclass
class Check:
    method: str
    metric: str
    baseline: float | None
    now: float | None
    change: str
    tolerance: str
    verdict: str
    failed: bool
    detectable: float | None = None  # slowdown (0.1 = 10%) this check catches 9 times in 10


def _finite(*xs) -> bool:
    return all(isinstance(x, (int, float)) and math.isfinite(x) for x in xs)


def detectable(metric: str, tol: float, samples_now: list[float], samples_base: list[float], rounds: int) -> float:
    """Smallest slowdown of the method's training this check fails on 9 times in 10."""
    sigma = sigma_of_median(max(spread(samples_now), spread(samples_base)), rounds)
    rel = tol + 1.28 * sigma
    if metric == "speedup":  # a slowdown s divides the speedup by 1 + s
        return rel / (1.0 - rel) if rel < 1 else math.inf
    return rel


def check_metric(method: str, metric: str, base: float, now: float, tolerances: dict, other_cpu: bool = False) -> Check:
    """One metric of one method against the baseline (made on another CPU model if other_cpu)."""
    fin = _finite(base, now)
    if metric == "backward_fraction":
        tol = tolerance(tolerances, method, metric, "abs")
        ok = fin and abs(now - base) <= tol
        return Check(method, metric, base, now, f"{now - base:+.3g}" if fin else "?", f"|change| <= {tol:g}",
                     "ok" if ok else "FAIL: realized work changed", not ok)
    if metric == "total_steps":
        ok = fin and now == base
        return Check(method, metric, base, now, f"{now - base:+g}" if fin else "?", "equal",
                     "ok" if ok else "FAIL: realized work changed", not ok)
    if metric == "train_cost":
        rel = tolerance(tolerances, method, metric, TIMING[metric])
        ok = fin and now <= base * (1.0 + rel)
        return Check(method, metric, base, now, f"{100 * (now / base - 1):+.1f}%" if fin and base else "?",
                     f"<= +{100 * rel:.1f}%", "ok" if ok else "FAIL: slower", not ok)
    if metric == "speedup":
        rel = tolerance(tolerances, method, metric, TIMING[metric])
        ok = fin and now >= base * (1.0 - rel)
        verdict = "ok" if ok else "FAIL: slower"
        if ok and now > base * (1.0 + rel):
            verdict = "ok (faster; --update to keep)"
        return Check(method, metric, base, now, f"{100 * (now / base - 1):+.1f}%" if fin and base else "?",
                     f">= -{100 * rel:.1f}%", verdict, not ok)
    if metric == "acc_delta_points":
        pts = tolerance(tolerances, method, metric, "other_cpu_points" if other_cpu else "drop_points")
        ok = fin and now >= base - pts
        return Check(method, metric, base, now, f"{now - base:+.2f} pt" if fin else "?", f">= -{pts:g} pt",
                     "ok" if ok else "FAIL: less accurate", not ok)
    raise ValueError(f"unknown metric {metric!r}")


def compare(baseline: dict, now: dict, tolerances: dict | None = None, other_cpu: bool = False) -> list[Check]:
    """Every check of a measurement `now` against `baseline` (both as written by `measure`).
    Tolerances: `tolerances`, else the baseline's, else the defaults."""
    tol = tolerances if tolerances is not None else baseline.get("tolerances", DEFAULT_TOLERANCES)
    base_m, now_m, errors = baseline.get("methods", {}), now.get("methods", {}), now.get("errors", {})
    out: list[Check] = []
    for method in sorted(set(base_m) | set(now_m) | set(errors)):
        if method in errors:
            out.append(Check(method, "-", None, None, "", "", f"FAIL: crashed: {errors[method]}", True))
        elif method not in now_m:
            out.append(Check(method, "-", None, None, "", "", "FAIL: missing (in baseline, not run now)", True))
        elif method not in base_m:
            out.append(Check(method, "-", None, None, "", "", NEW, False))
        else:
            is_ref = method in now.get("reference", {})
            for metric in METRICS:
                if is_ref and metric in ("speedup", "acc_delta_points"):
                    continue
                c = check_metric(method, metric, base_m[method][metric], now_m[method][metric], tol, other_cpu)
                if metric in TIMING:
                    c.detectable = detectable(metric, tolerance(tol, method, metric, TIMING[metric]),
                                              now_m[method].get("samples", {}).get(metric, []),
                                              base_m[method].get("samples", {}).get(metric, []),
                                              int(now.get("rounds", 1)))
                out.append(c)
    return out


def failed(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.failed]


def failed_timing(checks: list[Check]) -> set[str]:
    """Methods that failed only a timing check (worth measuring again)."""
    bad = {c.method for c in checks if c.failed and c.metric in TIMING}
    return bad - {c.method for c in checks if c.failed and c.metric not in TIMING}
