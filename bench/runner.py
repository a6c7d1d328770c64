"""Run a suite: expand it into cells, skip finished ones, resume interrupted ones,
keep going past failures and diverged cells, and report them at the end.

Order matters for timing on a shared machine: cells run seed by seed, each seed's
uniform reference first, then its method cells, then the matched random controls
their realized budgets call for (bench/controls.py), so drift in machine load falls
on every method alike rather than on whichever ran last.
"""
from __future__ import annotations

import sys
import time
import traceback
from dataclasses import dataclass, field

from bench import tracking
from bench.cell import checkpoint_path
from bench.config import CellConfig
from bench.controls import REFERENCE, control_of_run
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


def interleaved(cells: list[CellConfig]) -> list[CellConfig]:
    """Seed by seed, the reference first within each seed; otherwise the suite's order."""
    seeds = list(dict.fromkeys(c.seed for c in cells))
    return sorted(cells, key=lambda c: (seeds.index(c.seed), c.method != REFERENCE))


class _Keys:
    """Store identities of cells, with the hardware name looked up once per device."""

    def __init__(self):
        self._hw: dict[str, str] = {}

    def __call__(self, cfg: CellConfig) -> str:
        hw = self._hw.setdefault(cfg.device, hardware_name(pick_device(cfg.device)))
        return cfg.key(hw)


def controls_for(cells: list[CellConfig], key=None) -> list[CellConfig]:
    """The matched controls the finished runs among `cells` call for (shared ones once)."""
    key = key or _Keys()
    runs = tracking.finished_runs([key(c) for c in cells])
    out: dict[str, CellConfig] = {}
    for cfg in cells:
        run = runs.get(key(cfg))
        ctl = control_of_run(cfg, run) if run is not None else None
        if ctl is not None:
            out.setdefault(ctl.config_key(), ctl)
    return list(out.values())


def run_suite(suite: Suite, only_methods: set[str] | None = None, log=print, executor: str = "local",
              ray_address: str | None = None, cpus_per_cell: int | None = None) -> SuiteOutcome:
    from bench.executor import prepare, run_on_ray

    prepare(executor, cpus_per_cell)  # refuses a shared SQLite file; same thread count as the cells
    cells = interleaved(suite.cells(only_methods))
    out, key = SuiteOutcome(), _Keys()
    finished = tracking.finished_runs([key(c) for c in cells])  # one query: finished cells load nothing
    for k in finished:  # left by a kill between finish() and its deletion
        checkpoint_path(k).unlink(missing_ok=True)
    todo = [c for c in cells if key(c) not in finished]
    out.skipped = len(cells) - len(todo)
    log(f"suite {suite.name}: {len(cells)} cells, {out.skipped} already finished, {len(todo)} to run, "
        f"then the matched controls their budgets call for"
        + (f" (expected: {suite.expected_runtime})" if suite.expected_runtime and todo else ""))
    if executor == "ray":
        run_on_ray(suite.name, todo, out, log, address=ray_address, cpus_per_cell=cpus_per_cell)
        controls = _unfinished(controls_for(cells, key), key, out)
        return run_on_ray(suite.name, controls, out, log, address=ray_address, cpus_per_cell=cpus_per_cell)
    local = _Local(suite.name, out, log)
    for seed in dict.fromkeys(c.seed for c in cells):
        local.run([c for c in todo if c.seed == seed], len(todo))
        local.run(_unfinished(controls_for([c for c in cells if c.seed == seed], key), key, out), 0, "control")
    return out


def _unfinished(controls: list[CellConfig], key, out: SuiteOutcome) -> list[CellConfig]:
    done = tracking.finished_runs([key(c) for c in controls])
    out.skipped += len(done)
    return [c for c in controls if key(c) not in done]


class _Local:
    """Cells one after another in this process, each claimed first (another driver may share the suite)."""

    def __init__(self, suite_name: str, out: SuiteOutcome, log):
        from bench import claims

        self.suite_name, self.out, self.log = suite_name, out, log
        self.owner, self.spent, self.done = claims.new_owner(), 0.0, 0

    def run(self, cfgs: list[CellConfig], total: int, role: str = "") -> None:
        from bench.executor import run_claimed

        out, log = self.out, self.log
        for cfg in cfgs:
            if role:
                where = f"[{role}]"
            else:
                self.done += 1
                left = f", ~{_eta(self.spent / (self.done - 1) * (total - self.done + 1))} left" if self.done > 1 else ""
                where = f"[{self.done}/{total}{left}]"
            log(f"{where} {cfg.label}")
            t0 = time.perf_counter()
            tags = {"suite": self.suite_name, **({"role": role} if role else {})}
            try:
                res = run_claimed(cfg, self.owner, tags=tags, log=log)  # waits while another driver holds it
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
            if not role:
                self.spent += time.perf_counter() - t0
