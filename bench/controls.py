"""Matched random controls, scheduled by the harness for every method run.

A method's row means something only beside a random subset that spent the same
realized backward budget in the same shape: the same leading full epochs (a
method's warm-up), then a random subset of the realized size in every other
epoch. The shape is read from what the run did (its per-epoch backward
counts), never from what the method says it would do, so a method whose
switch never turned on gets uniform training as its control.

Controls are ordinary `random_subset` cells: methods that realized the same
shape share one control, and a control is never run twice. The runner runs
each seed's controls right after that seed's method cells; the report finds a
method row's control again from the method run's logged shape.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from bench.config import CellConfig

REFERENCE = "uniform"
CONTROL = "random_subset"


@dataclass(frozen=True)
class Shape:
    full_epochs: int  # leading epochs in which every training sample got a backward pass
    keep: float  # backward share of the remaining epochs (1.0 when none remain)


def shape_of(epoch_backwards: Sequence[float], n_train: int) -> Shape:
    full = 0
    for b in epoch_backwards:
        if b < n_train:
            break
        full += 1
    rest = list(epoch_backwards[full:])
    keep = sum(rest) / (len(rest) * n_train) if rest else 1.0
    return Shape(full, min(1.0, keep))


def control_drop(keep: float, n_train: int, epochs: int, batch_size: int) -> float:
    """The control's drop ratio, rounded to as few decimals as keep its total backward
    count within half a batch of the method's (so equal budgets share one cell)."""
    samples = max(1, n_train * epochs)
    decimals = max(2, math.ceil(math.log10(max(1.0, samples / max(1, batch_size)))) + 1)
    drop = round(1.0 - keep, decimals)
    return min(max(drop, 0.0), 1.0 - 1.0 / n_train)


def control_for(cfg: CellConfig, shape: Shape, n_train: int) -> CellConfig | None:
    """The matched control of a method cell; None for the reference, and for a run that
    never dropped anything (its control is uniform training itself)."""
    if cfg.method == REFERENCE or shape.full_epochs >= cfg.epochs or shape.keep >= 1.0:
        return None
    selective = cfg.epochs - shape.full_epochs
    drop = control_drop(shape.keep, n_train, selective, cfg.batch_size)
    params = {"warmup_epochs": shape.full_epochs} if shape.full_epochs else {}
    return cfg.replace(method=CONTROL, drop=drop, params=params)


def control_of_run(cfg: CellConfig, run) -> CellConfig | None:
    """The matched control of a finished method run, from what it logged (`full_epochs`,
    `selective_keep`, `n_train`); None when it needs none or is its own control."""
    m, n = run.data.metrics, run.data.params.get("n_train")
    if "full_epochs" not in m or n is None:
        return None  # logged before controls existed
    ctl = control_for(cfg, Shape(int(m["full_epochs"]), float(m["selective_keep"])), int(n))
    return None if ctl is None or ctl.config_key() == cfg.config_key() else ctl
