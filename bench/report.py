"""Tables and plots of a suite, read back from MLflow (never from the memory of a run).

    collect(suite)            one row per finished run of the suite's cells (newest per cell and hardware)
    summary(runs, suite)      one row per hardware x setting x method x drop: accuracy, speedups, time to target
    render(summary, highlight) the markdown table as text; `highlight` marks one method's rows
    write(suite, out_dir)     results/<suite>/summary.md, summary.csv, runs.csv and PNG plots

Words as in METHODS.md:

- accuracy: final test accuracy, mean and std over seeds, with a 95% percentile
  bootstrap interval of the mean (2000 resamples, fixed generator; one seed: the value).
  "acc change" is the method minus uniform in points, paired by seed.
- speedup: uniform time / method time for the same seed, averaged over the seeds
  both have (train time excludes evaluation and search; end to end includes all).
  Uniform, the reference, runs at drop 0 and its speedup is 1 by construction.
- work seconds: train + search seconds, cumulative per epoch (evaluation excluded).
- time to target: work seconds until validation accuracy first reaches the target,
  the median final validation accuracy of the uniform runs (same setting and
  hardware) minus `suite.target_offset` points; averaged over the seeds that reach
  it ("not reached" when none does; the count of seeds that did is kept).
- setting: everything a cell computes except method, its parameters, drop and seed
  (model, dataset, label noise, epochs, batch size, limits, ...). Rows compare only
  within one setting and one hardware.

Paper figures file (the suite's `paper:` entry, a YAML path relative to results/):

    source: "SwiftLearn, arXiv 2311.15134"     # optional, shown in the header
    figures:
      - method: swiftlearn        # required: the registered method name
        metric: e2e_speedup       # required: what the figure is (a summary column name, or free text)
        value: 3.36               # required: number or text
        drop: 0.9                 # optional: only rows at this drop (default: every drop of the method)
        model: bert_base          # optional: only rows of this model
        dataset: glue             # optional: only rows of this dataset
        note: BERT GLUE avg       # optional
      - {method: swiftlearn, drop: 0.9, metric: acc_change_pts, value: -0.92, note: GLUE avg, upper bound}

Each row shows its matching figures in the column `paper`, as "e2e_speedup 3.36 (BERT GLUE avg)",
several joined by "; ". A figure whose filters match no row of ours is not shown in the table.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from bench import tracking
from bench.errors import BenchError
from bench.paths import results_dir
from bench.suite import REFERENCE

N_RESAMPLES = 2000
CI_LEVEL = 0.95
RNG_SEED = 0

FINAL_METRICS = (
    "final_val_acc", "final_test_acc", "best_val_acc", "train_seconds", "e2e_seconds", "search_seconds",
    "eval_seconds", "backward_fraction", "forward_fraction", "realized_drop",
)
STAGE_ORDER = ("data", "selection", "forward", "backward", "optimizer", "bookkeeping", "search", "evaluation", "other")
RUN_COLUMNS = (
    "hardware", "model", "dataset", "label_noise", "epochs", "setting", "method", "variant", "drop", "seed",
    "faithful", "git_commit", "config_key", "run_id", "start_time",
) + FINAL_METRICS
HISTORY_COLUMNS = ("hist_epoch", "hist_val_acc", "hist_work_seconds", "hist_e2e_seconds")
GROUP = ["hardware", "model", "dataset", "label_noise", "epochs", "setting", "method", "variant", "drop"]
SUMMARY_COLUMNS = GROUP + [
    "n_seeds", "test_acc_mean", "test_acc_std", "test_acc_ci_low", "test_acc_ci_high", "acc_change_pts",
    "train_speedup", "e2e_speedup", "paired_seeds", "target_val_acc", "time_to_target_s", "target_reached",
    "backward_fraction", "forward_fraction", "realized_drop", "train_seconds", "e2e_seconds", "search_seconds",
    "faithful", "paper",
]


# -- reading the store


def _variant(params: dict[str, Any]) -> str:
    return ",".join(f"{k}={params[k]}" for k in sorted(params))


def _setting(cfg) -> str:
    ident = cfg.identity()
    for k in ("method", "params", "drop", "seed"):
        ident.pop(k, None)
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _bool(v: Any) -> bool:
    return str(v).strip().lower() not in ("false", "0", "no")


def _finished(keys: list[str]) -> list:
    """Finished runs whose config_key is one of `keys`, newest kept per (config_key, hardware).

    One query per key: MLflow's run search (3.x, SQL stores) accepts `IN (...)` only for
    `attributes.run_id`, not for tags, so a chunked `tags.config_key IN (...)` is refused.
    """
    c, exp = tracking.client(), tracking.experiment_id()
    found = []
    for key in keys:
        flt = f"tags.config_key = '{key}' and tags.cell_status = 'finished' and attributes.status = 'FINISHED'"
        token = None
        while True:
            page = c.search_runs([exp], filter_string=flt, max_results=1000, page_token=token)
            found.extend(page)
            token = page.token
            if not token:
                break
    newest: dict[tuple[str, str], Any] = {}
    for run in sorted(found, key=lambda r: (r.info.start_time or 0, r.info.end_time or 0, r.info.run_id)):
        tags = run.data.tags
        if run.info.status != "FINISHED" or tags.get("cell_status") != "finished" or tags.get("config_key") not in keys:
            continue
        newest[(tags["config_key"], tags.get("hardware", "unknown"))] = run
    return list(newest.values())


def _history(c, run_id: str, epochs: int) -> dict[str, list]:
    """Per-epoch values (steps 0..epochs-1; the final metrics at step=epochs are left out)."""
    series = {}
    for name in ("val_acc", "train_seconds", "search_seconds", "e2e_seconds"):
        by_step: dict[int, float] = {}
        for m in sorted(c.get_metric_history(run_id, name), key=lambda m: (m.step, m.timestamp)):
            if 0 <= m.step < epochs:
                by_step[m.step] = m.value
        series[name] = by_step
    steps = sorted(series["val_acc"])
    nan = float("nan")
    return {
        "hist_epoch": steps,
        "hist_val_acc": [series["val_acc"][s] for s in steps],
        "hist_work_seconds": [series["train_seconds"].get(s, nan) + series["search_seconds"].get(s, 0.0) for s in steps],
        "hist_e2e_seconds": [series["e2e_seconds"].get(s, nan) for s in steps],
    }


def collect(suite) -> pd.DataFrame:
    """One row per finished run of the suite's cells, from MLflow: identity, final metrics, histories."""
    cfgs = {cfg.config_key(): cfg for cfg in suite.cells()}
    c = tracking.client()
    rows = []
    for run in _finished(sorted(cfgs)):
        p, t, m = run.data.params, run.data.tags, run.data.metrics
        cfg = cfgs[t["config_key"]]
        epochs = int(p.get("epochs", cfg.epochs))
        row = {
            "hardware": t.get("hardware", "unknown"),
            "model": p.get("model", cfg.model),
            "dataset": p.get("dataset", cfg.dataset),
            "label_noise": float(p.get("label_noise", cfg.label_noise)),
            "epochs": epochs,
            "setting": _setting(cfg),
            "method": p.get("method", cfg.method),
            "variant": _variant(cfg.params),
            "drop": float(p.get("drop", cfg.drop)),
            "seed": int(p.get("seed", cfg.seed)),
            "faithful": _bool(t.get("faithful", True)),
            "git_commit": t.get("git_commit", "unknown"),
            "config_key": t["config_key"],
            "run_id": run.info.run_id,
            "start_time": int(run.info.start_time or 0),
            **{k: float(m.get(k, float("nan"))) for k in FINAL_METRICS},
            **{k: float(v) for k, v in m.items() if k.startswith(("stage_", "total_"))},
        }
        row.update(_history(c, run.info.run_id, epochs))
        rows.append(row)
    df = pd.DataFrame(rows)
    extra = sorted(set(df.columns) - set(RUN_COLUMNS) - set(HISTORY_COLUMNS)) if rows else []
    df = df.reindex(columns=list(RUN_COLUMNS) + extra + list(HISTORY_COLUMNS))
    if rows:
        df = df.sort_values(["hardware", "model", "dataset", "label_noise", "epochs", "setting", "method", "variant",
                             "drop", "seed"], kind="stable").reset_index(drop=True)
    return df


