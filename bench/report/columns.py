"""Every column of the summary, in table order: one `register_metric` each."""
from __future__ import annotations

import json

import numpy as np

from bench.report import stats
from bench.report.metrics import (
    CONTENTION, EFFICIENCY_CEILING, EFFICIENCY_FLOOR, FORWARD_STAGE, STEP_STAGES, Group, Metric, difference_cell,
    meter_holds, metered_efficiency, mean_of, nan, notes, plain, register_metric, relative_to_uniform, speedup_cell,
    speedup_efficiency,
)
from bench.report.stats import Estimate

# Time-to-target targets, per setting: name -> how the table names it.
TARGETS = {
    "near": "uniform's median final validation accuracy minus the suite's target_offset points",
    "far": "uniform's median final validation accuracy minus 2 points",
    "paper": "the paper's own target (results/paper/*.yaml `targets:`), where it gives one",
}
FAR_OFFSET = 2.0


def _test_acc(g: Group) -> dict:
    acc = g.runs["final_test_acc"].to_numpy(dtype=float)
    lo, hi = stats.t_interval(acc)
    return {"test_acc_mean": float(np.nanmean(acc)) if len(acc) else float("nan"),
            "test_acc_std": float(np.std(acc, ddof=1)) if len(acc) > 1 else float("nan"),
            "test_acc_ci_low": lo, "test_acc_ci_high": hi}


def _test_acc_cell(r) -> str:
    if nan(r["test_acc_mean"]):
        return "–"
    text = f"{100 * r['test_acc_mean']:.2f}"
    if not nan(r["test_acc_std"]):
        text += f" ± {100 * r['test_acc_std']:.2f} [{100 * r['test_acc_ci_low']:.2f}, {100 * r['test_acc_ci_high']:.2f}]"
    return text


def _vs(g: Group, against, column: str, scale: float = 1.0, speedup: bool = False) -> Estimate:
    if against.empty:
        return stats.NONE
    if speedup:
        return stats.speedup_estimate(against, g.runs, column)
    return stats.difference_estimate(against, g.runs, column, scale)


def _cost_work_ratio(g: Group) -> float:
    """The cost control's work over this row's, in this row's measured pass costs, mean over seeds: the
    control does training passes only, so its work is its backwards x (forward + backward)."""
    if g.cost.empty or "work_fraction" not in g.runs:
        return float("nan")
    own = g.runs.set_index("seed")
    budget = own["total_backwards"] / own["backward_fraction"]  # epochs x N
    ctl = g.cost.groupby("seed")["total_backwards"].mean()
    seeds = sorted(set(ctl.index) & set(own.index))
    r = [ctl[s] / (own.loc[s, "work_fraction"] * budget[s]) for s in seeds]
    return float(np.nanmean(r)) if r else float("nan")


def _exit_corr(g: Group) -> str:
    if "exit_rank_corr" not in g.runs or g.runs["exit_rank_corr"].isna().all():
        return ""  # not a SIFT row
    v = g.runs["exit_rank_corr_at_start"].dropna()
    never = len(g.runs) - len(v)
    text = f"{v.min():.2f}–{v.max():.2f}" if len(v) else ""
    return (text + (f", never in {never}" if never else "")).strip(", ")


def _ttt_per_seed(runs, target: float) -> dict[int, float]:
    return {int(r.seed): stats.time_to_target(r.curve_val_acc, r.curve_seconds, target) for r in runs.itertuples()}


