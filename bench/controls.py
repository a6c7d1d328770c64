"""The two random controls of every method row, scheduled by the harness from what the
method's run did (never from what the method says it would do).

- Selection control: a random subset that replays the run's realized batch plan: in every
  epoch the same batch sizes in the same order (so the same backward count, wherever its full
  epochs fell, and the same step structure: a method that shrinks each batch gets a random
  ceil(keep * B) of each batch), filled with random samples. It asks whether the ranking
  picks better samples than chance.
- Cost control: a random subset given the same cost-weighted total work as the run
  (training forwards, scoring and partial forwards, backwards and search, weighted by their
  measured seconds: bench/work.py), spread evenly over its epochs with its LR schedule fully
  decayed inside that budget; a run that cost more than uniform gets more epochs. It asks
  whether the method is worth its cost. A run with no work beyond its training passes has no
  separate cost control: its selection control is one. A run within 3% of uniform's work has
  uniform itself as its cost control.

Both are ordinary `random_subset` cells, so equal controls share one cell and none runs twice.
"""
from __future__ import annotations

import math

from bench.config import CellConfig
from bench.work import Counts, PassCosts, search_seconds_equiv, train_seconds_equiv

REFERENCE = "uniform"
CONTROL = "random_subset"
KINDS = ("selection", "cost")
UNIFORM_COST = 0.03  # a run within 3% of uniform's work has uniform itself as its cost control


def _counts(m: dict) -> Counts:
    names = ("forwards", "backwards", "selection_forwards", "partial_forwards", "search_forwards", "search_backwards",
             "steps")
    exits = {int(k[len("total_exit"):]): int(v) for k, v in m.items() if k.startswith("total_exit")}
    return Counts(**{n: int(m.get(f"total_{n}", 0)) for n in names}, exits=exits)


def uniform_plan(n: int, batch_size: int, epochs: int) -> str:
    full, tail = divmod(n, batch_size)
    ep = ",".join(p for p in (f"{batch_size}x{full}" if full else "", f"{tail}x1" if tail else "") if p)
    return ";".join([ep] * epochs)


def subset_plan(n_train: int, batch_size: int, epochs: int, keep_count: int, warmup_epochs: int) -> str:
    """The plan a plain random subset realizes: full epochs, then keep_count samples in batches."""
    full = uniform_plan(n_train, batch_size, 1)
    part = uniform_plan(keep_count, batch_size, 1)
    return ";".join([full] * warmup_epochs + [part] * (epochs - warmup_epochs))


def selection_control(cfg: CellConfig, plan: str, n_train: int) -> CellConfig | None:
    """The run's selection control; None for the reference and the random subset themselves, and
    for a run whose plan is uniform's (its control is uniform training itself). A plan a plain random
    subset realizes (full epochs, then keep x N in batches) gets that random subset, which is the same
    training: so it is shared with the suite's own random subset and with other methods of that shape."""
    if cfg.method in (REFERENCE, CONTROL) or not plan or plan == uniform_plan(n_train, cfg.batch_size, cfg.epochs):
        return None
    keep_count = max(1, round((1 - cfg.drop) * n_train))
    for w in range(cfg.epochs):
        if plan == subset_plan(n_train, cfg.batch_size, cfg.epochs, keep_count, w):
            return cfg.replace(method=CONTROL, params={"warmup_epochs": w} if w else {})
    return cfg.replace(method=CONTROL, drop=0.0, params={"plan": plan})


def control_drop(keep: float, n_train: int, epochs: int, batch_size: int) -> float:
    """A control's drop ratio, rounded to as few decimals as keep its total backward count
    within half a batch of the target's (so equal budgets share one cell)."""
    samples = max(1, n_train * epochs)
    decimals = max(2, math.ceil(math.log10(max(1.0, samples / max(1, batch_size)))) + 1)
    drop = round(1.0 - keep, decimals)
    return min(max(drop, 0.0), 1.0 - 1.0 / n_train)


def cost_control(cfg: CellConfig, metrics: dict, n_train: int) -> CellConfig | None:
    """The run's cost control, or None when its selection control is one (no work beyond its training
    passes), or for the reference and the random subset themselves."""
    costs = PassCosts.from_metrics(metrics)
    c = _counts(metrics)
    if cfg.method in (REFERENCE, CONTROL) or costs is None or not (
            c.selection_forwards or c.partial_forwards or c.search_forwards or c.search_backwards):
        return None
    work = train_seconds_equiv(c, costs) + search_seconds_equiv(c, costs)
    samples = work / (costs.forward + costs.backward)  # training passes the same work buys
    if abs(samples / (cfg.epochs * n_train) - 1) <= UNIFORM_COST:
        return None  # uniform training is its cost control
    epochs = max(cfg.epochs, math.ceil(samples / n_train - 1e-9))
    keep = samples / (epochs * n_train)
    drop = control_drop(keep, n_train, epochs, cfg.batch_size)
    if drop <= 0.0:
        return None if epochs == cfg.epochs else cfg.replace(method=REFERENCE, drop=0.0, params={}, epochs=epochs)
    return cfg.replace(method=CONTROL, drop=drop, params={}, epochs=epochs)


def controls_of_run(cfg: CellConfig, run) -> dict[str, CellConfig]:
    """{kind: control cell} of a finished method run, from what it logged."""
    m, n = run.data.metrics, run.data.params.get("n_train")
    if n is None:
        return {}
    out = {}
    sel = selection_control(cfg, run.data.tags.get("batch_plan", ""), int(n))
    if sel is not None:
        out["selection"] = sel
    cost = cost_control(cfg, m, int(n))
    if cost is not None and (sel is None or cost.config_key() != sel.config_key()):
        out["cost"] = cost
    return out
