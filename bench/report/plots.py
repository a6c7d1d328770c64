"""The suite's plots: one function each, listed in PLOTS (file stem -> function).

A plot function takes (runs, summary, path), saves one PNG at `path` and returns
it, or returns None when there is nothing to draw. A new plot is one function
decorated with `@register_plot`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from bench.report.metrics import nan
from bench.report.summary import panel_labels, row_name
from bench.suite import REFERENCE
from bench.timing import STAGES

PLOTS: dict[str, Callable[[pd.DataFrame, pd.DataFrame, Path], Path | None]] = {}
DROP_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]
METHOD_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
                 "#7f7f7f"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h"]


def register_plot(fn):
    """Add a plot; its file is results/<suite>/<function name>.png."""
    PLOTS[fn.__name__] = fn
    return fn


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 9, "axes.grid": True, "grid.alpha": 0.3,
                         "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _is_ref(method: str, control_of: str) -> bool:
    return method == REFERENCE and not control_of


def _mean_curve(runs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Mean over seeds, point by point (seeds of one cell probe at the same steps)."""
    n = min(len(c) for c in runs["curve_val_acc"])
    if n == 0:
        return np.array([]), np.array([])
    acc = np.mean([c[:n] for c in runs["curve_val_acc"]], axis=0)
    sec = np.mean([c[:n] for c in runs["curve_seconds"]], axis=0)
    return sec, 100 * acc


@register_plot
def accuracy_vs_time(runs: pd.DataFrame, s: pd.DataFrame, path: Path) -> Path | None:
    """Small multiples: one panel per method and setting, the method's drops against uniform
    (thick black) and its matched control (dashed), near target dotted."""
    if runs.empty:
        return None
    plt = _plt()
    labels = panel_labels(runs)
    drops = sorted(runs.loc[~runs.apply(lambda r: _is_ref(r["method"], r["control_of"]), axis=1), "drop"].unique())
    color = {d: DROP_COLORS[i % len(DROP_COLORS)] for i, d in enumerate(drops)}
    panels = []  # (setting key, method, its runs, uniform's runs)
    for key, g in runs.groupby(["hardware", "setting"], sort=True):
        ref = g[(g["method"] == REFERENCE) & (g["control_of"] == "")]
        methods = sorted({m for m, c in zip(g["method"], g["control_of"]) if not _is_ref(m, c) and not c},
                         key=lambda m: (m != "random_subset", m))
        panels += [(key, m, g, ref) for m in methods] or [(key, None, g, ref)]
    ncols = min(5, max(1, max(sum(1 for p in panels if p[0] == k) for k in labels)))
    rows_per = {k: math.ceil(sum(1 for p in panels if p[0] == k) / ncols) for k in labels}
    nrows = sum(rows_per.values())
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.1 * ncols, 2.5 * nrows), squeeze=False)
    used, row0 = set(), 0
    for key in sorted(labels):
        mine = [p for p in panels if p[0] == key]
        lines = []  # (x, y, style, color, marker, lw) of this setting's panels, drawn with shared limits
        for i, (_, method, g, ref) in enumerate(mine):
            ax = axes[row0 + i // ncols][i % ncols]
            used.add(id(ax))
            if len(ref):
                lines.append((ax, *_mean_curve(ref), "-", "black", None, 2.4))
            for d in drops if method else []:
                sel = g[(g["method"] == method) & (g["control_of"] == "") & (g["drop"] == d)]
                ctrl = g[(g["control_of"] == method) & (g["drop"] == d) & (g["control_kind"] == "selection")]
                if len(sel):
                    lines.append((ax, *_mean_curve(sel), "-", color[d], "o", 1.5))
                if len(ctrl):
                    lines.append((ax, *_mean_curve(ctrl), "--", color[d], None, 1.5))
            tgt = s.loc[(s["hardware"] == key[0]) & (s["setting"] == key[1]), "ttt_near_target"]
            if len(tgt) and not nan(tgt.iloc[0]):
                ax.axhline(100 * tgt.iloc[0], ls=":", color="grey", lw=1)
            ax.set_title(method or "uniform", loc="left", fontweight="bold")
            if i % ncols == 0:
                ax.set_ylabel(f"{labels[key]}\nval acc (%)")
            if i + ncols >= len(mine):
                ax.set_xlabel("work seconds")
        for ax, x, y, ls, c, mk, lw in lines:
            ax.plot(x, y, ls, color=c, marker=mk, ms=3, lw=lw, zorder=3 if c == "black" else 2)
        ys = np.concatenate([ln[2] for ln in lines]) if lines else np.array([])
        xmax = max((float(np.max(ln[1])) for ln in lines if len(ln[1])), default=1.0)
        for i in range(len(mine)):
            ax = axes[row0 + i // ncols][i % ncols]
            ax.set_xlim(0, 1.03 * xmax)
            if len(ys):
                pad = max(0.5, 0.05 * (ys.max() - ys.min()))
                ax.set_ylim(ys.min() - pad, ys.max() + pad)
        row0 += rows_per[key]
    for ax in axes.flat:
        if id(ax) not in used:
            ax.set_visible(False)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="black", lw=2.4, label="uniform (reference)")]
    handles += [Line2D([], [], color=color[d], marker="o", ms=3, label=f"drop {d:g}") for d in drops]
    handles += [Line2D([], [], color="grey", ls="--", label="selection control"),
                Line2D([], [], color="grey", ls=":", label="near target")]
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(handles), frameon=False)
    fig.tight_layout()
    return _save(fig, path)


