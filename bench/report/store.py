"""Reading a suite's runs back from MLflow into one DataFrame (never from the memory of a run).

Only runs that ended FINISHED with the tag cell_status=finished are results
(`tracking.finished_runs`, newest per cell and hardware). Diverged runs (status
FAILED, tag cell_status=diverged) are read separately, to be listed, never as rows.
"""
from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from bench import tracking
from bench.controls import controls_of_run
from bench.report.metrics import run_metric_names
from bench.suite import REFERENCE

IDENTITY = (
    "hardware", "model", "dataset", "label_noise", "epochs", "setting", "method", "variant", "params", "control_of",
    "control_of_variant", "control_kind", "drop", "own_drop", "own_epochs", "seed", "label", "faithful", "git_commit", "clock",
    "config_key", "cell_key", "run_id", "start_time", "plan_is_uniform",
)
# Per-run series (lists): epoch-end values, and the curve time to target reads
# (sub-epoch probes when the run logged them, else epoch ends).
HISTORY_COLUMNS = ("hist_epoch", "hist_val_acc", "hist_work_seconds", "hist_e2e_seconds", "hist_train_loss",
                   "curve_val_acc", "curve_seconds", "curve_kind")
SORT = ["hardware", "model", "dataset", "label_noise", "epochs", "setting", "method", "variant", "control_kind", "drop",
        "seed"]


def setting_of(cfg) -> str:
    """A setting (everything a cell computes but method, its parameters, drop and seed) is
    named by the config_key of its uniform cell at seed 0."""
    return cfg.replace(method=REFERENCE, params={}, drop=0.0, seed=0).config_key()


def variant_of(params: dict[str, Any]) -> str:
    return ",".join(f"{k}={params[k]}" for k in sorted(params))


def _bool(v: Any) -> bool:
    return str(v).strip().lower() not in ("false", "0", "no")


def _scan(suite) -> tuple[set[str], list]:
    """Hardware names that ran any of the suite's cells, and the suite's diverged runs.
    One pass over the experiment: MLflow's filter has no IN for tags."""
    keys = {cfg.config_key() for cfg in suite.cells()}
    c, exp = tracking.client(), tracking.experiment_id()
    hardware, diverged, token = set(), [], None
    while True:
        page = c.search_runs([exp], filter_string="", max_results=1000, page_token=token)
        for run in page:
            t = run.data.tags
            if t.get("config_key") not in keys:
                continue
            hardware.add(t.get("hardware", "unknown"))
            if run.info.status == "FAILED" and t.get("cell_status") == "diverged":
                diverged.append(run)
        token = page.token
        if not token:
            return hardware, diverged


def finished_cells(suite) -> list[tuple[Any, Any, Any, str]]:
    """(cfg, run, owner, kind) for every finished run of the suite's cells (owner None, kind ""), on
    every hardware that ran one, then for each method run its controls' runs (found again from what
    the method run logged, bench/controls.py), each shown as a row of the method cell it controls
    (owner: that cell's config; kind: selection or cost)."""
    hardware, _ = _scan(suite)
    wanted = {cfg.key(hw): cfg for cfg in suite.cells() for hw in sorted(hardware)}
    found = tracking.finished_runs(list(wanted))
    rows = [(wanted[k], run, None, "") for k, run in found.items()]
    if not suite.controls:
        return rows
    controls: dict[str, list] = {}  # control key -> [(control cfg, the method cfg it controls, kind)]
    for cfg, run, _, _ in rows:
        for kind, ctl in controls_of_run(cfg, run).items():
            controls.setdefault(ctl.key(run.data.tags.get("hardware", "unknown")), []).append((ctl, cfg, kind))
    for k, run in tracking.finished_runs(list(controls)).items():
        for ctl, owner, kind in controls[k]:
            rows.append((ctl, run, owner, kind))
    return rows


def _series(c, run_id: str, name: str) -> dict[int, float]:
    by_step: dict[int, float] = {}
    for m in sorted(c.get_metric_history(run_id, name), key=lambda m: (m.step, m.timestamp)):
        by_step[m.step] = m.value
    return by_step


