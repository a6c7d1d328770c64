"""Run a suite: expand it into cells, skip finished ones, resume interrupted ones, run each
method's two random controls as soon as the method's run has finished (bench/controls.py),
keep going past failures and diverged cells, and report them at the end.

Order: seed by seed, and within a seed in a shuffled order seeded by the seed, so no method
(the uniform reference included) systematically runs first or last; a method's controls run
right after it. Cells run in the pool bench/executor.py gives (this process, worker
processes, or Ray tasks).
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from bench import tracking
from bench.cell import drop_checkpoints
from bench.config import CellConfig
from bench.controls import KINDS, controls_of_run
from bench.device import cell_key
from bench.errors import StoreError
from bench.suite import Suite


@dataclass
class SuiteOutcome:
    ran: int = 0
    skipped: int = 0
    controls: int = 0  # control runs trained now
    failed: list[tuple[CellConfig, str]] = field(default_factory=list)
    diverged: list[tuple[CellConfig, str]] = field(default_factory=list)


def ordered(cells: list[CellConfig]) -> list[CellConfig]:
    """Seed by seed in the suite's order of seeds; within a seed, a shuffle seeded by the seed."""
    seeds = list(dict.fromkeys(c.seed for c in cells))
    out = []
    for s in seeds:
        group = [c for c in cells if c.seed == s]
        random.Random(1000 + s).shuffle(group)
        out += group
    return out


def _eta(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def run_suite(suite: Suite, only_methods: set[str] | None = None, log=print, executor: str = "local",
              ray_address: str | None = None, cpus_per_cell: int | None = None, workers: int = 1,
              controls: bool = True) -> SuiteOutcome:
    from bench.executor import make_pool, prepare

    threads = cpus_per_cell or (1 if executor == "ray" or workers > 1 else None)
    prepare(executor, threads, workers)
    cells = ordered(suite.cells(only_methods))
    keys = {c.config_key(): cell_key(c) for c in cells}
    finished = tracking.finished_runs(list(keys.values()))
    drop_checkpoints(finished)
    out = SuiteOutcome(skipped=sum(keys[c.config_key()] in finished for c in cells))
    todo = [c for c in cells if keys[c.config_key()] not in finished]
    for label, why in suite.skipped():
        log(f"not run: {label}: {why}")
    log(f"suite {suite.name}: {len(cells)} cells, {out.skipped} already finished, {len(todo)} to run, "
        f"then the random controls their runs call for"
        + (f" (expected: {suite.expected_runtime})" if suite.expected_runtime and todo else ""))
    pool = make_pool(executor, workers, threads, ray_address, log)
    queue: list[tuple[CellConfig, str]] = []  # (cell, role): controls go to the front
    seen: set[str] = set(keys)
    for cfg, run in ((c, finished[keys[c.config_key()]]) for c in cells if keys[c.config_key()] in finished):
        queue += _controls(cfg, run, seen) if controls else []
    queue += [(c, "") for c in todo]
    t0, done_main = time.perf_counter(), 0
    try:
        while queue or pool.busy:
            while queue and pool.busy < pool.workers:
                cfg, role = queue.pop(0)
                pool.submit(cfg, {"suite": suite.name, **({"role": role} if role else {})})
            cfg, done = pool.next_done()
            role = "control" if cfg.config_key() not in keys else ""
            if not role:
                done_main += 1
                left = (time.perf_counter() - t0) / done_main * (len(todo) - done_main)
                where = f"[{done_main}/{len(todo)}{f', ~{_eta(left)} left' if done_main < len(todo) else ''}]"
            else:
                where = "[control]"
            log(_line(where, cfg, done))
            if done.status in ("finished", "skipped"):
                out.ran += done.status == "finished" and not role
                out.controls += done.status == "finished" and bool(role)
                out.skipped += done.status == "skipped"
                if controls and not role:
                    run = tracking.client().get_run(done.result.run_id)
                    queue[:0] = _controls(cfg, run, seen)
            elif done.status == "diverged":
                out.diverged.append((cfg, done.error))
            else:
                out.failed.append((cfg, done.error))
    except KeyboardInterrupt:
        log("interrupted: finished epochs are checkpointed; run the same command again to resume")
        raise
    except StoreError:
        raise
    finally:
        pool.close()
    return out


def _controls(cfg: CellConfig, run, seen: set[str]) -> list[tuple[CellConfig, str]]:
    """The run's controls not yet queued (shared ones once)."""
    out = []
    for kind, ctl in controls_of_run(cfg, run).items():
        if ctl.config_key() not in seen:
            seen.add(ctl.config_key())
            out.append((ctl, f"{kind} control"))
    return out


def _line(where: str, cfg: CellConfig, done) -> str:
    if done.status in ("finished", "skipped"):
        return f"{where} {done.result.summary(cfg)}" + (f"  on {done.host}" if done.host else "")
    return f"{where} {done.status}: {cfg.label}: {done.error}"


__all__ = ["KINDS", "SuiteOutcome", "ordered", "run_suite"]
