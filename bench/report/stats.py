"""Statistics over seeds: intervals valid at small n, paired comparisons, Holm's correction,
time to a target.

Every comparison pairs runs by seed. A mean over n seeds gets a Student-t interval
(scipy.stats): the mean difference of paired runs, or, for a speedup (a ratio), the mean of
the log ratios, shown as a geometric mean. A percentile bootstrap is not used: with 3 seeds
it returns the range of the values whatever the level. Verdicts rest on the paired t-test's
p-value after Holm's step-down correction over all the verdicts of a table.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

LEVEL = 0.95
ALPHA = 0.05  # family-wise error rate of a table's verdicts (Holm)
INTERVAL = "95% Student-t interval over seeds"


@dataclass(frozen=True)
class Estimate:
    """A mean over seeds with its t interval; `n` values went in, `ahead` of them above `null`,
    `p` the two-sided one-sample t-test's p-value against `null` (nan below 2 values)."""

    value: float
    low: float
    high: float
    n: int
    ahead: int = 0
    p: float = float("nan")

    def contains(self, x: float) -> bool:
        return self.n > 1 and self.low - 1e-12 <= x <= self.high + 1e-12


NONE = Estimate(float("nan"), float("nan"), float("nan"), 0)


def _clean(values: Sequence[float]) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    return v[np.isfinite(v)]


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """Student-t interval of the mean; one value: (value, value); none: (nan, nan); no spread: a point."""
    v = _clean(values)
    if len(v) == 0:
        return float("nan"), float("nan")
    if len(v) == 1 or np.all(v == v[0]):
        return float(v[0]), float(v[0])
    lo, hi = sps.t.interval(level, len(v) - 1, loc=v.mean(), scale=sps.sem(v))
    return float(lo), float(hi)


def estimate(values: Sequence[float], null: float = 0.0) -> Estimate:
    """Mean, t interval, how many values lie above `null`, and the t-test's p-value against it."""
    v = _clean(values)
    if len(v) == 0:
        return NONE
    lo, hi = t_interval(v)
    p = float("nan")
    if len(v) > 1:
        p = 1.0 if np.all(v == v[0]) and v[0] == null else float(sps.ttest_1samp(v, null).pvalue)
        if math.isnan(p):  # no spread: the values are all one number, not null
            p = 0.0
    return Estimate(float(v.mean()), lo, hi, len(v), int((v > null).sum()), p)


def ratio_estimate(ratios: Sequence[float]) -> Estimate:
    """Geometric mean of ratios with the t interval of their logs (a speedup, paired by seed)."""
    r = _clean(ratios)
    r = r[r > 0]
    if len(r) == 0:
        return NONE
    e = estimate(np.log(r))
    return Estimate(math.exp(e.value), math.exp(e.low), math.exp(e.high), e.n, e.ahead, e.p)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (nan stays nan): reject where adjusted p < alpha keeps the
    family-wise error rate at alpha over all of them."""
    p = np.asarray(pvalues, dtype=float)
    ok = np.flatnonzero(np.isfinite(p))
    out = np.full(len(p), np.nan)
    m = len(ok)
    running = 0.0
    for rank, i in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def pairs(reference: pd.DataFrame, method: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(reference, method) values of `column` for the seeds both have, in seed order."""
    if column not in reference or column not in method:
        return np.array([]), np.array([])
    ref, other = reference.groupby("seed")[column].mean(), method.groupby("seed")[column].mean()
    seeds = sorted(set(ref.index) & set(other.index))
    return ref[seeds].to_numpy(dtype=float), other[seeds].to_numpy(dtype=float)


def speedup_estimate(reference: pd.DataFrame, method: pd.DataFrame, column: str) -> Estimate:
    """Reference time / method time, paired by seed: geometric mean with its t interval."""
    ref, other = pairs(reference, method, column)
    with np.errstate(divide="ignore", invalid="ignore"):
        return ratio_estimate(ref / other)


def difference_estimate(reference: pd.DataFrame, method: pd.DataFrame, column: str, scale: float = 1.0) -> Estimate:
    """Mean over shared seeds of (method - reference) * scale, with its t interval and p-value."""
    ref, other = pairs(reference, method, column)
    return estimate(scale * (other - ref))


def time_to_target(val_acc: Sequence[float], seconds: Sequence[float], target: float) -> float:
    """Seconds at the first point whose validation accuracy reaches `target`; nan if none does."""
    if target is None or math.isnan(target):
        return float("nan")
    for acc, sec in zip(val_acc, seconds):
        if acc >= target - 1e-12:
            return float(sec)
    return float("nan")