def _history(c, run_id: str, epochs: int) -> dict[str, Any]:
    """Epoch-end values (steps 0..epochs-1; the final metrics sit at step=epochs) and probes."""
    s = {n: _series(c, run_id, n) for n in ("val_acc", "train_seconds", "search_seconds", "e2e_seconds",
                                            "probe_val_acc", "probe_train_seconds", "train_loss")}
    steps = sorted(k for k in s["val_acc"] if 0 <= k < epochs)
    nan = float("nan")
    train = [s["train_seconds"].get(k, nan) for k in steps]
    search = [s["search_seconds"].get(k, 0.0) for k in steps]
    out = {
        "hist_epoch": steps,
        "hist_val_acc": [s["val_acc"][k] for k in steps],
        "hist_work_seconds": [a + b for a, b in zip(train, search)],
        "hist_e2e_seconds": [s["e2e_seconds"].get(k, nan) for k in steps],
        "hist_train_loss": [s["train_loss"].get(k, nan) for k in steps],
    }
    probes = sorted(set(s["probe_val_acc"]) & set(s["probe_train_seconds"]))
    if probes:
        acc = [s["probe_val_acc"][k] for k in probes]
        sec = [s["probe_train_seconds"][k] + _search_by(s["probe_train_seconds"][k], train, search) for k in probes]
        out.update(curve_val_acc=acc, curve_seconds=sec, curve_kind="probes")
    else:
        out.update(curve_val_acc=out["hist_val_acc"], curve_seconds=out["hist_work_seconds"], curve_kind="epochs")
    return out


def _search_by(train_at_probe: float, train: list[float], search: list[float]) -> float:
    """Search seconds up to the end of the epoch a probe falls in (search runs at epoch starts,
    so this counts all search done before the probe, and at worst that epoch's search early)."""
    for t, s in zip(train, search):
        if not math.isnan(t) and t >= train_at_probe - 1e-9:
            return s
    return search[-1] if search else 0.0


def collect(suite) -> pd.DataFrame:
    """One row per finished run of the suite's cells: identity, final metrics, histories. A control's
    row carries its owner's setting and drop (it is compared there) and its own drop and epochs."""
    wanted = run_metric_names()
    c = tracking.client()
    rows = []
    for cfg, run, owner, kind in finished_cells(suite):
        t, m = run.data.tags, run.data.metrics
        at = owner or cfg
        rows.append({
            "hardware": t.get("hardware", "unknown"), "model": at.model, "dataset": at.dataset,
            "label_noise": float(at.label_noise), "epochs": int(at.epochs), "setting": setting_of(at),
            "method": cfg.method, "variant": variant_of({k: v for k, v in cfg.params.items() if k != "plan"}),
            "params": json.dumps(cfg.params, sort_keys=True, default=str),
            "control_of": owner.method if owner else "",
            "control_of_variant": variant_of(owner.params) if owner else "",  # two variants of one method: two controls
            "control_kind": kind, "drop": float(at.drop), "own_drop": float(cfg.drop), "own_epochs": int(cfg.epochs),
            "seed": int(at.seed), "label": cfg.label,
            "faithful": _bool(t.get("faithful", True)), "git_commit": t.get("git_commit", "unknown"),
            "clock": t.get("clock", "wall"), "config_key": cfg.config_key(), "cell_key": t.get("cell_key", ""), "run_id": run.info.run_id,
            "start_time": int(run.info.start_time or 0), "plan_is_uniform": _plan_is_uniform(cfg, run),
            **{k: float(m.get(k, np.nan)) for k in wanted},
            **{k: float(v) for k, v in m.items() if k.startswith(("stage_", "total_", "cost_"))},
            **_history(c, run.info.run_id, int(cfg.epochs)),
        })
    df = pd.DataFrame(rows)
    extra = sorted(set(df.columns) - set(IDENTITY) - set(wanted) - set(HISTORY_COLUMNS)) if rows else []
    df = df.reindex(columns=list(IDENTITY) + list(wanted) + extra + list(HISTORY_COLUMNS))
    if rows:
        df = df.sort_values(SORT, kind="stable").reset_index(drop=True)
    return df


def _plan_is_uniform(cfg, run) -> bool:
    """The run trained every sample every epoch in full batches: uniform's run is its selection control."""
    from bench.controls import uniform_plan

    n, plan = run.data.params.get("n_train"), run.data.tags.get("batch_plan", "")
    return bool(n and plan and plan == uniform_plan(int(n), cfg.batch_size, cfg.epochs))


def diverged(suite) -> pd.DataFrame:
    """The suite's diverged runs whose cell has no finished run on that hardware: label, epoch, step."""
    _, runs = _scan(suite)
    cfgs = {cfg.config_key(): cfg for cfg in suite.cells()}
    finished = tracking.finished_runs([r.data.tags.get("cell_key", "") for r in runs]) if runs else {}
    rows = {}
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        t = run.data.tags
        if t.get("cell_key") in finished:
            continue
        cfg = cfgs[t["config_key"]]
        rows[t.get("cell_key")] = {"hardware": t.get("hardware", "unknown"), "label": cfg.label,
                                   "method": cfg.method, "drop": float(cfg.drop), "seed": int(cfg.seed),
                                   "epoch": t.get("diverged_epoch", "?"), "step": t.get("diverged_step", "?")}
    return pd.DataFrame(list(rows.values()), columns=["hardware", "label", "method", "drop", "seed", "epoch", "step"])
