"""Run one cell (model x dataset x method x drop x seed) end to end, logged to MLflow.

The thin layer between a Trainer, the cell's MLflow run and its checkpoint file.
Resumable: after every epoch the Trainer's full state is checkpointed; a re-run of
an interrupted cell re-opens its MLflow run and goes on from the last finished
epoch, logging only what is not logged yet. A finished cell is never run twice.
A cell whose loss or weights stop being finite ends as diverged, never as a result.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench import hooks, tracking
from bench.config import CellConfig
from bench.data import load_data
from bench.device import cell_key, hardware_name, native_cpu_bf16, pick_device
from bench.engine import EpochRecord, Trainer, planned_steps
from bench.errors import BenchError, Diverged, StoreError
from bench.models import InputSpec, create_model, tokenizer_for
from bench.paths import PROJECT_ROOT, checkpoint_dir
from bench.timing import HARNESS, STAGES, StageTimer
from bench.work import work_metrics

CHECKPOINT_FORMAT = 4  # a checkpoint in another format is not resumed


@dataclass
class CellResult:
    key: str
    run_id: str
    status: str  # "finished" (trained now) or "skipped" (already finished before)
    metrics: dict[str, float] = field(default_factory=dict)

    def summary(self, cfg: CellConfig) -> str:
        m = self.metrics
        return (
            f"{self.status}: {cfg.label}  "
            f"test_acc={m.get('final_test_acc', float('nan')):.4f}  train={m.get('train_seconds', 0):.1f}s  "
            f"e2e={m.get('e2e_seconds', 0):.1f}s  backward_fraction={m.get('backward_fraction', 0):.3f}  run={self.run_id}"
        )


# what a run computes and measures: a change elsewhere (the report, the guard, docs, tests) does not change a run
RUN_CODE = ["bench", "methods", "baselines", ":(exclude)bench/report", ":(exclude)bench/regress",
            ":(exclude)bench/cli.py", ":(exclude)bench/mlflow_server.py"]


def git_commit() -> str:
    """The commit a run comes from, "-dirty" when the code that makes a run was modified."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *RUN_CODE],
                               cwd=PROJECT_ROOT, capture_output=True, text=True).stdout.strip()
        return (out.stdout.strip() or "unknown") + ("-dirty" if dirty else "")
    except OSError:
        return "unknown"


def checkpoint_path(key: str) -> Path:
    return checkpoint_dir() / f"{key}.pt"


def drop_checkpoints(keys) -> None:
    """Checkpoints of finished cells (left by a kill between the run's end and their deletion)."""
    for k in keys:
        checkpoint_path(k).unlink(missing_ok=True)


def load_cell(cfg: CellConfig):
    """The data and the model of a cell: everything past the method that can fail on bad input,
    before any run is opened."""
    tok_factory = tokenizer_for(cfg.model)
    data = load_data(cfg.dataset, tokenizer=tok_factory() if tok_factory else None, max_length=cfg.max_length,
                     val_fraction=cfg.val_fraction, train_limit=cfg.train_limit, eval_limit=cfg.eval_limit,
                     val_limit=cfg.val_limit, label_noise=cfg.label_noise)
    if cfg.train_limit is not None and cfg.train_limit > len(data.train):
        raise BenchError(f"train_limit {cfg.train_limit} is more than the {len(data.train)} training samples of "
                         f"{cfg.dataset} (after the validation carve); lower --train-limit or leave it out")
    spec = InputSpec(data.kind, data.num_classes, data.channels, data.size)
    torch.manual_seed(cfg.seed)
    return data, create_model(cfg.model, spec)


def refuse_idle(cfg: CellConfig, trainer: Trainer) -> None:
    """A cell that would hardly train is refused before its run opens."""
    n, steps = len(trainer.train), trainer.planned_steps
    if cfg.batch_size > n:
        raise BenchError(f"{cfg.label}: batch size {cfg.batch_size} is larger than the {n} training samples; "
                         f"lower --batch-size or raise --train-limit")
    if steps <= trainer.loop.schedule.warmup_steps and cfg.schedule != "constant":
        raise BenchError(f"{cfg.label}: {steps} planned optimizer step(s) never get past the LR warm-up "
                         f"({trainer.loop.schedule.warmup_steps} step(s)); raise --epochs or lower --batch-size")


_said = {"bf16": False}


