"""One summary row per hardware x setting x method x variant x drop, every column from METRICS."""
from __future__ import annotations

import numpy as np
import pandas as pd

from bench.errors import BenchError
from bench.report import columns
from bench.report.metrics import METRICS, Group, summary_columns
from bench.suite import REFERENCE

GROUP = ["hardware", "model", "dataset", "label_noise", "epochs", "setting", "method", "variant", "control_of",
         "control_of_variant", "control_kind", "drop"]


def all_columns() -> list[str]:
    return GROUP + summary_columns()


def check_paper(paper: dict, suite_name: str) -> None:
    figs = paper.get("figures", [])
    if not isinstance(figs, list) or any(not isinstance(f, dict) or not {"method", "metric", "value"} <= set(f)
                                         for f in figs):
        raise BenchError(f"suite {suite_name}: paper figures must be a list of {{method, metric, value, [drop, model, "
                         f"dataset, note]}} (see bench/report/__init__.py)")
    tgts = paper.get("targets", [])
    if not isinstance(tgts, list) or any(not isinstance(t, dict) or not isinstance(t.get("val_acc"), (int, float))
                                         for t in tgts):
        raise BenchError(f"suite {suite_name}: paper targets must be a list of {{val_acc: percent, [model, dataset, "
                         f"note]}} (see bench/report/__init__.py)")


def paper_target(paper: dict, model: str, dataset: str) -> float:
    for t in paper.get("targets") or []:
        if t.get("model") in (None, model) and t.get("dataset") in (None, dataset):
            return float(t["val_acc"]) / 100.0
    return float("nan")


def targets(ref: pd.DataFrame, suite, model: str, dataset: str) -> dict[str, float]:
    """Validation accuracies (fractions) each time-to-target column aims at, for one setting."""
    base = float(ref["final_val_acc"].median()) if len(ref) else float("nan")
    return {"near": base - float(suite.target_offset) / 100.0, "far": base - columns.FAR_OFFSET / 100.0,
            "paper": paper_target(suite.paper or {}, model, dataset)}


def _with_uniform(runs: pd.DataFrame, ctl: pd.DataFrame, ref: pd.DataFrame, kind: str, uniform_is_control) -> pd.DataFrame:
    """The row's `kind` control runs, plus uniform's run of each seed for which bench/controls.py ran no
    control because uniform training itself is that seed's control (`uniform_is_control(runs)`: a mask)."""
    from bench.controls import CONTROL, REFERENCE

    if runs.empty or runs["method"].iloc[0] in (REFERENCE, CONTROL) or ref.empty:
        return ctl
    seeds = runs[uniform_is_control(runs) & ~runs["seed"].isin(ctl["seed"])]["seed"]
    add = ref[ref["seed"].isin(seeds)]
    return pd.concat([ctl, add.assign(control_kind=kind)]) if len(add) else ctl


def _near_uniform_work(runs: pd.DataFrame) -> pd.Series:
    """Runs with passes beyond training whose work came within 3% of uniform's: uniform is their cost control."""
    from bench.controls import UNIFORM_COST

    if "work_fraction" not in runs:
        return pd.Series(False, index=runs.index)
    extra = sum(runs[c].fillna(0) for c in ("total_selection_forwards", "total_partial_forwards",
                                              "total_search_forwards") if c in runs)
    return (extra > 0) & ((runs["work_fraction"] - 1).abs() <= UNIFORM_COST)


def _kept_uniform_plan(runs: pd.DataFrame) -> pd.Series:
    """Runs that trained every sample every epoch in full batches: uniform is their selection control."""
    if "plan_is_uniform" not in runs:
        return pd.Series(False, index=runs.index)
    return runs["plan_is_uniform"].fillna(False).astype(bool)


def with_uniform_cost(runs: pd.DataFrame, cost: pd.DataFrame, ref: pd.DataFrame) -> pd.DataFrame:
    return _with_uniform(runs, cost, ref, "cost", _near_uniform_work)


def with_uniform_selection(runs: pd.DataFrame, sel: pd.DataFrame, ref: pd.DataFrame) -> pd.DataFrame:
    return _with_uniform(runs, sel, ref, "selection", _kept_uniform_plan)


def _rank(r: pd.Series) -> tuple:
    """uniform first, then random_subset, then methods by name, each method's controls after it."""
    owner = r["control_of"] or r["method"]
    variant = r["control_of_variant"] if r["control_of"] else r["variant"]
    return ({REFERENCE: 0, "random_subset": 1}.get(owner, 2), owner, variant, r["drop"], r["control_kind"])


def summary(df: pd.DataFrame, suite) -> pd.DataFrame:
    """One row per (hardware, setting, method, variant, drop); the columns are METRICS' (see the legend)."""
    paper = suite.paper or {}
    check_paper(paper, suite.name)
    if df.empty:
        return pd.DataFrame(columns=all_columns())
    for col in ("control_of", "control_of_variant", "control_kind"):  # a frame built by hand
        df = df.assign(**{col: df[col].fillna("") if col in df else ""})
    rows = []
    for (hw, setting), runs in df.groupby(["hardware", "setting"], sort=True):
        ref = runs[(runs["method"] == REFERENCE) & (runs["control_of"] == "")]
        first = runs.iloc[0]
        tg = targets(ref, suite, first["model"], first["dataset"])
        for key, g in runs.groupby(GROUP, sort=True, dropna=False):
            k = dict(zip(GROUP, key))

            def controls(kind: str) -> pd.DataFrame:
                if k["control_of"]:
                    return runs.iloc[:0]
                return runs[(runs["control_of"] == k["method"]) & (runs["control_of_variant"] == (k["variant"] or ""))
                            & np.isclose(runs["drop"], k["drop"]) & (runs["control_kind"] == kind)]

            cost, sel = controls("cost"), controls("selection")
            if not k["control_of"]:
                cost, sel = with_uniform_cost(g, cost, ref), with_uniform_selection(g, sel, ref)
            group = Group(k, g.sort_values("seed"), ref, sel, cost, tg, paper)
            row = dict(k)
            for m in METRICS:
                row.update(m.values(group))
            rows.append(row)
    out = pd.DataFrame(rows).reindex(columns=all_columns())
    order = sorted(range(len(out)), key=lambda i: (
        tuple(out.iloc[i][c] for c in GROUP[:6]), _rank(out.iloc[i])))
    return out.iloc[order].reset_index(drop=True)


def panel_labels(df: pd.DataFrame) -> dict[tuple[str, str], str]:
    """A readable, unique name per (hardware, setting): model/dataset, noise, epochs, hardware as needed."""
    multi_hw, multi_ep = df["hardware"].nunique() > 1, df["epochs"].nunique() > 1
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
    return {k: (v if seen[v] == 1 else f"{v} #{k[1][:6]}") for k, v in out.items()}


def row_name(r, several_variants: bool = False) -> str:
    """How a row's method reads: its variant when the method has several, its role when it is a control."""
    variant = ",".join(p for p in str(r["variant"] or "").split(",") if p and not p.startswith("control_of="))
    name = r["method"] + (f" ({variant})" if several_variants and variant else "")
    if not r["control_of"]:
        return name
    owner_variant = str(r.get("control_of_variant") or "")
    return f"{r.get('control_kind') or 'matched'} control [{r['control_of']}{f' ({owner_variant})' if owner_variant else ''}]"
