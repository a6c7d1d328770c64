"""The summary's columns, each defined once.

A `Metric` holds its summary.csv column(s), how a table row computes it from its
runs (a `Group`), its markdown header and cell text, and the one line the legend
prints for it. FINAL_METRICS (what `collect` reads from a run), SUMMARY_COLUMNS,
`summary()`, the markdown table and its legend all come from METRICS. Adding a
column is one `register_metric(Metric(...))`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from bench.report import stats
from bench.report.stats import Estimate
from bench.suite import REFERENCE

CONTENTION = 1.3  # per-sample forward time this many times uniform's (or 1/x): measured under contention


@dataclass
class Group:
    """One table row's runs, with what it is compared against."""

    key: dict[str, Any]  # hardware, model, dataset, ..., method, variant, control_of, control_kind, drop
    runs: pd.DataFrame  # this row's runs, one per seed
    ref: pd.DataFrame  # uniform's runs in the same setting and hardware (may be empty)
    control: pd.DataFrame  # the selection control's runs (empty when none was run)
    cost: pd.DataFrame  # the cost control's runs (empty when none was run, or when the selection control is one)
    targets: dict[str, float] = field(default_factory=dict)  # target name -> validation accuracy (fraction)
    paper: dict = field(default_factory=dict)

    @property
    def is_reference(self) -> bool:
        return self.key["method"] == REFERENCE and not self.key.get("control_of")

    def mean(self, column: str) -> float:
        v = self.runs[column].to_numpy(dtype=float) if column in self.runs else np.array([])
        v = v[~np.isnan(v)]
        return float(v.mean()) if len(v) else float("nan")


@dataclass(frozen=True)
class Metric:
    name: str  # summary.csv column; an interval adds name_ci_low, name_ci_high, name_n
    header: str  # markdown column header
    legend: str  # one line: exactly what the column counts
    compute: Callable[[Group], Any]  # a value, an Estimate (interval=True) or a dict of `columns`
    cell: Callable[[pd.Series], str]  # markdown text, from the summary row
    reads: tuple[str, ...] = ()  # final run metrics it needs (read by collect, kept in runs.csv)
    interval: bool = False
    columns: tuple[str, ...] = ()  # several plain columns (compute returns a dict)
    optional: bool = False  # left out of the markdown when no row has a value
    table: bool = True  # False: summary.csv only

    def csv_columns(self) -> tuple[str, ...]:
        if self.columns:
            return self.columns
        if self.interval:
            return tuple(f"{self.name}{x}" for x in ("", "_ci_low", "_ci_high", "_n", "_ahead", "_p"))
        return (self.name,)

    def values(self, g: Group) -> dict[str, Any]:
        v = self.compute(g)
        if isinstance(v, Estimate):
            return dict(zip(self.csv_columns(), (v.value, v.low, v.high, v.n, v.ahead, v.p)))
        if isinstance(v, dict):
            return {c: v.get(c, float("nan")) for c in self.csv_columns()}
        return {self.name: v}


METRICS: list[Metric] = []


def register_metric(m: Metric) -> Metric:
    if any(x.name == m.name for x in METRICS):
        raise ValueError(f"metric {m.name!r} is registered twice")
    METRICS.append(m)
    return m


def run_metric_names() -> tuple[str, ...]:
    """Run metrics `collect` reads, in the order the metrics first need them."""
    return tuple(dict.fromkeys(r for m in METRICS for r in m.reads))


def summary_columns() -> list[str]:
    return [c for m in METRICS for c in m.csv_columns()]


# -- cell text


def is_reference(r: pd.Series) -> bool:
    return r["method"] == REFERENCE and not r.get("control_of")


def is_control(r) -> bool:
    return bool(r.get("control_of"))


def nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def fmt(x, spec: str, none: str = "–") -> str:
    return none if nan(x) else format(x, spec)


def plain(name: str, spec: str) -> Callable[[pd.Series], str]:
    return lambda r: fmt(r[name], spec)


