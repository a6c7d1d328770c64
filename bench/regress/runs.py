"""One training run of one cell, as the guard sees it: CPU seconds per stage, the realized
work and the accuracy. The only module of the guard that knows how a cell is trained, so
a change in bench/cell.py is adapted here."""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from bench.config import CellConfig
from bench.errors import BenchError
from bench.timing import STAGES

STEP_STAGES = ("data", "forward", "backward", "optimizer")  # the training step: the same code for every method
METHOD_STAGES = ("method", "search")  # where a method's own code runs
COST_STAGES = tuple(s for s in STAGES if s != "evaluation") + ("other",)  # what training (search included) costs
assert set(STEP_STAGES + METHOD_STAGES) <= set(STAGES), "bench.timing.STAGES renamed: update bench/regress/runs.py"


@dataclass(frozen=True)
class Run:
    method: str
    stages: dict[str, float]  # CPU seconds per stage (thread time), evaluation included
    steps: int
    backward_fraction: float
    final_test_acc: float
    wall_seconds: float

    @property
    def step_seconds(self) -> float:
        return sum(self.stages[s] for s in STEP_STAGES)

    @property
    def method_seconds(self) -> float:
        return sum(self.stages[s] for s in METHOD_STAGES)

    @property
    def train_cost(self) -> float:
        """CPU time of steps plus the method's own work, in units of the steps' CPU time: both
        from this run, so a machine that is faster or slower right now cancels out."""
        return (self.step_seconds + self.method_seconds) / self.step_seconds

    @property
    def cost_seconds(self) -> float:
        """CPU seconds of training and search, evaluation left out."""
        return sum(self.stages[s] for s in COST_STAGES)


@contextlib.contextmanager
def temporary_store(root: Path) -> Iterator[Path]:
    """Point MLflow and the checkpoints at a fresh folder under `root` for the duration."""
    root.mkdir(parents=True, exist_ok=True)
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "BENCH_CHECKPOINTS")}
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["BENCH_CHECKPOINTS"] = str(root / "checkpoints")
    try:
        yield root
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def train_once(cfg: CellConfig, store: Path) -> Run:
    """Train `cfg` fresh into `store` with CPU-time stage clocks. The run is marked superseded
    after, so the same cell can train again in the same store."""
    from bench import tracking
    from bench.cell import run_cell
    from bench.timing import thread_cpu_time

    t0 = time.perf_counter()
    with temporary_store(store), thread_cpu_time():
        res = run_cell(cfg, tags={"suite": "regress"}, log=lambda *_: None)
        if res.status == "finished":
            tracking.client().set_tag(res.run_id, "cell_status", "superseded")
    if res.status != "finished":  # a fresh store: cannot happen, and must never pass silently
        raise BenchError(f"regress: cell {cfg.label} was not trained fresh ({res.status})")
    m = res.metrics
    return Run(
        method=cfg.method,
        stages={s: float(m.get(f"stage_{s}_seconds", 0.0)) for s in STAGES + ("other",)},
        steps=int(m["total_steps"]),
        backward_fraction=float(m["backward_fraction"]),
        final_test_acc=float(m["final_test_acc"]),
        wall_seconds=time.perf_counter() - t0,
    )