# -- statistics


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


def _by_seed(df: pd.DataFrame, column: str) -> pd.Series:
    return df.groupby("seed")[column].mean()


def paired_speedup(reference: pd.DataFrame, method: pd.DataFrame, column: str) -> tuple[float, int]:
    """Mean over seeds of reference time / method time, over the seeds both have: (mean, pairs)."""
    ref, other = _by_seed(reference, column), _by_seed(method, column)
    seeds = sorted(set(ref.index) & set(other.index))
    ratios = [ref[s] / other[s] for s in seeds if other[s] > 0 and not math.isnan(ref[s] / other[s])]
    return (float(np.mean(ratios)) if ratios else float("nan")), len(ratios)


def paired_difference(reference: pd.DataFrame, method: pd.DataFrame, column: str) -> float:
    """Mean over shared seeds of method - reference."""
    ref, other = _by_seed(reference, column), _by_seed(method, column)
    seeds = sorted(set(ref.index) & set(other.index))
    diffs = [other[s] - ref[s] for s in seeds]
    return float(np.mean(diffs)) if diffs else float("nan")


def time_to_target(val_acc: Sequence[float], seconds: Sequence[float], target: float) -> float:
    """Cumulative seconds at the first epoch whose validation accuracy reaches `target`; nan if none does."""
    if target is None or math.isnan(target):
        return float("nan")
    for acc, sec in zip(val_acc, seconds):
        if acc >= target - 1e-12:
            return float(sec)
    return float("nan")