def _ttt_seconds(name: str):
    col = f"ttt_{name}"

    def compute(g: Group) -> dict:
        target = g.targets.get(name, float("nan"))
        mine = _ttt_per_seed(g.runs, target) if not nan(target) else {}
        reached = [t for t in mine.values() if not nan(t)]
        return {f"{col}_target": target, f"{col}_s": float(np.mean(reached)) if reached else float("nan"),
                f"{col}_reached": len(reached), f"{col}_of": len(mine)}

    def cell(r) -> str:
        if nan(r[f"{col}_target"]):
            return "–"
        if nan(r[f"{col}_s"]):
            return "not reached"
        text = f"{r[f'{col}_s']:.1f}"
        if int(r[f"{col}_reached"]) < int(r[f"{col}_of"]):
            text += f" ({int(r[f'{col}_reached'])}/{int(r[f'{col}_of'])} seeds)"
        return text

    return Metric(
        f"{col}_s", f"time to {name} target (s)",
        f"work seconds (train + search, evaluation excluded) until validation accuracy first reaches the {name} "
        f"target ({TARGETS[name]}), read at sub-epoch probes when the run logged them (else at epoch ends); "
        "mean over the seeds that reach it", compute, cell,
        columns=tuple(f"{col}_{c}" for c in ("target", "s", "reached", "of")), optional=name == "paper")


def _ttt_speedup(name: str) -> Metric:
    def compute(g: Group) -> Estimate:
        target = g.targets.get(name, float("nan"))
        if nan(target) or g.ref.empty:
            return stats.NONE
        mine, ref = _ttt_per_seed(g.runs, target), _ttt_per_seed(g.ref, target)
        return stats.ratio_estimate([ref[s] / t for s, t in mine.items()
                                     if s in ref and not nan(ref[s]) and not nan(t) and t > 0])

    col = f"ttt_{name}_speedup"
    return Metric(col, f"{name} target speedup",
                  f"uniform's time to the {name} target / this row's, paired by seed over the seeds where both "
                  "reach it, with its interval", compute, speedup_cell(col), interval=True, optional=True)


def _paper_text(g: Group) -> str:
    out = []
    k = g.key
    for f in g.paper.get("figures") or []:
        if f.get("method") != k["method"] or k.get("control_of"):
            continue
        if f.get("drop") is not None and abs(float(f["drop"]) - k["drop"]) > 1e-9:
            continue
        if f.get("model") not in (None, k["model"]) or f.get("dataset") not in (None, k["dataset"]):
            continue
        v = f.get("value")
        text = f"{f.get('metric', '')} {v:g}" if isinstance(v, (int, float)) else f"{f.get('metric', '')} {v}"
        if f.get("note"):
            text += f" ({f['note']})"
        out.append(text.strip())
    return "; ".join(out)


def _faithful(g: Group) -> bool:
    return bool(g.runs["faithful"].all()) and method_faithfulness(g.key["method"], g.runs)[0]


def method_faithfulness(method: str, runs) -> tuple[bool, str]:
    """(faithful, caveat) of the method as built with this row's parameters; the class's when it
    no longer builds, (True, "") when it is no longer registered (its runs still count)."""
    from bench import hooks
    from bench.errors import BenchError
    from bench.registry import METHODS

    if method not in METHODS:
        return True, ""
    cls = METHODS.get(method)
    obj = cls
    try:
        r = runs.iloc[0]
        obj = hooks.build(cls, float(r["drop"]), json.loads(r["params"]))
    except (BenchError, KeyError, IndexError, ValueError, TypeError):
        pass
    return bool(getattr(obj, "faithful", True)), str(getattr(obj, "caveat", "") or "")