def run_cell(cfg: CellConfig, tags: dict[str, str] | None = None, log=print) -> CellResult:
    """Train a cell unless it is finished (the one place that asks, right before training)."""
    device = pick_device(cfg.device)
    key = cell_key(cfg)
    method = cfg.build_method()  # the one validation: names, parameters, drop, refusal; before the store
    if cfg.cpu_bf16 and device.type == "cpu" and not native_cpu_bf16() and not _said["bf16"]:
        _said["bf16"] = True
        log("note: this CPU has no native bf16 (AVX512-BF16 or AMX): cpu_bf16 cells run emulated, slower than fp32")
    done = tracking.finished_runs([key]).get(key)
    if done is not None:
        drop_checkpoints([key])
        return CellResult(key, done.info.run_id, "skipped", dict(done.data.metrics))

    timer = StageTimer(device)
    t0 = timer.clock()  # set-up (data, model, a frozen trunk's precompute) is part of end-to-end time
    data, model = load_cell(cfg)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # every new shape is tuned untimed (bench/engine.py)
    trainer = Trainer(cfg, data, model, device, timer, method=method)
    setup_seconds = timer.clock() - t0
    refuse_idle(cfg, trainer)
    ckpt_path = checkpoint_path(key)
    ckpt = _load(ckpt_path)
    runs = tracking.runs_for(key)
    if ckpt and ckpt["run_id"] not in {r.info.run_id for r in runs}:
        ckpt = None  # a checkpoint from another tracking store: start afresh
    for stale in runs:  # runs that died without a checkpoint stay, marked killed
        status = stale.info.status, stale.data.tags.get("cell_status")
        if "RUNNING" in status or "running" in status:
            if ckpt is None or stale.info.run_id != ckpt["run_id"]:
                tracking.mark_killed(stale.info.run_id, "superseded: killed without a checkpoint")

    name = f"{cfg.model}-{cfg.dataset}-{cfg.method}-{cfg.drop}-s{cfg.seed}"
    run = tracking.CellRun(key, ckpt["run_id"] if ckpt else None, name=name)
    trainer.ctx.artifact_sink = run.artifact
    try:
        return _train(cfg, key, trainer, run, ckpt, ckpt_path, tags or {}, log, setup_seconds)
    except Diverged as d:
        ckpt_path.unlink(missing_ok=True)
        run.diverged(d.epoch, d.step, str(d))
        raise
    except StoreError:
        raise  # the store is gone: nothing can be recorded; the checkpoint stays for a resume
    except KeyboardInterrupt as e:
        _quietly(run.fail, "KILLED", "terminated" if type(e).__name__ == "Terminated" else "interrupted")
        raise
    except BaseException as e:
        _quietly(run.fail, "FAILED", f"{type(e).__name__}: {e}")
        raise


def _quietly(fn, *args) -> None:
    try:
        fn(*args)
    except Exception:
        pass  # the store failed too; the original error is the one to report (a resume settles the run)