def _paper_text(paper: dict, method: str, drop: float, model: str, dataset: str) -> str:
    out = []
    for f in paper.get("figures") or []:
        if f.get("method") != method:
            continue
        if f.get("drop") is not None and abs(float(f["drop"]) - drop) > 1e-9:
            continue
        if f.get("model") not in (None, model) or f.get("dataset") not in (None, dataset):
            continue
        v = f.get("value")
        text = f"{f.get('metric', '')} {v:g}" if isinstance(v, (int, float)) else f"{f.get('metric', '')} {v}"
        if f.get("note"):
            text += f" ({f['note']})"
        out.append(text.strip())
    return "; ".join(out)


def _check_paper(paper: dict, suite_name: str) -> None:
    figs = paper.get("figures", [])
    if not isinstance(figs, list) or any(not isinstance(f, dict) or not {"method", "metric", "value"} <= set(f) for f in figs):
        raise BenchError(f"suite {suite_name}: paper figures must be a list of {{method, metric, value, [drop, model, "
                         f"dataset, note]}} (see bench/report.py)")


def _method_rank(method: str) -> tuple[int, str]:
    return ({REFERENCE: 0, "random_subset": 1}.get(method, 2), method)


def summary(df: pd.DataFrame, suite) -> pd.DataFrame:
    """One row per (hardware, setting, method, variant, drop); see the module docstring for each column."""
    paper = suite.paper or {}
    _check_paper(paper, suite.name)
    if df.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    offset = float(suite.target_offset) / 100.0
    refs, targets = {}, {}
    for (hw, setting), g in df.groupby(["hardware", "setting"], sort=True):
        ref = g[g["method"] == REFERENCE]
        refs[(hw, setting)] = ref
        targets[(hw, setting)] = float(ref["final_val_acc"].median()) - offset if len(ref) else float("nan")

    rows = []
    for key, g in df.groupby(GROUP, sort=True, dropna=False):
        r = dict(zip(GROUP, key))
        g = g.sort_values("seed")
        ref = refs[(r["hardware"], r["setting"])]
        target = targets[(r["hardware"], r["setting"])]
        acc = g["final_test_acc"].to_numpy(dtype=float)
        lo, hi = bootstrap_ci(acc)
        train_sp, pairs = paired_speedup(ref, g, "train_seconds")
        e2e_sp, _ = paired_speedup(ref, g, "e2e_seconds")
        ttts = [time_to_target(a, s, target) for a, s in zip(g["hist_val_acc"], g["hist_work_seconds"])]
        reached = [t for t in ttts if not math.isnan(t)]
        r.update({
            "n_seeds": len(g),
            "test_acc_mean": float(np.mean(acc)),
            "test_acc_std": float(np.std(acc, ddof=1)) if len(acc) > 1 else float("nan"),
            "test_acc_ci_low": lo, "test_acc_ci_high": hi,
            "acc_change_pts": 100.0 * paired_difference(ref, g, "final_test_acc") if len(ref) else float("nan"),
            "train_speedup": train_sp, "e2e_speedup": e2e_sp, "paired_seeds": pairs,
            "target_val_acc": target,
            "time_to_target_s": float(np.mean(reached)) if reached else float("nan"),
            "target_reached": len(reached),
            **{c: float(g[c].mean()) for c in ("backward_fraction", "forward_fraction", "realized_drop",
                                              "train_seconds", "e2e_seconds", "search_seconds")},
            "faithful": bool(g["faithful"].all()),
            "paper": _paper_text(paper, r["method"], r["drop"], r["model"], r["dataset"]),
        })
        rows.append(r)
    out = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    order = sorted(range(len(out)), key=lambda i: (
        out.at[i, "hardware"], out.at[i, "model"], out.at[i, "dataset"], out.at[i, "label_noise"], out.at[i, "epochs"],
        out.at[i, "setting"], _method_rank(out.at[i, "method"]), out.at[i, "variant"], out.at[i, "drop"]))
    return out.iloc[order].reset_index(drop=True)