@register_plot
def speedup_vs_realized_drop(runs: pd.DataFrame, s: pd.DataFrame, path: Path) -> Path | None:
    """Train and end-to-end speedup (with their intervals over seeds) against realized drop, per setting."""
    s = s[~s["train_speedup"].isna() | ~s["e2e_speedup"].isna()]
    if s.empty:
        return None
    plt = _plt()
    labels = panel_labels(runs)
    keys = sorted({(h, st) for h, st in zip(s["hardware"], s["setting"])})
    owners = sorted({c or m for m, c in zip(s["method"], s["control_of"]) if not _is_ref(m, c)} - {"random_subset"})
    style = {m: (METHOD_COLORS[i % len(METHOD_COLORS)], MARKERS[i % len(MARKERS)]) for i, m in enumerate(owners)}
    style["random_subset"] = ("#555555", "o")
    fig, axes = plt.subplots(2, len(keys), figsize=(4.8 * len(keys), 7.4), squeeze=False)
    for j, key in enumerate(keys):
        g = s[(s["hardware"] == key[0]) & (s["setting"] == key[1])]
        for i, (col, what) in enumerate((("train_speedup", "train"), ("e2e_speedup", "end-to-end"))):
            ax = axes[i][j]
            ax.set_yscale("log", base=2)
            lows = g[f"{col}_ci_low"].where(g[f"{col}_ci_low"] > 0).dropna()
            ylo, yhi = min(0.8, float(lows.min()) / 1.25), max(1.25, float(g[f"{col}_ci_high"].max()) * 1.25)
            xmax = max(0.9, float(g["realized_drop"].max()) + 0.05)
            x = np.linspace(0, min(xmax, 1 - 1 / yhi), 60)
            ax.plot(x, 1 / (1 - x), ":", color="grey", lw=1)
            ax.axhline(1.0, ls="--", color="grey", lw=1)
            rs = g[(g["method"] == "random_subset") & (g["control_of"] == "")].sort_values("realized_drop")
            ax.plot(rs["realized_drop"], rs[col], "-", color=style["random_subset"][0], lw=1.2, zorder=2)
            for r in g.itertuples():
                if nan(getattr(r, col)) or nan(r.realized_drop):
                    continue
                y, lo, hi = getattr(r, col), getattr(r, f"{col}_ci_low"), getattr(r, f"{col}_ci_high")
                if _is_ref(r.method, r.control_of):
                    ax.plot(r.realized_drop, y, "*", color="black", ms=13, zorder=5)
                    continue
                c, mk = style[r.control_of or r.method]
                ax.errorbar(r.realized_drop, y, yerr=[[max(0.0, y - lo)], [max(0.0, hi - y)]], fmt=mk, color=c, ms=6,
                            capsize=3, mfc="white" if r.control_of else c, zorder=4)
            ax.set_ylim(ylo, yhi)
            ax.yaxis.set_major_formatter(lambda v, _: f"{v:g}")
            ax.set_title(f"{what} speedup  ·  {labels[key]}", loc="left")
            ax.set_xlim(-0.03, xmax)
            ax.set_xlabel("realized drop (1 − backward fraction)")
            ax.set_ylabel(f"{what} speedup vs uniform (×, log scale)")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="", marker="*", color="black", ms=12, label="uniform"),
               Line2D([], [], marker="o", color=style["random_subset"][0], label="random_subset")]
    handles += [Line2D([], [], ls="", marker=style[m][1], color=style[m][0], label=m) for m in owners]
    handles += [Line2D([], [], ls="", marker="o", color="grey", mfc="white", label="its controls (hollow)"),
                Line2D([], [], ls=":", color="grey", label="1 / (1 − drop)"),
                Line2D([], [], ls="--", color="grey", label="no speedup")]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
               title="bars: 95% interval over seeds")
    fig.tight_layout()
    return _save(fig, path)


