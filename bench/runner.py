"""Run a suite: expand it into cells, skip finished ones, resume interrupted ones,
keep going past failures and diverged cells, and report them at the end."""
from __future__ import annotations

import sys
import time
import traceback
from dataclasses import dataclass, field

from bench import tracking
from bench.cell import checkpoint_path
from bench.config import CellConfig
from bench.device import hardware_name, pick_device
from bench.errors import BenchError, Diverged, StoreError
from bench.suite import Suite


@dataclass
class SuiteOutcome:
    ran: int = 0
    skipped: int = 0
    failed: list[tuple[CellConfig, str]] = field(default_factory=list)
    diverged: list[tuple[CellConfig, str]] = field(default_factory=list)


def _eta(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def run_suite(suite: Suite, only_methods: set[str] | None = None, log=print, executor: str = "local",
              ray_address: str | None = None, cpus_per_cell: int | None = None) -> SuiteOutcome:
    from bench import claims
    from bench.executor import prepare, run_claimed, run_on_ray

    prepare(executor, cpus_per_cell)  # refuses a shared SQLite file; same thread count as the cells
    cells = suite.cells(only_methods)
    out = SuiteOutcome()
    hardware = {}
    keys = []
    for cfg in cells:  # one query up front: finished cells are skipped without loading anything
        hw = hardware.setdefault(cfg.device, hardware_name(pick_device(cfg.device)))
        keys.append(cfg.key(hw))
    finished = tracking.finished_runs(keys)
    for key in finished:  # left by a kill between finish() and its deletion
        checkpoint_path(key).unlink(missing_ok=True)
    todo = [c for c, k in zip(cells, keys) if k not in finished]
    out.skipped = len(cells) - len(todo)
    log(f"suite {suite.name}: {len(cells)} cells, {out.skipped} already finished, {len(todo)} to run"
        + (f" (expected: {suite.expected_runtime})" if suite.expected_runtime and todo else ""))
    if executor == "ray":
        return run_on_ray(suite.name, todo, out, log, address=ray_address, cpus_per_cell=cpus_per_cell)
    owner = claims.new_owner()
    spent = 0.0
    for i, cfg in enumerate(todo, 1):
        left = ""
        if out.ran:
            left = f", ~{_eta(spent / out.ran * (len(todo) - i + 1))} left"
        log(f"[{i}/{len(todo)}{left}] {cfg.label}")
        t0 = time.perf_counter()
        try:
            res = run_claimed(cfg, owner, tags={"suite": suite.name}, log=log)  # waits while another driver holds it
            log("  " + res.summary(cfg))
        except KeyboardInterrupt:
            log(f"interrupted during {cfg.label}: finished epochs are checkpointed; run again to resume")
            raise
        except StoreError:
            raise  # every later cell would fail the same way
        except Diverged as e:
            out.diverged.append((cfg, str(e)))
            log(f"  diverged: {e}")
        except BenchError as e:
            out.failed.append((cfg, str(e)))
            log(f"  failed: {e}")
        except Exception as e:  # a broken method must not stop the other cells
            out.failed.append((cfg, f"{type(e).__name__}: {e}"))
            log(f"  failed: {type(e).__name__}: {e}")
            traceback.print_exc(file=sys.stderr)
        out.ran += 1
        spent += time.perf_counter() - t0
    return out