# -- markdown


def _nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _f(x, fmt: str, none: str = "–") -> str:
    return none if _nan(x) else format(x, fmt)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(df_summary: pd.DataFrame, highlight: str | None = None) -> str:
    """The summary as a markdown table; rows of method `highlight` are marked with ▶ and bold."""
    s = df_summary
    if s.empty:
        return "(no finished runs)\n"
    show_hw = s["hardware"].nunique() > 1
    show_noise = bool((s["label_noise"] != 0).any())
    show_epochs = s["epochs"].nunique() > 1
    show_paper = bool((s["paper"].fillna("") != "").any())
    variants = s.groupby("method")["variant"].nunique()

    head = (["hardware"] if show_hw else []) + ["model", "dataset"] + (["noise"] if show_noise else []) \
        + (["epochs"] if show_epochs else []) + [
        "method", "drop", "seeds", "test acc %", "95% CI", "Δ acc (pts)", "train speedup", "e2e speedup",
        "time to target (s)", "bwd frac", "fwd frac", "faithful"] + (["paper"] if show_paper else [])
    right = {"drop", "seeds", "test acc %", "95% CI", "Δ acc (pts)", "train speedup", "e2e speedup",
             "time to target (s)", "bwd frac", "fwd frac", "noise", "epochs"}
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if h in right else "---" for h in head) + "|"]
    for _, r in s.iterrows():
        name = r["method"] + (f" ({r['variant']})" if variants[r["method"]] > 1 and r["variant"] else "")
        if highlight and r["method"] == highlight:
            name = f"▶ **{name}**"
        acc = _f(100 * r["test_acc_mean"], ".2f")
        if not _nan(r["test_acc_std"]):
            acc += f" ± {100 * r['test_acc_std']:.2f}"
        ci = "–" if _nan(r["test_acc_ci_low"]) else f"[{100 * r['test_acc_ci_low']:.2f}, {100 * r['test_acc_ci_high']:.2f}]"
        if _nan(r["time_to_target_s"]):
            ttt = "not reached" if not _nan(r["target_val_acc"]) else "–"
        else:
            ttt = f"{r['time_to_target_s']:.1f}"
            if int(r["target_reached"]) < int(r["n_seeds"]):
                ttt += f" ({int(r['target_reached'])}/{int(r['n_seeds'])} seeds)"
        cells = ([r["hardware"]] if show_hw else []) + [r["model"], r["dataset"]] \
            + ([f"{r['label_noise']:g}"] if show_noise else []) + ([str(int(r["epochs"]))] if show_epochs else []) + [
            name, f"{r['drop']:g}", str(int(r["n_seeds"])), acc, ci, _f(r["acc_change_pts"], "+.2f"),
            _f(r["train_speedup"], ".2f") + ("x" if not _nan(r["train_speedup"]) else ""),
            _f(r["e2e_speedup"], ".2f") + ("x" if not _nan(r["e2e_speedup"]) else ""),
            ttt, _f(r["backward_fraction"], ".3f"), _f(r["forward_fraction"], ".3f"),
            "yes" if r["faithful"] else "**no**"] + ([r["paper"] or ""] if show_paper else [])
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _caveat(method: str) -> str:
    try:
        from bench.registry import METHODS

        return getattr(METHODS.get(method), "caveat", "") or ""
    except Exception:  # a method no longer registered: its runs still count
        return ""


