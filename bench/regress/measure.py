"""Measure a suite for the guard: every cell trained fresh `rounds` times, each method run
between two runs of its uniform reference (A B A B ... A), in CPU time with one torch
thread, into a temporary store.

Per method and round two numbers, each from runs side by side:
- train_cost: the run's CPU time of steps + method + search over its CPU
  time of steps (runs.Run.train_cost). Both halves come from the same run, so how fast the
  machine is at that moment cancels; what is left is the method's own work per unit of step.
- speedup: the mean cost of the two uniform runs around it over the method's cost
  (evaluation left out). Catches a method whose steps themselves got dearer.
The guard compares the median over rounds; the rounds' spread sets the tolerances.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

from bench.config import CellConfig
from bench.errors import BenchError
from bench.regress.runs import Run, train_once
from bench.suite import REFERENCE, Suite

ROUNDS = 5  # most rounds per guard run (a baseline sets fewer on a slow CPU); times in results/regress/calibration-*.md
THREADS = 1  # torch intra-op threads while measuring: all work in the one thread that thread_time() reads


def label(cfg: CellConfig, cells: list[CellConfig]) -> str:
    """The method's name, or more where the suite has several cells of one method."""
    if sum(c.method == cfg.method for c in cells) == 1:
        return cfg.method
    return cfg.label


def reference_of(cfg: CellConfig, suite: Suite) -> CellConfig:
    return cfg.replace(method=REFERENCE, drop=0.0, params=dict(suite.method_params.get(REFERENCE, {})))