for m in [
    Metric("n_seeds", "seeds", "seeds with a finished run (diverged ones are listed above, never counted)",
           lambda g: len(g.runs), plain("n_seeds", "d")),
    Metric("test_acc_mean", "test acc %",
           f"final test accuracy, mean ± std over seeds [{stats.INTERVAL} of the mean]", _test_acc, _test_acc_cell,
           reads=("final_test_acc", "final_val_acc", "chance_acc"),
           columns=("test_acc_mean", "test_acc_std", "test_acc_ci_low", "test_acc_ci_high")),
    Metric("acc_change_pts", "Δ acc vs uniform (pts)",
           f"test accuracy minus uniform's, in points, paired by seed: mean ({stats.INTERVAL}) k/n seeds ahead",
           lambda g: _vs(g, g.ref, "final_test_acc", 100.0), difference_cell("acc_change_pts"), interval=True),
    Metric("acc_vs_selection_pts", "Δ acc vs selection control (pts)",
           "test accuracy minus its selection control's (a random subset replaying its realized batch plan: the "
           "same backward count every epoch, the same steps of the same sizes), in points, paired by seed, with "
           "its interval and k/n seeds ahead",
           lambda g: _vs(g, g.control, "final_test_acc", 100.0), difference_cell("acc_vs_selection_pts"),
           interval=True, optional=True),
    Metric("acc_vs_cost_pts", "Δ acc vs cost control (pts)",
           "test accuracy minus its cost control's (a random subset given its whole cost-weighted work, "
           "search included, in measured pass times, schedule fully decayed), paired by seed; – where the selection "
           "control costs the same (no passes beyond training)",
           lambda g: _vs(g, g.cost, "final_test_acc", 100.0), difference_cell("acc_vs_cost_pts"),
           interval=True, optional=True),
    Metric("cost_is_uniform", "cost ctl is uniform", "seeds whose work was within 3% of uniform's: uniform itself "
           "is their cost control", lambda g: int((g.cost["method"] == "uniform").sum()) if len(g.cost) else 0,
           plain("cost_is_uniform", "d"), table=False),
    Metric("selection_is_uniform", "sel. ctl is uniform", "seeds whose run kept uniform's plan (every sample, every "
           "epoch): uniform itself is their selection control",
           lambda g: int((g.control["method"] == "uniform").sum()) if len(g.control) else 0,
           plain("selection_is_uniform", "d"), table=False),
    Metric("cost_work_ratio", "cost ctl work / own",
           "the cost control's realized work over this row's, in this row's measured pass costs (1 = equal cost)",
           _cost_work_ratio, plain("cost_work_ratio", ".3f"), optional=True),
    Metric("train_speedup", "train speedup",
           "uniform train seconds / this row's, paired by seed: geometric mean (t interval of the log ratios; "
           "~1: it contains 1). Train time excludes search, evaluation and set-up",
           lambda g: _vs(g, g.ref, "train_seconds", speedup=True), speedup_cell("train_speedup"),
           reads=("train_seconds",), interval=True),
    Metric("metered_speedup", "metered speedup",
           "the same for train time read in reference steps (bench/meter.py: on a CPU, each stretch of train time "
           "over the pace of one fixed training step measured beside it), which the pace of cells running "
           "alongside cancels out of; only where uniform trains for 500 reference steps or more, five readings, "
           "else too few to average the pace (the raw clock is read there)",
           lambda g: _vs(g, g.ref, "train_metered_steps", speedup=True) if meter_holds(g) else stats.NONE,
           speedup_cell("metered_speedup"), reads=("train_metered_steps", "meter_step_seconds"), interval=True, optional=True),
    Metric("e2e_speedup", "e2e speedup",
           "the same for end-to-end seconds (set-up, a frozen trunk's precompute, train, search, evaluation)",
           lambda g: _vs(g, g.ref, "e2e_seconds", speedup=True), speedup_cell("e2e_speedup"),
           reads=("e2e_seconds",), interval=True),
    Metric("speedup_efficiency", "speedup efficiency",
           "measured train speedup / ideal speedup, ideal = 1 / train_work_fraction (every pass weighted by its "
           "measured time on this hardware); below 1: overhead or small batches eat the gain; above "
           f"{EFFICIENCY_CEILING}: a measurement problem, flagged in the notes",
           speedup_efficiency, plain("speedup_efficiency", ".2f"), reads=("train_work_fraction",), optional=True),
    Metric("metered_efficiency", "metered efficiency", "the same for the metered speedup",
           metered_efficiency, plain("metered_efficiency", ".2f"), optional=True),
]:
    register_metric(m)

for name in TARGETS:
    register_metric(_ttt_seconds(name))
    register_metric(_ttt_speedup(name))