def _panel_labels(df: pd.DataFrame) -> dict[tuple[str, str], str]:
    """A readable name per (hardware, setting) panel, unique."""
    multi_hw = df["hardware"].nunique() > 1
    multi_ep = df["epochs"].nunique() > 1
    out = {}
    for (hw, setting), g in df.groupby(["hardware", "setting"], sort=True):
        r = g.iloc[0]
        label = f"{r['model']}/{r['dataset']}"
        if r["label_noise"]:
            label += f" noise {r['label_noise']:g}"
        if multi_ep:
            label += f" E={int(r['epochs'])}"
        if multi_hw:
            label += f" [{hw}]"
        out[(hw, setting)] = label
    seen: dict[str, int] = {}
    for v in out.values():
        seen[v] = seen.get(v, 0) + 1
    return {k: (v if seen[v] == 1 else f"{v} #{k[1]}") for k, v in out.items()}


def _header(suite, runs: pd.DataFrame, s: pd.DataFrame) -> str:
    n_cells = len(suite.cells())
    found = runs["config_key"].nunique()
    lines = [f"# Suite {suite.name}", ""]
    if suite.description:
        lines += [str(suite.description).strip(), ""]
    lines += [
        f"- hardware: {'; '.join(sorted(runs['hardware'].unique()))}",
        f"- runs: {len(runs)} finished (cells with a result: {found} of {n_cells})",
        f"- git commits: {', '.join(sorted(runs['git_commit'].unique()))}",
        "- test acc: final test accuracy, mean ± std over seeds; 95% CI: percentile bootstrap of the mean "
        f"({N_RESAMPLES} resamples); Δ acc: method minus uniform in points, paired by seed",
        "- speedup: uniform time / method time, paired by seed, mean over seeds; train time excludes evaluation "
        "and search, end to end (e2e) includes every stage; uniform runs once, at drop 0",
        f"- time to target: work seconds (train + search, evaluation excluded) until validation accuracy first "
        f"reaches the median final validation accuracy of the uniform runs (same setting and hardware) minus "
        f"{suite.target_offset:g} points; mean over the seeds that reach it",
    ]
    labels = _panel_labels(runs)
    tg = s.drop_duplicates(["hardware", "setting"])
    targets = [f"{labels[(r.hardware, r.setting)]}: {100 * r.target_val_acc:.2f}%" for r in tg.itertuples()
               if not _nan(r.target_val_acc)]
    if targets:
        lines.append(f"- targets: {'; '.join(targets)}")
    lines.append("- bwd / fwd frac: realized sample-backwards / sample-forwards (selection passes included) "
                 "over epochs x N")
    unfaithful = sorted(s.loc[~s["faithful"].astype(bool), "method"].unique())
    if unfaithful:
        notes = [m + (f" ({_caveat(m)})" if _caveat(m) else "") for m in unfaithful]
        lines.append(f"- not faithful to their papers: {'; '.join(notes)}")
    else:
        lines.append("- not faithful to their papers: none")
    if (suite.paper or {}).get("source"):
        lines.append(f"- paper figures: {suite.paper['source']}")
    return "\n".join(lines) + "\n\n"


# -- plots



def _save_grid(g, xlabel: str, ylabel: str, path: Path) -> Path:
    import matplotlib.pyplot as plt

    g.set_axis_labels(xlabel, ylabel)
    g.set_titles("{col_name}")
    g.savefig(path, dpi=110)
    plt.close(g.figure)
    return path

