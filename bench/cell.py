"""Run one cell (model x dataset x method x drop x seed) end to end, logged to MLflow.

Resumable: after every epoch the full state (model, optimizer, schedule, method,
random generators, clocks, counts) is checkpointed; a re-run of an interrupted
cell re-opens its MLflow run and goes on from the last finished epoch, logging
only what is not logged yet. A finished cell is never run twice.
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import torch

from bench import tracking
from bench.config import CellConfig
from bench.data import load_data
from bench.engine import Counts, HarnessContext, Trainer, hardware_name, pick_device, planned_steps
from bench.method import Method
from bench.models import InputSpec, create_model, tokenizer_for
from bench.paths import PROJECT_ROOT, checkpoint_dir
from bench.registry import METHODS
from bench.timing import HARNESS, STAGES, StageTimer


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


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True).stdout.strip()
        return (out.stdout.strip() or "unknown") + ("-dirty" if dirty else "")
    except OSError:
        return "unknown"


def build_method(cfg: CellConfig) -> Method:
    return METHODS.get(cfg.method).build(cfg.drop, dict(cfg.params))


def prepare(cfg: CellConfig):
    """Everything that can fail on bad input, before any run is opened."""
    cfg.check_names()
    method = build_method(cfg)
    tok_factory = tokenizer_for(cfg.model)
    data = load_data(cfg.dataset, tokenizer=tok_factory() if tok_factory else None, max_length=cfg.max_length,
                     val_fraction=cfg.val_fraction, train_limit=cfg.train_limit, eval_limit=cfg.eval_limit,
                     label_noise=cfg.label_noise)
    spec = InputSpec(data.kind, data.num_classes, data.channels, data.size)
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, spec)
    return method, data, model


def run_cell(cfg: CellConfig, tags: dict[str, str] | None = None, log=print) -> CellResult:
    device = pick_device(cfg.device)
    hardware = hardware_name(device)
    key = cfg.key(hardware)
    cfg.check_names()
    build_method(cfg)  # bad parameters fail before the store is touched
    done = tracking.finished_run(key)
    if done is not None:
        return CellResult(key, done.info.run_id, "skipped", dict(done.data.metrics))

    method, data, model = prepare(cfg)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    timer = StageTimer(device)
    trainer = Trainer(cfg, data, model, device, timer)
    ckpt_path = checkpoint_dir() / f"{key}.pt"
    ckpt = torch.load(ckpt_path, weights_only=False) if ckpt_path.exists() else None
    runs = tracking.runs_for(key)
    if ckpt and ckpt["run_id"] not in {r.info.run_id for r in runs}:
        ckpt = None  # a checkpoint from another tracking store: start afresh
    for stale in runs:  # runs that died without a checkpoint stay, marked killed
        if stale.info.status == "RUNNING" and (ckpt is None or stale.info.run_id != ckpt["run_id"]):
            tracking.client().set_terminated(stale.info.run_id, "KILLED")

    run = tracking.CellRun(key, ckpt["run_id"] if ckpt else None, name=f"{cfg.model}-{cfg.dataset}-{cfg.method}-{cfg.drop}-s{cfg.seed}")
    try:
        return _train(cfg, key, hardware, method, data, trainer, timer, run, ckpt, ckpt_path, tags or {}, log)
    except KeyboardInterrupt:
        run.fail("KILLED", "interrupted")
        raise
    except BaseException as e:
        run.fail("FAILED", f"{type(e).__name__}: {e}")
        raise


def _warm_up(trainer: Trainer, opt, sched) -> None:
    """Two untimed steps so lazy init, cuDNN autotuning (and compilation of the full-batch
    shape) stay off the clock; model, optimizer and generators are restored after."""
    state = copy.deepcopy((trainer.model.state_dict(), opt.state_dict(), sched.state_dict()))
    n = min(trainer.cfg.batch_size, len(trainer.train))
    from bench.method import Batch

    for _ in range(2):
        trainer.step(trainer.model, trainer.step_model, opt, sched, Batch(torch.arange(n)), Counts())
    trainer.model.load_state_dict(state[0])
    opt.load_state_dict(state[1])
    sched.load_state_dict(state[2])
    trainer.aug_gen.manual_seed(trainer.cfg.seed + 7)
    torch.cuda.synchronize()


def _train(cfg, key, hardware, method, data, trainer: Trainer, timer: StageTimer, run, ckpt, ckpt_path, tags, log) -> CellResult:
    ctx = HarnessContext(trainer, cfg.drop, cfg.epochs, cfg.seed, artifact_sink=run.artifact)
    method.setup(ctx)
    total_steps = planned_steps(method, cfg.epochs)
    opt, sched = trainer.make_optimizer(trainer.model, method, cfg.epochs)
    n = len(data.train)
    run.params({
        "model": cfg.model, "dataset": cfg.dataset, "method": cfg.method, "drop": cfg.drop, "seed": cfg.seed,
        "epochs": cfg.epochs, "batch_size": cfg.batch_size, "optimizer": trainer.optimizer_kind,
        "lr": cfg.lr, "train_limit": cfg.train_limit, "eval_limit": cfg.eval_limit, "label_noise": cfg.label_noise,
        "n_train": n, "planned_steps": total_steps, "compile": cfg.compile,
        **{f"method.{k}": v for k, v in {**type(method).param_defaults(), **cfg.params}.items()},
    })
    run.tags({
        "config_key": cfg.config_key(), "git_commit": git_commit(), "hardware": hardware, "device": trainer.device.type, "torch": torch.__version__,
        "faithful": type(method).faithful, "compile_time_in_timing": cfg.compile, **tags,
    })

    start_epoch, history, totals = 0, [], Counts()
    if ckpt:
        trainer.model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        sched.load_state_dict(ckpt["sched"])
        method.load_state_dict(ckpt["method"])
        ctx.generator.set_state(ckpt["ctx_gen"])
        trainer.aug_gen.set_state(ckpt["aug_gen"])
        torch.set_rng_state(ckpt["rng"])
        if trainer.cuda and ckpt.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ckpt["cuda_rng"])
        totals = Counts(**ckpt["counts"])
        ctx.counts = Counts(**ckpt["ctx_counts"])
        history, start_epoch = ckpt["history"], ckpt["epoch"] + 1
        run.tags({"resumed": "true"})
        logged = run.logged_steps("val_acc")
        for rec in history:  # an epoch checkpointed but not yet logged when the run died
            if rec["epoch"] not in logged:
                run.metrics(rec["metrics"], rec["epoch"])
        log(f"resuming {key} at epoch {start_epoch} (run {run.run_id})")
    elif trainer.cuda:
        _warm_up(trainer, opt, sched)
    timer.start(ckpt["timer"] if ckpt else None)

    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=planned_steps(method, start_epoch), leave=False, file=sys.stderr, disable=None,
                   desc=f"{cfg.model}/{cfg.dataset}/{cfg.method} r={cfg.drop} s={cfg.seed}", unit="step")

    for epoch in range(start_epoch, cfg.epochs):
        counts = Counts()
        before = ctx.counts.as_dict()
        loss_sum = trainer.run_epoch(method, epoch, trainer.model, trainer.step_model, opt, sched, counts,
                                     on_step=bar.update if bar else None)
        for k, v in ctx.counts.as_dict().items():  # selection and search passes of this epoch
            setattr(counts, k, getattr(counts, k) + v - before[k])
        totals.add(counts)
        val_acc, val_loss = trainer.evaluate(trainer.val)
        test_acc, _ = trainer.evaluate(trainer.test)
        timer.flush()
        t = timer.totals
        metrics = {
            "val_acc": val_acc, "val_loss": val_loss, "test_acc": test_acc,
            "train_loss": loss_sum.item() / max(1, counts.backwards),
            "train_seconds": timer.train_seconds(), "search_seconds": t["search"],
            "eval_seconds": t["evaluation"], "e2e_seconds": timer.total_seconds(),
            "lr": sched.get_last_lr()[0],
            **{f"epoch_{k}": v for k, v in counts.as_dict().items()},
        }
        with timer.stage(HARNESS):
            history.append({"epoch": epoch, "metrics": metrics})
            _save(ckpt_path, {
                "run_id": run.run_id, "epoch": epoch, "history": history, "model": trainer.model.state_dict(),
                "opt": opt.state_dict(), "sched": sched.state_dict(), "method": method.state_dict(),
                "ctx_gen": ctx.generator.get_state(), "aug_gen": trainer.aug_gen.get_state(),
                "rng": torch.get_rng_state(), "cuda_rng": torch.cuda.get_rng_state() if trainer.cuda else None,
                "timer": timer.state_dict(), "counts": totals.as_dict(), "ctx_counts": ctx.counts.as_dict(),
            })
            run.metrics(metrics, epoch)
        if bar:
            bar.set_postfix(epoch=epoch, val_acc=f"{val_acc:.3f}")
    if bar:
        bar.close()

    budget = cfg.epochs * n
    last = history[-1]["metrics"]
    final = {
        "final_val_acc": last["val_acc"], "final_test_acc": last["test_acc"],
        "best_val_acc": max(h["metrics"]["val_acc"] for h in history),
        "train_seconds": last["train_seconds"], "e2e_seconds": last["e2e_seconds"],
        "search_seconds": last["search_seconds"], "eval_seconds": last["eval_seconds"],
        **{f"stage_{s}_seconds": timer.totals[s] for s in STAGES + ("other",)},
        **{f"total_{k}": v for k, v in totals.as_dict().items()},
        "backward_fraction": totals.backwards / budget,
        "forward_fraction": (totals.forwards + totals.selection_forwards) / budget,
        "realized_drop": 1 - totals.backwards / budget,
    }
    run.metrics(final, cfg.epochs)
    run.finish()
    ckpt_path.unlink(missing_ok=True)
    return CellResult(key, run.run_id, "finished", final)


def _save(path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