for m in [
    mean_of("backward_fraction", "bwd frac", ".3f", "sample backwards / (epochs × N)"),
    mean_of("forward_fraction", "fwd frac", ".3f",
            "(training forwards + scoring forwards + early exits, each weighted by its measured time against a "
            "training forward's) / (epochs × N)"),
    mean_of("work_fraction", "work frac", ".3f",
            "all work incl. search, every pass weighted by its measured time on this hardware, over uniform's "
            "(epochs × N × (forward + backward))", optional=True),
    mean_of("train_work_fraction", "train work frac", ".3f", "work_fraction without search", table=False),
    mean_of("realized_drop", "realized drop", ".3f", "1 - bwd frac", table=False),
    mean_of("active_share", "active share", ".2f",
            "share of steps or epochs in which a mechanism that can stay off was on (methods that have one)",
            optional=True),
    Metric("bn_recomputed_pts", "Δ acc, BN recomputed (pts)",
           "a diagnostic, not a result: test accuracy after the batch-norm statistics are recomputed on random "
           "training batches, minus the run's own, mean over seeds (models with batch norm)",
           lambda g: 100 * (g.mean("test_acc_bn_recomputed") - g.mean("final_test_acc")),
           plain("bn_recomputed_pts", "+.2f"), reads=("test_acc_bn_recomputed",), optional=True),
    Metric("exit_corr_at_start", "exit ρ at start (min–max)",
           "SIFT: the held-out Spearman correlation of exit and full-model losses when selection started, lowest and "
           "highest over seeds (selection starts only at or above its threshold); 'never' counts the seeds where it "
           "never started", _exit_corr, lambda r: r["exit_corr_at_start"] or "", reads=("exit_rank_corr_at_start",),
           optional=True),
    mean_of("exit_rank_corr", "exit ρ last", ".2f", "SIFT: that correlation after the last epoch, mean over seeds",
            optional=True),
    mean_of("kept_class_max_share", "kept class max share", ".2f",
            "SIFT: the largest share one class took of the samples it kept, mean over seeds", optional=True),
    mean_of("host_syncs", "host syncs", ".0f", "host syncs in the method's hooks (counted on GPUs, and on CPU in "
            "the sync audit)", optional=True, table=False),
    Metric("step_time_vs_uniform", "step time / sample vs uniform",
           "(forward + backward + optimizer stage seconds) per sample backward, over uniform's",
           relative_to_uniform(STEP_STAGES, "total_backwards"), plain("step_time_vs_uniform", ".2f")),
    Metric("forward_time_vs_uniform", "fwd time / sample vs uniform",
           "forward stage seconds per training forward, over uniform's", relative_to_uniform(FORWARD_STAGE, "total_forwards"),
           plain("forward_time_vs_uniform", ".2f"), table=False),
    mean_of("train_seconds", "train s", ".1f", "train seconds, mean over seeds"),
    mean_of("work_seconds", "work s", ".1f", "train + search seconds, mean over seeds"),
    mean_of("e2e_seconds", "e2e s", ".1f", "end-to-end seconds (set-up, precompute, train, search, evaluation), "
            "mean over seeds"),
    mean_of("setup_seconds", "setup s", ".1f", "set-up seconds (data, model, precompute)", table=False),
    mean_of("search_seconds", "search s", ".1f", "search seconds", table=False),
    mean_of("plan_step_error", "step plan error", ".3f", "(optimizer steps taken - planned) / planned", table=False),
    Metric("faithful", "faithful", "the method as implemented follows its paper (else see the not-faithful line)",
           _faithful, lambda r: "yes" if r["faithful"] else "**no**"),
    Metric("notes", "notes", "what to know before trusting the row: a run at chance (did not train), a mechanism "
           f"that never switched on, a forward time per sample over {CONTENTION}× (or under 1/{CONTENTION}) uniform's "
           f"(measured under contention), a speedup efficiency under {EFFICIENCY_FLOOR} (the stage that eats it) or "
           f"over {EFFICIENCY_CEILING}, an LR plan the method missed by over 5% of its steps", notes,
           lambda r: r["notes"] or "", reads=("active_share", "plan_step_error"), optional=True),
    Metric("paper", "paper", "the paper's own figures for this row (results/paper/*.yaml)", _paper_text,
           lambda r: r["paper"] or "", optional=True),
    mean_of("best_val_acc", "best val acc", ".4f", "best epoch-end validation accuracy", table=False),
    mean_of("eval_seconds", "eval s", ".1f", "evaluation seconds", table=False),
]:
    register_metric(m)