def speedup_cell(name: str) -> Callable[[pd.Series], str]:
    """'1.05× (0.93–1.18, ~1)': geometric mean and t interval over seed pairs; '~1' when it contains 1."""

    def cell(r: pd.Series) -> str:
        if is_reference(r):
            return "ref"
        v, lo, hi, n = r[name], r[f"{name}_ci_low"], r[f"{name}_ci_high"], r[f"{name}_n"]
        if nan(v):
            return "–"
        if int(n) < 2:
            return f"{v:.2f}× (1 seed)"
        near = ", ~1" if lo - 1e-12 <= 1.0 <= hi + 1e-12 else ""
        return f"{v:.2f}× ({lo:.2f}–{hi:.2f}{near})"

    return cell


def difference_cell(name: str, ahead: bool = True) -> Callable[[pd.Series], str]:
    """'+0.99 (+0.70 to +1.28) 5/5': mean, t interval over seed pairs and how many seeds are ahead."""

    def cell(r: pd.Series) -> str:
        if is_reference(r) and name == "acc_change_pts":
            return "ref"
        v, lo, hi, n = r[name], r[f"{name}_ci_low"], r[f"{name}_ci_high"], r[f"{name}_n"]
        if nan(v):
            return "–"
        if int(n) < 2:
            return f"{v:+.2f} (1 seed)"
        k = f" {int(r[f'{name}_ahead'])}/{int(n)}" if ahead and f"{name}_ahead" in r else ""
        return f"{v:+.2f} ({lo:+.2f} to {hi:+.2f}){k}"

    return cell


def mean_of(column: str, header: str, spec: str, legend: str, **kw) -> Metric:
    """A column that is the mean over seeds of one final run metric."""
    return Metric(column, header, legend, lambda g: g.mean(column), plain(column, spec), reads=(column,), **kw)


# -- per-sample times, relative to uniform's


def _per_sample(runs: pd.DataFrame, seconds: list[str], count: str) -> float:
    if runs.empty or count not in runs or any(s not in runs for s in seconds):
        return float("nan")
    per = runs[seconds].sum(axis=1, min_count=len(seconds)) / runs[count].where(runs[count] > 0)
    return float(per.mean())


def relative_to_uniform(seconds: list[str], count: str) -> Callable[[Group], float]:
    return lambda g: _per_sample(g.runs, seconds, count) / _per_sample(g.ref, seconds, count)


STEP_STAGES = ["stage_forward_seconds", "stage_backward_seconds", "stage_optimizer_seconds"]
FORWARD_STAGE = ["stage_forward_seconds"]


# -- notes: what a reader must know before trusting a row


def speedup_efficiency(g: Group, column: str = "train_seconds") -> float:
    """Per seed pair: measured train speedup x train_work_fraction (= speedup / ideal speedup); the work
    fraction is over the compared row's epochs, so a control that ran more epochs is judged on its real work.
    `column`: the time read (train seconds, or train time in reference steps: bench/meter.py)."""
    if g.ref.empty or "train_work_fraction" not in g.runs:
        return float("nan")
    runs = g.runs
    if "own_epochs" in runs and "epochs" in runs:  # a cost control given more epochs than the row it controls
        runs = runs.assign(train_work_fraction=runs["train_work_fraction"] * runs["own_epochs"] / runs["epochs"])
    ref, m = stats.pairs(g.ref, runs, column)
    if not len(ref):
        return float("nan")
    _, twf = stats.pairs(g.ref, runs, "train_work_fraction")
    with np.errstate(divide="ignore", invalid="ignore"):
        e = ref / m * twf
    e = e[np.isfinite(e)]
    return float(e.mean()) if len(e) else float("nan")


METERED = "train_metered_steps"
# The meter reads the pace once per 100 reference steps of train time (bench/meter.py), each reading a
# sample of about a second. Where uniform trains for fewer than 500 reference steps a cell gets one to
# five readings, too few to average the pace over it: MR cells metered on a full MiniLM batch (about 110
# steps, one reading) spread 9% over seeds against 5% raw. There the raw clock is the one used.
METER_MIN_STEPS = 500


def meter_holds(g: Group) -> bool:
    """Whether this setting's runs were metered often enough for the metered clock to be the one read."""
    if METERED not in g.ref or METERED not in g.runs:
        return False
    steps = g.ref[METERED].to_numpy(dtype=float)
    steps = steps[~np.isnan(steps)]
    return bool(len(steps)) and float(steps.mean()) >= METER_MIN_STEPS


