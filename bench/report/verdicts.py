"""Verdicts: each method row against its two random controls, decided at a stated level.

For every method row and each of its controls the paired test-accuracy difference over seeds
gets a two-sided one-sample t-test; the p-values of all the table's comparisons are corrected
together with Holm's step-down method (family-wise error ALPHA). A comparison is
- "beat" / "lost": Holm-adjusted p < ALPHA (the sign of the mean difference says which);
- "tied": not that, and the 95% t interval lies inside +-TIE_MARGIN points;
- "undecided (n too small)": neither: the interval is too wide to tell;
- "no verdict": fewer than two seed pairs, or a row that did not train (at chance).

Frontier verdicts (suites with several drop ratios): each method point against the random
subset's curve through (work, accuracy), interpolated per seed at the point's own work, the
same test and correction over the frontier table: "above", "on" (tied), "below", "undecided"; a
point with a seed at chance gets none ("did not train") and stays out of the correction.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from bench.report import stats
from bench.report.metrics import nan, untrained_seeds

TIE_MARGIN = 1.0  # points: a difference whose whole interval is inside +-1 point is a tie
KINDS = {"selection": "acc_vs_selection_pts", "cost": "acc_vs_cost_pts"}
RULE = (f"beat/lost: paired t-test over seeds, Holm-adjusted p < {stats.ALPHA} across all of this table's "
        f"comparisons; tied: the {stats.INTERVAL} lies inside ±{TIE_MARGIN:g} pts; otherwise undecided (n too small)")


def word(d: float, lo: float, hi: float, n: int, p_adj: float, trained: bool = True,
         up: str = "beat", down: str = "lost to", tie: str = "tied") -> str:
    if not trained:
        return "no verdict (did not train)"
    if nan(d) or n < 2:
        return "no verdict (one seed)" if n == 1 else "no verdict"
    if not nan(p_adj) and p_adj < stats.ALPHA:
        return up if d > 0 else down
    if -TIE_MARGIN <= lo and hi <= TIE_MARGIN:
        return tie
    return "undecided (n too small)"


def is_method_row(r) -> bool:
    return r["method"] not in ("uniform", "random_subset") and not r["control_of"]


def add_verdicts(s: pd.DataFrame) -> pd.DataFrame:
    """The summary with p_holm_<kind> and verdict_<kind> for every method row and control kind."""
    s = s.copy()
    tests = []  # (row index, kind, p)
    for i, r in s.iterrows():
        if not is_method_row(r) or "did not train" in str(r.get("notes") or ""):
            continue
        for kind, col in KINDS.items():
            if col in s and not nan(r.get(col)) and int(r.get(f"{col}_n", 0) or 0) > 1:
                tests.append((i, kind, r[f"{col}_p"]))
    adjusted = stats.holm([p for _, _, p in tests])
    for kind in KINDS:
        s[f"p_holm_{kind}"] = np.nan
        s[f"verdict_{kind}"] = ""
    for (i, kind, _), p in zip(tests, adjusted):
        s.at[i, f"p_holm_{kind}"] = p
    for i, r in s.iterrows():
        if not is_method_row(r):
            continue
        trained = "did not train" not in str(r.get("notes") or "")
        for kind, col in KINDS.items():
            if col not in s or nan(r.get(col)):
                continue
            s.at[i, f"verdict_{kind}"] = word(r[col], r[f"{col}_ci_low"], r[f"{col}_ci_high"], int(r[f"{col}_n"]),
                                              s.at[i, f"p_holm_{kind}"], trained)
    s.attrs["comparisons"] = len(tests)
    return s


# -- the frontier


def _curve(random_runs: pd.DataFrame, ref: pd.DataFrame, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random's (work, accuracy) points of one seed, uniform's (work 1) included, sorted by work."""
    pts = [(r.work_fraction, r.final_test_acc) for r in random_runs[random_runs["seed"] == seed].itertuples()]
    pts += [(1.0, r.final_test_acc) for r in ref[ref["seed"] == seed].itertuples()]
    pts = sorted(p for p in pts if np.isfinite(p[0]) and np.isfinite(p[1]))
    return np.array([p[0] for p in pts]), np.array([p[1] for p in pts])


def frontier(runs: pd.DataFrame, setting_runs: pd.DataFrame) -> pd.DataFrame:
    """Per method point (method, variant, drop) of one setting: its mean work and the paired difference in
    test accuracy (points) against random's curve at that work, per seed, with its t interval and p."""
    main = setting_runs[setting_runs["control_of"].fillna("") == ""]
    ref = main[main["method"] == "uniform"]
    rnd = main[main["method"] == "random_subset"]
    rows = []
    for (method, variant, drop), g in main[~main["method"].isin(["uniform", "random_subset"])].groupby(
            ["method", "variant", "drop"]):
        diffs, outside = [], 0
        for r in g.itertuples():
            x, y = _curve(rnd, ref, r.seed)
            if len(x) < 2 or not np.isfinite(r.work_fraction):
                continue
            if not x[0] <= r.work_fraction <= x[-1]:
                outside += 1
                continue
            diffs.append(100 * (r.final_test_acc - np.interp(r.work_fraction, x, y)))
        e = stats.estimate(diffs)
        rows.append({"method": method, "variant": variant, "drop": drop, "work": float(g["work_fraction"].mean()),
                     "acc": float(100 * g["final_test_acc"].mean()), "diff": e.value, "low": e.low, "high": e.high,
                     "n": e.n, "ahead": e.ahead, "p": e.p, "outside": outside, "untrained": untrained_seeds(g), "seeds": len(g)})
    return pd.DataFrame(rows)


def frontier_words(f: pd.DataFrame) -> pd.DataFrame:
    f = f.copy()
    trained = f["untrained"] == 0 if "untrained" in f else pd.Series(True, index=f.index)
    f["p_holm"] = stats.holm(f["p"].where((f["n"] > 1) & trained).tolist()) if len(f) else []
    f["verdict"] = [f"did not train in {int(r.untrained)} of {int(r.seeds)} seeds: no verdict" if not ok else
                    word(r.diff, r.low, r.high, int(r.n), r.p_holm, up="above", down="below", tie="on")
                    if r.n else "outside random's range" for r, ok in zip(f.itertuples(), trained)]
    return f
