"""summary.md (header, legend, table) and the csv files."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.report import stats
from bench.report.columns import FAR_OFFSET, TARGETS, method_faithfulness
from bench.report.metrics import METRICS, Metric, nan
from bench.report.summary import panel_labels, row_name
from bench.controls import CONTROL
from bench.suite import REFERENCE

LEFT = {"faithful", "notes", "paper"}


def _present(m: Metric, s: pd.DataFrame) -> bool:
    if not m.table:
        return False
    if not m.optional:
        return True
    col = s[m.name] if m.name in s else pd.Series(dtype=object)
    return any(not nan(v) and v != "" for v in col)


def shown(s: pd.DataFrame) -> list[Metric]:
    return [m for m in METRICS if _present(m, s)]


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(df: pd.DataFrame, highlight: str | None = None) -> str:
    """The summary as a markdown table; rows of method `highlight` are marked with ▶ and bold."""
    s = df
    if s.empty:
        return "(no finished runs)\n"
    ident = [("hardware", "hardware", s["hardware"].nunique() > 1, lambda r: r["hardware"]),
             ("model", "model", True, lambda r: r["model"]), ("dataset", "dataset", True, lambda r: r["dataset"]),
             ("noise", "label_noise", bool((s["label_noise"] != 0).any()), lambda r: f"{r['label_noise']:g}"),
             ("epochs", "epochs", s["epochs"].nunique() > 1, lambda r: str(int(r["epochs"])))]
    ident = [(h, f) for h, _, show, f in ident if show]
    metrics = shown(s)
    variants = s.groupby("method")["variant"].nunique()
    head = [h for h, _ in ident] + ["method", "drop"] + [m.header for m in metrics]
    align = ["---"] * (len(ident) + 1) + ["---:"] + ["---" if m.name in LEFT else "---:" for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for _, r in s.iterrows():
        name = row_name(r, variants[r["method"]] > 1)
        if highlight and r["method"] == highlight:
            name = f"▶ **{name}**"
        cells = [f(r) for _, f in ident] + [name, f"{r['drop']:g}"] + [m.cell(r) for m in metrics]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def legend(s: pd.DataFrame) -> str:
    lines = ["Columns:", ""] + [f"- **{m.header}**: {m.legend}" for m in shown(s)]
    return "\n".join(lines) + "\n\n"


def _unfaithful(runs: pd.DataFrame, s: pd.DataFrame, labels) -> str:
    """Every row whose method is not implemented as its paper says, grouped by caveat."""
    by_caveat: dict[tuple[str, str], list[str]] = {}
    for _, r in s[~s["faithful"].astype(bool)].iterrows():
        g = runs[(runs["hardware"] == r["hardware"]) & (runs["setting"] == r["setting"])
                 & (runs["method"] == r["method"]) & (runs["variant"] == r["variant"]) & (runs["drop"] == r["drop"])]
        faithful, caveat = method_faithfulness(r["method"], g)
        if faithful and g["faithful"].all():
            caveat = ""
        elif faithful:
            caveat = "marked not faithful when it ran"
        rows = by_caveat.setdefault((row_name(r, True), caveat), [])
        rows.append(f"{labels[(r['hardware'], r['setting'])]} drop {r['drop']:g}")
    if not by_caveat:
        return "none"
    return "; ".join(f"{name} ({', '.join(rows)})" + (f": {cav}" if cav else "")
                     for (name, cav), rows in by_caveat.items())


def _runs_line(suite, runs: pd.DataFrame) -> str:
    declared = {c.config_key() for c in suite.cells()}
    own = runs[runs["control_of"].fillna("") == ""] if "control_of" in runs else runs
    ctl = runs.drop(own.index)
    done = own["config_key"].isin(declared)
    return (f"- runs: {int(done.sum())} of the suite's {len(declared)} cells finished, plus "
            f"{ctl['run_id'].nunique()} matched random control runs the harness added (shared controls count once)")


def header(suite, runs: pd.DataFrame, s: pd.DataFrame, diverged: pd.DataFrame) -> str:
    lines = [f"# Suite {suite.name}", ""]
    if suite.description:
        lines += [str(suite.description).strip(), ""]
    labels = panel_labels(runs)
    lines += [
        f"- hardware: {'; '.join(sorted(runs['hardware'].unique()))}",
        _runs_line(suite, runs),
        f"- git commits: {', '.join(sorted(runs['git_commit'].unique()))}",
        f"- intervals: 95% percentile bootstrap over seeds ({stats.N_RESAMPLES} resamples, fixed generator); "
        "comparisons pair runs by seed within one setting and hardware; uniform, the reference, runs once at drop 0",
    ]
    tg = []
    for r in s.drop_duplicates(["hardware", "setting"]).itertuples():
        parts = [f"{t} {100 * getattr(r, f'ttt_{t}_target'):.2f}%" for t in TARGETS
                 if not nan(getattr(r, f"ttt_{t}_target"))]
        if parts:
            tg.append(f"{labels[(r.hardware, r.setting)]}: {', '.join(parts)}")
    if tg:
        lines.append(f"- time-to-target targets (validation accuracy; near = uniform's median final minus "
                     f"{suite.target_offset:g} points, far = minus {FAR_OFFSET:g} points): {'; '.join(tg)}")
    if len(diverged):
        lines.append("- diverged (no result, not in the table): " + "; ".join(
            f"{d.label} [{d.hardware}] at epoch {d.epoch}, step {d.step}" for d in diverged.itertuples()))
    else:
        lines.append("- diverged: none")
    lines.append(f"- not faithful to their papers: {_unfaithful(runs, s, labels)}")
    if (suite.paper or {}).get("source"):
        lines.append(f"- paper figures: {suite.paper['source']}")
    return "\n".join(lines) + "\n\n"


def verdict(r) -> str:
    """One method row against its matched control: beat, tied (the interval holds 0) or lost."""
    d, lo, hi = (r.get(f"acc_change_control_pts{x}", float("nan")) for x in ("", "_ci_low", "_ci_high"))
    if r.get("active_share") == 0:
        return "its switch never turned on: the run was its random control under another name"
    if nan(d):
        if r["method"] == CONTROL:
            return "the random control itself (random subset of the same size from the first epoch)"
        if r.get("backward_fraction", 0) >= 1.0:
            return "never dropped a sample: no control; see Δ acc vs uniform"
        return "no matched control run (a run logged before controls existed: re-run the suite)"
    if nan(lo) or nan(hi):
        return f"{d:+.2f} pts against its control, one seed: no verdict"
    word = "beat" if lo > 0 else "lost to" if hi < 0 else "tied"
    return f"{word} its matched control: {d:+.2f} pts ({lo:+.2f} to {hi:+.2f})"


def verdicts(s: pd.DataFrame) -> str:
    """Per setting, one line per method row: the answer the suite exists for."""
    rows = s[(s["method"] != REFERENCE) & (s["control_of"].fillna("") == "")] if "control_of" in s else s.iloc[:0]
    if rows.empty:
        return ""
    labels = panel_labels(s)
    out = ["## Verdicts: test accuracy against the matched random control", ""]
    for (hw, setting), g in rows.groupby(["hardware", "setting"], sort=False):
        out += [f"**{labels[(hw, setting)]}**", ""]
        out += [f"- {row_name(r)} drop {r['drop']:g}: {verdict(r)}" for _, r in g.iterrows()]
        out.append("")
    return "\n".join(out) + "\n"


def early_leads(suite, runs: pd.DataFrame) -> str:
    """Per setting and method: validation accuracy after each of the suite's first
    `early_epochs` epochs minus uniform's, paired by seed, with its bootstrap interval."""
    n = int(getattr(suite, "early_epochs", 0) or 0)
    if n <= 0 or runs.empty or "hist_val_acc" not in runs:
        return ""
    main = runs[runs["control_of"].fillna("") == ""] if "control_of" in runs else runs
    labels = panel_labels(main.assign(control_of=""))
    out = [f"## Early epochs: lead over uniform in validation accuracy (points; mean over seeds, 95% bootstrap)", ""]
    for (hw, setting), g in main.groupby(["hardware", "setting"], sort=True):
        ref = g[g["method"] == REFERENCE]
        if ref.empty:
            continue
        out += [f"**{labels.get((hw, setting), setting)}**", "",
                "| method | " + " | ".join(f"after epoch {e + 1}" for e in range(n)) + " |",
                "|---|" + "---|" * n]

        def at(frame, e):
            return frame.assign(acc=[v[e] if isinstance(v, list) and len(v) > e else float("nan")
                                     for v in frame["hist_val_acc"]])

        uni = [stats.estimate(at(ref, e)["acc"] * 100) for e in range(n)]
        out.append("| uniform (accuracy) | " + " | ".join(f"{u.value:.2f}" for u in uni) + " |")
        for (method, variant, drop), m in g[g["method"] != REFERENCE].groupby(["method", "variant", "drop"]):
            cells = []
            for e in range(n):
                d = stats.difference_estimate(at(ref, e), at(m, e), "acc", 100.0)
                cells.append("n/a" if nan(d.value) else f"{d.value:+.2f} ({d.low:+.2f} to {d.high:+.2f})")
            name = method + (f" [{variant}]" if variant else "") + (f" drop {drop:g}" if drop else "")
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out) + "\n"


def markdown(suite, runs: pd.DataFrame, s: pd.DataFrame, diverged: pd.DataFrame) -> str:
    return header(suite, runs, s, diverged) + legend(s) + render(s) + "\n" + verdicts(s) + early_leads(suite, runs)


def write_csv(df: pd.DataFrame, path: Path) -> None:
    df.to_csv(path, index=False, float_format="%.6g", lineterminator="\n")