def metered_efficiency(g: Group) -> float:
    return speedup_efficiency(g, METERED) if meter_holds(g) else float("nan")


EFFICIENCY_FLOOR = 0.85  # below it a row names the stage that eats the rest of its ideal speedup
EFFICIENCY_CEILING = 1.05  # above it the clock or the cost weights are off: a measurement problem
CHANCE_MARGIN = 0.03  # a run within 3 points of its test set's majority-class share did not train


def untrained_seeds(runs: pd.DataFrame) -> int:
    """Runs whose test accuracy is within CHANCE_MARGIN of the majority class's share (or of chance)."""
    if "chance_acc" not in runs or runs.empty:
        return 0
    return int((runs["final_test_acc"] < runs["chance_acc"] + CHANCE_MARGIN).sum())


def _likely_cause(runs: pd.DataFrame) -> str:
    """What the runs at chance show: a training loss that never fell, or one that fell on batches that did not
    carry over to the test set (a selection skewed to some samples or classes)."""
    at_chance = runs[runs["final_test_acc"] < runs["chance_acc"] + CHANCE_MARGIN]
    first = [h[0] for h in at_chance.get("hist_train_loss", []) if isinstance(h, list) and h]
    last = [h[-1] for h in at_chance.get("hist_train_loss", []) if isinstance(h, list) and h]
    if not last:
        return "likely cause unknown (no training-loss history)"
    if np.nanmean(last) >= 0.9 * np.nanmean(first):
        return f"likely cause: its training loss never fell (epoch 1 {np.nanmean(first):.2f}, last {np.nanmean(last):.2f})"
    return (f"likely cause: its training loss fell ({np.nanmean(first):.2f} to {np.nanmean(last):.2f}) on batches that do "
            "not carry over to the test set (a selection skewed to some samples or classes)")


def notes(g: Group) -> str:
    out = []
    bad = untrained_seeds(g.runs)
    if bad:
        out.append(f"did not train in {bad} of {len(g.runs)} seeds (test accuracy within "
                   f"{100 * CHANCE_MARGIN:.0f} pts of the majority class): no verdict; {_likely_cause(g.runs)}")
    share = g.mean("active_share")
    if not nan(share) and share == 0:
        out.append("mechanism never on (active share 0)")
    fwd = relative_to_uniform(FORWARD_STAGE, "total_forwards")(g)
    if not nan(fwd) and (fwd > CONTENTION or fwd < 1 / CONTENTION):
        out.append(f"measured under contention (forward time per sample {fwd:.2f}× uniform's)")
    eff, metered = speedup_efficiency(g), metered_efficiency(g)
    if not nan(metered):  # where the run was metered (a shared CPU), its metered speedup is the one judged
        eff, what = metered, "metered speedup efficiency"
    else:
        what = "speedup efficiency"
    if not nan(eff) and eff > EFFICIENCY_CEILING and not g.ref.empty:
        out.append(f"{what} {eff:.2f} > {EFFICIENCY_CEILING}: faster than its work allows, a measurement "
                   "problem (clock or pass-cost weights)")
    if not nan(eff) and eff < EFFICIENCY_FLOOR and not g.ref.empty:
        def stage_share(runs, stage):
            col = f"stage_{stage}_seconds"
            return float((runs[col] / runs["train_seconds"]).mean()) if col in runs else 0.0

        stages = [k[6:-8] for k in g.runs.columns if k.startswith("stage_") and k.endswith("_seconds")
                  and k not in ("stage_evaluation_seconds", "stage_search_seconds")]
        if stages:
            worst = max(stages, key=lambda k: stage_share(g.runs, k) - stage_share(g.ref, k))
            out.append(f"{what} {eff:.2f} < {EFFICIENCY_FLOOR}: its {worst} stage takes "
                       f"{stage_share(g.runs, worst):.0%} of its train time (uniform's: {stage_share(g.ref, worst):.0%})")
    steps = g.mean("plan_step_error")
    if not nan(steps) and abs(steps) > 0.05:
        out.append(f"took {100 * steps:+.0f}% optimizer steps against the plan its LR schedule was made for")
    return "; ".join(out)