def measure(suite: Suite, rounds: int = ROUNDS, log: Callable[..., None] = print, only: set[str] | None = None,
            workdir: str | Path | None = None) -> dict:
    """Train the suite's cells (those labelled in `only`, with their references, if given).

    Returns {"suite", "hardware", "torch", "rounds", "wall_seconds",
    "methods": {label: row}, "errors": {label: message}, "reference": {label: {cost_seconds, final_test_acc}}};
    a row holds backward_fraction, total_steps, final_test_acc, acc_delta_points, train_cost,
    speedup (medians over rounds), cost_seconds, config_key and samples {train_cost: [...], speedup: [...]}."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        return _measure(suite, rounds, log, only, workdir)
    finally:
        torch.set_num_threads(before)


def _measure(suite: Suite, rounds: int, log, only, workdir) -> dict:
    import torch

    from bench.device import hardware_name, pick_device

    t_start = time.perf_counter()
    all_cells = [c.replace(progress=False) for c in suite.cells()]
    refs = {c.config_key(): c for c in all_cells if c.method == REFERENCE}
    cells = [c for c in all_cells if c.method != REFERENCE and (only is None or label(c, all_cells) in only)]
    for c in cells:
        if reference_of(c, suite).config_key() not in refs:
            raise BenchError(f"suite {suite.name}: cell {label(c, all_cells)} has no uniform reference with the same "
                             "model, dataset, seed and settings")
    if only is not None:
        refs = {k: r for k, r in refs.items()
                if label(r, all_cells) in only or any(reference_of(c, suite).config_key() == k for c in cells)}
    hardware = ", ".join(sorted({hardware_name(pick_device(c.device)) for c in all_cells}))
    log(f"regress: suite {suite.name}, {len(cells)} method cells x {rounds} rounds, each between two uniform runs, "
        f"CPU time, trained fresh into a temporary store on {hardware}")

    ref_runs: dict[str, list[Run]] = {k: [] for k in refs}
    runs: dict[str, list[tuple[Run, str, int]]] = {c.config_key(): [] for c in cells}  # (run, ref key, ref index before)
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="bench-regress-", dir=workdir) as tmp:
        store = Path(tmp)
        first = next(iter(refs.values()), None)
        if first is not None:  # lazy initialisation of torch and MLflow off every measured run
            train_once(first.replace(epochs=1, train_limit=200, eval_limit=100), store / "warm-up")

        def reference(key: str) -> None:
            try:
                ref_runs[key].append(train_once(refs[key], store))
            except BenchError:
                raise
            except Exception as e:  # without the reference nothing can be compared
                raise BenchError(f"regress: the {REFERENCE} reference cell failed ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0] if str(e) else ''}); nothing can be compared") from e

        for r in range(rounds):
            shift = r % max(1, len(cells))  # rotate the order, so no method always follows the same one
            for c in cells[shift:] + cells[:shift]:
                if c.config_key() in errors:
                    continue
                rk = reference_of(c, suite).config_key()
                reference(rk)
                try:
                    run = train_once(c, store)
                except KeyboardInterrupt:
                    raise
                except Exception as e:  # a broken method is a finding, not a crash of the guard
                    errors[c.config_key()] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
                    log(f"  {label(c, all_cells):20s} FAILED: {errors[c.config_key()]}")
                    continue
                runs[c.config_key()].append((run, rk, len(ref_runs[rk]) - 1))
            log(f"  round {r + 1}/{rounds} done ({time.perf_counter() - t_start:.0f} s)")
        for k in refs:  # the closing A: every method run has a reference run after it
            reference(k)
        if not cells:
            for k in refs:
                for _ in range(rounds - 1):
                    reference(k)

    methods, ref_info = {}, {}
    for k, r in refs.items():
        lab = label(r, all_cells)
        methods[lab] = _row(ref_runs[k], [1.0], ref_runs[k], r)
        ref_info[lab] = {"cost_seconds": [x.cost_seconds for x in ref_runs[k]],
                         "final_test_acc": [x.final_test_acc for x in ref_runs[k]]}
    for c in cells:
        if c.config_key() in errors:
            continue
        got = runs[c.config_key()]
        speedups = [(ref_runs[rk][i].cost_seconds + ref_runs[rk][i + 1].cost_seconds) / 2 / run.cost_seconds
                    for run, rk, i in got]
        methods[label(c, all_cells)] = _row([g[0] for g in got], speedups, ref_runs[got[0][1]], c)
    return {
        "suite": suite.name,
        "hardware": hardware,
        "torch": torch.__version__,
        "rounds": rounds,
        "methods": methods,
        "errors": {label(c, all_cells): errors[c.config_key()] for c in cells if c.config_key() in errors},
        "reference": ref_info,
        "wall_seconds": time.perf_counter() - t_start,
    }


def _row(runs: list[Run], speedups: list[float], refs: list[Run], cfg: CellConfig) -> dict:
    accs = {r.final_test_acc for r in runs}
    ref_acc = statistics.median(r.final_test_acc for r in refs)
    acc = statistics.median(r.final_test_acc for r in runs)
    return {
        "backward_fraction": runs[0].backward_fraction,
        "total_steps": runs[0].steps,
        "train_cost": statistics.median(r.train_cost for r in runs),
        "speedup": statistics.median(speedups),
        "acc_delta_points": 100.0 * (acc - ref_acc),
        "final_test_acc": acc,
        "cost_seconds": statistics.median(r.cost_seconds for r in runs),
        "deterministic": len(accs) == 1 and len({(r.backward_fraction, r.steps) for r in runs}) == 1,
        "config_key": cfg.config_key(),
        "samples": {"train_cost": [r.train_cost for r in runs], "speedup": speedups if cfg.method != REFERENCE else []},
    }


def merge_better(first: dict, again: dict) -> list[str]:
    """Keep, per method and timing metric, the better of two measurements (`again` re-measured
    only some methods). A real regression fails both; a burst of load rarely does. Returns the
    methods re-measured (the reference too, when it came along: its train_cost is judged as well)."""
    done = []
    for lab, row in again["methods"].items():
        if lab not in first["methods"]:
            continue
        old = first["methods"][lab]
        old["remeasured"] = {m: [old[m], row[m]] for m in ("train_cost", "speedup")}
        if row["train_cost"] < old["train_cost"]:
            old["train_cost"], old["samples"]["train_cost"] = row["train_cost"], row["samples"]["train_cost"]
        if row["speedup"] > old["speedup"]:
            old["speedup"], old["samples"]["speedup"] = row["speedup"], row["samples"]["speedup"]
        done.append(lab)
    first["errors"].update(again["errors"])
    first["wall_seconds"] += again["wall_seconds"]
    return done