def _train(cfg, key, trainer: Trainer, run, ckpt, ckpt_path, tags, log, setup_seconds: float) -> CellResult:
    method, timer, n = trainer.method, trainer.timer, len(trainer.train)
    run.params({
        "model": cfg.model, "dataset": cfg.dataset, "method": cfg.method, "drop": cfg.drop, "seed": cfg.seed,
        "epochs": cfg.epochs, "plan_epochs": cfg.plan_epochs or cfg.epochs, "batch_size": cfg.batch_size,
        "optimizer": trainer.optimizer_kind, "lr": cfg.lr, "schedule": cfg.schedule, "train_limit": cfg.train_limit,
        "eval_limit": cfg.eval_limit, "label_noise": cfg.label_noise, "n_train": n,
        "planned_steps": trainer.planned_steps, "compile": cfg.compile,
        **{f"method.{k}": v for k, v in {**hooks.param_defaults(type(method)), **cfg.params}.items()},
    })
    run.tags({
        "config_key": cfg.config_key(), "git_commit": git_commit(), "hardware": hardware_name(trainer.device),
        "device": trainer.device.type, "torch": torch.__version__, "faithful": method.faithful,
        "clock": "cuda events" if trainer.cuda else ("thread cpu time" if timer.thread_clock else "wall"),
        **tags,
    })

    history: list[EpochRecord] = []
    if ckpt:
        trainer.load_state_dict(ckpt["trainer"])
        history = [EpochRecord.from_state(h) for h in ckpt["history"]]
        setup_seconds += ckpt.get("setup_seconds", 0.0)
        run.tags({"resumed": "true"})
        logged = run.logged_steps("val_acc")
        for rec in history:  # an epoch checkpointed but not yet logged when the run died
            if rec.epoch not in logged:
                _log_epoch(run, rec)
        log(f"resuming {key} at epoch {len(history)} (run {run.run_id})")
    trainer.start()

    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=planned_steps(method, cfg.epochs), initial=planned_steps(method, len(history)), leave=False,
                   file=sys.stderr, disable=None, unit="step",
                   desc=f"{cfg.model}/{cfg.dataset}/{cfg.method} r={cfg.drop} s={cfg.seed}")
    for epoch in range(len(history), cfg.epochs):
        rec = trainer.train_epoch(epoch, on_step=bar.update if bar else None)
        with timer.stage(HARNESS):
            history.append(rec)
            _save(ckpt_path, {"format": CHECKPOINT_FORMAT, "run_id": run.run_id, "setup_seconds": setup_seconds,
                              "history": [h.state() for h in history], "trainer": trainer.state_dict()})
            _log_epoch(run, rec)
        if bar:
            bar.set_postfix(epoch=epoch, val_acc=f"{rec.val_acc:.3f}")
    if bar:
        bar.close()

    final = result_metrics(cfg, trainer, history, setup_seconds)
    run.tags({"batch_plan": ";".join(h.plan for h in history)})
    # a kill after the final metrics and before finish() leaves them logged: log them once
    if not (ckpt and "final_test_acc" in run.logged_metrics()):
        run.metrics(final, cfg.epochs)
    run.finish()
    drop_checkpoints([key])
    return CellResult(key, run.run_id, "finished", final)


def _log_epoch(run, rec: EpochRecord) -> None:
    """An epoch's probes, then its metrics: a kill between the two re-logs both, never half."""
    for step, acc, seconds in rec.probes:
        run.metrics({"probe_val_acc": acc, "probe_train_seconds": seconds}, step)
    run.metrics(rec.metrics(), rec.epoch)


def result_metrics(cfg: CellConfig, trainer: Trainer, history: list[EpochRecord], setup_seconds: float) -> dict:
    """The run's final record: accuracy, times, counts, measured pass costs and work fractions."""
    totals, last, budget = trainer.counts, history[-1], cfg.epochs * len(trainer.train)
    costs = trainer.pass_costs(clock=trainer.timer.clock)
    syncs = {k: float(sum(h.syncs.get(k, 0) for h in history)) for k in ("host_syncs", "harness_syncs")
             if any(k in h.syncs for h in history)}
    planned, steps = trainer.planned_steps, totals.steps
    final = {
        "final_val_acc": last.val_acc, "final_test_acc": last.test_acc,
        "best_val_acc": max(h.val_acc for h in history),
        "train_seconds": last.train_seconds, "search_seconds": last.search_seconds, "eval_seconds": last.eval_seconds,
        "setup_seconds": setup_seconds, "work_seconds": last.train_seconds + last.search_seconds,
        "e2e_seconds": setup_seconds + last.e2e_seconds,
        **{f"stage_{s}_seconds": trainer.timer.totals[s] for s in STAGES + ("other",)},
        **{f"total_{k}": v for k, v in totals.as_dict().items()},
        **{f"total_exit{k}": v for k, v in totals.exits.items()},
        "chance_acc": float(torch.bincount(trainer.test.y.cpu()).max()) / len(trainer.test),
        "plan_step_error": (steps - planned) / planned if planned and cfg.plan_epochs in (0, cfg.epochs) else 0.0,
        **work_metrics(totals, costs, budget),
        **costs.metrics(),
        **syncs,
        **({"train_metered_steps": trainer.meter.metered_steps(last.train_seconds),
            "meter_step_seconds": trainer.meter.mean_pace()} if trainer.meter else {}),
        **hooks.call_hook(trainer.method, "run_metrics"),
    }
    bn = trainer.bn_recomputed_accuracy()
    if bn is not None:  # a diagnostic: what the method's batch-norm statistics do to its test accuracy
        final["test_acc_bn_recomputed"] = bn
    return final


def _load(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    ckpt = torch.load(path, weights_only=False)
    return ckpt if ckpt.get("format") == CHECKPOINT_FORMAT else None


def _save(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
