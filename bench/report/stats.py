"""Statistics over seeds: bootstrap intervals, pairs of runs by seed, time to a target."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

N_RESAMPLES = 2000
CI_LEVEL = 0.95
RNG_SEED = 0


@dataclass(frozen=True)
class Estimate:
    """A mean over seeds with its 95% percentile-bootstrap interval; `n` values went in."""

    value: float
    low: float
    high: float
    n: int

    def contains(self, x: float) -> bool:
        return self.n > 1 and self.low - 1e-12 <= x <= self.high + 1e-12


NONE = Estimate(float("nan"), float("nan"), float("nan"), 0)


def bootstrap_ci(values: Sequence[float], n_resamples: int = N_RESAMPLES, level: float = CI_LEVEL,
                 seed: int = RNG_SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean; one value: (value, value); none: (nan, nan)."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    if len(v) == 1:
        return float(v[0]), float(v[0])
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_resamples, len(v)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def estimate(values: Sequence[float]) -> Estimate:
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return NONE
    lo, hi = bootstrap_ci(v)
    return Estimate(float(v.mean()), lo, hi, len(v))


def pairs(reference: pd.DataFrame, method: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(reference, method) values of `column` for the seeds both have, in seed order."""
    if column not in reference or column not in method:
        return np.array([]), np.array([])
    ref, other = reference.groupby("seed")[column].mean(), method.groupby("seed")[column].mean()
    seeds = sorted(set(ref.index) & set(other.index))
    return ref[seeds].to_numpy(dtype=float), other[seeds].to_numpy(dtype=float)


def ratios(reference: pd.DataFrame, method: pd.DataFrame, column: str) -> np.ndarray:
    """Per seed: reference / method (a speedup when `column` is a time); unusable pairs left out."""
    ref, other = pairs(reference, method, column)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = ref / other
    return r[(other > 0) & np.isfinite(r)]


def paired_speedup(reference: pd.DataFrame, method: pd.DataFrame, column: str) -> tuple[float, int]:
    """Mean over seeds of reference time / method time, over the seeds both have: (mean, pairs)."""
    r = ratios(reference, method, column)
    return (float(r.mean()) if len(r) else float("nan")), len(r)


def speedup_estimate(reference: pd.DataFrame, method: pd.DataFrame, column: str) -> Estimate:
    """Paired speedup with a bootstrap interval over seed pairs."""
    return estimate(ratios(reference, method, column))


def difference_estimate(reference: pd.DataFrame, method: pd.DataFrame, column: str, scale: float = 1.0) -> Estimate:
    """Mean over shared seeds of (method - reference) * scale, with a bootstrap interval over seed pairs."""
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