@register_plot
def stage_breakdown(runs: pd.DataFrame, s: pd.DataFrame, path: Path) -> Path | None:
    """Where the seconds go: one horizontal stacked bar per row (mean over seeds), one panel per setting."""
    stages = [st for st in STAGES + ("other",) if f"stage_{st}_seconds" in runs.columns]
    if not stages or runs.empty:
        return None
    plt = _plt()
    labels = panel_labels(runs)
    keys = sorted(labels)
    colors = dict(zip(stages, METHOD_COLORS))
    nbars = max(len(s[(s["hardware"] == h) & (s["setting"] == st)]) for h, st in keys)
    fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 0.8 + 0.28 * nbars), squeeze=False)
    for ax, key in zip(axes[0], keys):
        rows = s[(s["hardware"] == key[0]) & (s["setting"] == key[1])]
        g = runs[(runs["hardware"] == key[0]) & (runs["setting"] == key[1])]
        names, left = [], np.zeros(len(rows))
        means = []
        for r in rows.itertuples():
            sel = g[(g["method"] == r.method) & (g["variant"] == r.variant) & (g["drop"] == r.drop)
                    & (g["control_of"] == r.control_of) & (g["control_kind"] == r.control_kind)]
            means.append([float(sel[f"stage_{st}_seconds"].mean()) for st in stages])
            names.append(f"{row_name(pd.Series(r._asdict()))}  r={r.drop:g}")
        means = np.nan_to_num(np.array(means))
        y = np.arange(len(rows))[::-1]
        for k, st in enumerate(stages):
            ax.barh(y, means[:, k], left=left, color=colors[st], height=0.75, label=st)
            left += means[:, k]
        ax.set_yticks(y, names, fontsize=8)
        for tick, r in zip(ax.get_yticklabels(), rows.itertuples()):
            if _is_ref(r.method, r.control_of):
                tick.set_fontweight("bold")
        ax.set_xlabel("seconds (mean over seeds)")
        ax.set_title(labels[key], loc="left")
        ax.grid(axis="y", visible=False)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(stages), frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def _frontier_panel(ax, g: pd.DataFrame, x: str, style: dict, xlabel: str) -> None:
    """Test accuracy (mean and t interval over seeds) against `x`, one line per method through its drops."""
    from bench.report.stats import t_interval

    main = g[g["control_of"] == ""]
    for method, m in main.groupby("method"):
        pts = []
        for (variant, drop), d in m.groupby(["variant", "drop"]):
            acc = 100 * d["final_test_acc"].to_numpy(dtype=float)
            lo, hi = t_interval(acc)
            pts.append((float(d[x].mean()), float(acc.mean()), lo, hi, variant))
        for variant in sorted({p[4] for p in pts}):
            line = sorted(p for p in pts if p[4] == variant)
            c, mk = style.get(method, ("black", "*"))
            xs, ys = [p[0] for p in line], [p[1] for p in line]
            err = [[max(0.0, p[1] - p[2]) for p in line], [max(0.0, p[3] - p[1]) for p in line]]
            ax.errorbar(xs, ys, yerr=err, fmt=("-" if len(line) > 1 else "") + mk, color=c, ms=5, capsize=2, lw=1.3,
                        label=method + (f" ({variant})" if variant else ""), zorder=4 if method == "random_subset" else 3)
    ctl = g[g["control_of"] != ""]
    if len(ctl):
        means = ctl.groupby(["control_of", "control_of_variant", "control_kind", "drop"]).agg(
            x=(x, "mean"), y=("final_test_acc", "mean"))
        ax.plot(means["x"], 100 * means["y"], "o", color="#777777", mfc="white", ms=5, label="random controls", zorder=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")


@register_plot
def accuracy_vs_work(runs: pd.DataFrame, s: pd.DataFrame, path: Path) -> Path | None:
    """Per setting: test accuracy against cost-weighted work (top) and train seconds (bottom); each method a
    line through its drop ratios, the random subset's among them, the random controls as hollow points."""
    if runs.empty or "work_fraction" not in runs:
        return None
    plt = _plt()
    labels = panel_labels(runs)
    keys = sorted(labels)
    methods = sorted(set(runs["method"]) - {REFERENCE, "random_subset"})
    style = {m: (METHOD_COLORS[i % len(METHOD_COLORS)], MARKERS[(i + 1) % len(MARKERS)]) for i, m in enumerate(methods)}
    style.update({"random_subset": ("#222222", "o"), REFERENCE: ("black", "*")})
    fig, axes = plt.subplots(2, len(keys), figsize=(5.6 * len(keys), 8.2), squeeze=False)
    for j, key in enumerate(keys):
        g = runs[(runs["hardware"] == key[0]) & (runs["setting"] == key[1])].assign(
            control_of=lambda d: d["control_of"].fillna(""))
        _frontier_panel(axes[0][j], g, "work_fraction", style, "work (fraction of uniform's; passes at their "
                                                              "measured cost, search incl.)")
        _frontier_panel(axes[1][j], g, "train_seconds", style, "train seconds")
        axes[0][j].set_title(labels[key], loc="left")
    legend = {}  # every panel's lines (a method's variants differ between settings), each name once
    for ax in axes[0]:
        for h, n in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(n, h)
    fig.legend(list(legend.values()), list(legend), loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
               title="bars: 95% t interval over seeds")
    fig.tight_layout()
    return _save(fig, path)