def _plots(runs: pd.DataFrame, s: pd.DataFrame, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    labels = _panel_labels(runs)
    panels = sorted(set(labels.values()))
    wrap = min(3, len(panels))
    written = []

    def line_label(method, variant, drop):
        return f"{method}{f' ({variant})' if variant else ''} r={drop:g}"

    # accuracy vs work seconds, mean over seeds per epoch
    pts = []
    for r in runs.itertuples():
        for ep, acc, sec in zip(r.hist_epoch, r.hist_val_acc, r.hist_work_seconds):
            pts.append({"panel": labels[(r.hardware, r.setting)], "method, drop": line_label(r.method, r.variant, r.drop),
                        "epoch": ep, "val_acc": 100 * acc, "work_seconds": sec})
    if pts:
        agg = pd.DataFrame(pts).groupby(["panel", "method, drop", "epoch"], as_index=False)[["val_acc", "work_seconds"]].mean()
        g = sns.relplot(data=agg, x="work_seconds", y="val_acc", hue="method, drop", hue_order=sorted(agg["method, drop"].unique()),
                        col="panel", col_order=panels, col_wrap=wrap, kind="line", marker="o", estimator=None,
                        sort=True, height=3.6, aspect=1.3, facet_kws={"sharex": False, "sharey": False})
        for (hw, setting), name in labels.items():
            tgt = s.loc[(s["hardware"] == hw) & (s["setting"] == setting), "target_val_acc"]
            if len(tgt) and not _nan(tgt.iloc[0]):
                g.axes_dict[name].axhline(100 * tgt.iloc[0], ls="--", color="grey", lw=1)
        written.append(_save_grid(g, "work seconds (train + search)", "validation accuracy (%)", out / "accuracy_vs_time.png"))

    # e2e speedup vs drop ratio
    sp = s.assign(panel=[labels[(h, st)] for h, st in zip(s["hardware"], s["setting"])],
                  method=[m + (f" ({v})" if v else "") for m, v in zip(s["method"], s["variant"])])
    sp = sp[~sp["e2e_speedup"].isna()]
    if len(sp):
        g = sns.relplot(data=sp, x="drop", y="e2e_speedup", hue="method", hue_order=sorted(sp["method"].unique()),
                        col="panel", col_order=sorted(sp["panel"].unique()), col_wrap=min(3, sp["panel"].nunique()),
                        kind="line", marker="o", estimator=None, sort=True, height=3.6, aspect=1.3,
                        facet_kws={"sharex": False, "sharey": False})
        for ax in g.axes.flat:
            ax.axhline(1.0, ls="--", color="grey", lw=1)
        written.append(_save_grid(g, "drop ratio", "end-to-end speedup vs uniform (x)", out / "speedup_vs_drop.png"))

    # stage-time breakdown, mean over seeds
    stage_cols = [f"stage_{st}_seconds" for st in STAGE_ORDER if f"stage_{st}_seconds" in runs.columns]
    stage_cols += sorted(c for c in runs.columns if c.startswith("stage_") and c.endswith("_seconds") and c not in stage_cols)
    if stage_cols:
        n = len(panels)
        cols = min(3, n)
        nrows = math.ceil(n / cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(5.5 * cols, 4.2 * nrows), squeeze=False)
        colors = sns.color_palette("tab10", n_colors=len(stage_cols))
        bars = runs.assign(panel=[labels[(h, st)] for h, st in zip(runs["hardware"], runs["setting"])])
        for ax, name in zip(axes.flat, panels):
            g = bars[bars["panel"] == name]
            mean = g.groupby(["method", "variant", "drop"])[stage_cols].mean().fillna(0.0)
            mean = mean.iloc[sorted(range(len(mean)), key=lambda i: (_method_rank(mean.index[i][0]), mean.index[i][1:]))]
            mean.index = [line_label(*ix).replace(" r=", "\nr=") for ix in mean.index]
            mean.columns = [c[len("stage_"):-len("_seconds")] for c in stage_cols]
            mean.plot(kind="bar", stacked=True, ax=ax, color=colors, width=0.8, legend=False, rot=0)
            ax.set_title(name)
            ax.set_ylabel("seconds (mean over seeds)")
            ax.tick_params(axis="x", labelsize=8)
        for ax in list(axes.flat)[n:]:
            ax.set_visible(False)
        handles, names = axes.flat[0].get_legend_handles_labels()
        fig.tight_layout()
        fig.legend(handles[::-1], names[::-1], title="stage", loc="center left", bbox_to_anchor=(1.0, 0.5))
        p = out / "stage_breakdown.png"
        fig.savefig(p, dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(p)
    return written


# -- files


def _csv(df: pd.DataFrame, path: Path) -> None:
    df.to_csv(path, index=False, float_format="%.6g", lineterminator="\n")


def write(suite, out_dir: str | Path | None = None) -> Path:
    """summary.md, summary.csv, runs.csv and the plots under results/<suite>/; returns that folder."""
    runs = collect(suite)
    if runs.empty:
        raise BenchError(f"no finished runs for suite {suite.name}; run `nox -s reproduce -- {suite.name}` first")
    s = summary(runs, suite)
    out = Path(out_dir) if out_dir is not None else results_dir() / suite.name
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(_header(suite, runs, s) + render(s), encoding="utf-8")
    _csv(s, out / "summary.csv")
    _csv(runs.drop(columns=list(HISTORY_COLUMNS)), out / "runs.csv")
    _plots(runs, s, out)
    return out
