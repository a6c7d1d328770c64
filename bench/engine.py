"""The training engine: one loop for image and text classification.

The harness owns everything here: data placement and augmentation, the step,
the optimizer and its schedule, evaluation, the clock and the sample counts.
Methods only choose batches (bench/method.py). On a GPU the data stay on the
device as uint8 and are cropped and flipped there (airbench style).
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from bench.config import CellConfig
from bench.context import Counts, HarnessContext
from bench.data import Data, FileImages, Split
from bench.device import hardware_name, pick_device
from bench.errors import Diverged
from bench.method import Batch, Method, Scores, call_hook, checked_batches, num_batches
from bench.models import Classifier
from bench.timing import StageTimer
from bench.workload import OPTIMIZERS, WORKLOADS, Schedule

__all__ = ["Counts", "EpochRecord", "HarnessContext", "Schedule", "Trainer", "hardware_name", "pick_device",
           "planned_steps"]


@dataclass
class EpochRecord:
    """One epoch's results: what is logged at step = epoch."""

    epoch: int
    val_acc: float
    val_loss: float
    test_acc: float  # nan before the last epoch: the test split is evaluated once, at the end
    train_loss: float
    train_seconds: float
    search_seconds: float
    eval_seconds: float
    e2e_seconds: float
    lr: float
    counts: Counts  # this epoch's work only
    probes: list = field(default_factory=list)  # [optimizer step, probe val acc, train seconds] inside the epoch

    def metrics(self) -> dict[str, float]:
        d = asdict(self)
        d.pop("epoch"), d.pop("counts"), d.pop("probes")
        if math.isnan(d["test_acc"]):
            d.pop("test_acc")
        return {**d, **{f"epoch_{k}": v for k, v in self.counts.as_dict().items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "EpochRecord":
        return cls(**{**d, "counts": Counts(**d["counts"])})


@dataclass
class Loop:
    """What one training run steps: the cell's own, or a search trial's copy."""

    method: Method
    model: torch.nn.Module
    step_model: torch.nn.Module
    opt: torch.optim.Optimizer
    schedule: Schedule
    sched: torch.optim.lr_scheduler.LambdaLR
    counts: Counts


class Trainer:
    """One cell's training: model, optimizer, schedule, generators, clock and one Counts.

    Built without a method it only places data and evaluates (tests of a method's
    pieces build their own context on it)."""

    def __init__(self, cfg: CellConfig, data: Data, model: Classifier, device: torch.device,
                 timer: StageTimer | None = None, *, method: Method | None = None, artifact_sink=None):
        self.cfg, self.data, self.device = cfg, data, device
        self.timer = timer or StageTimer(device)
        self.workload = WORKLOADS[data.kind]
        self.model = model.to(device)
        self.cuda = device.type == "cuda"
        self.amp = torch.autocast("cuda", dtype=torch.bfloat16) if self.cuda else torch.autocast("cpu", enabled=False)
        if data.kind == "image":  # faster on both: 1.45x for the tiny CNN's step on 2 CPU cores
            self.model = self.model.to(memory_format=torch.channels_last)
        self.step_model = torch.compile(self.model) if cfg.compile else self.model
        self.train = self._place(data.train)
        self.val, self.test = self._place(data.val), self._place(data.test)
        if hasattr(self.model, "warm"):  # a model's precomputed frozen part: filled here, off the clock
            self.model.warm([self.train, self.val, self.test])
        if data.kind == "image":
            self.mean = torch.tensor(data.mean, device=device).view(1, -1, 1, 1)
            self.std = torch.tensor(data.std, device=device).view(1, -1, 1, 1)
        self.aug_seed = cfg.seed + self.workload.augment_seed_offset
        self.aug_gen = torch.Generator(device=device).manual_seed(self.aug_seed)
        self.optimizer_kind = cfg.optimizer if cfg.optimizer != "auto" else self.workload.optimizer
        self.counts = Counts()
        self._resumed_clock: dict | None = None
        if method is not None:
            self.method = method
            self.ctx = HarnessContext(self, cfg.drop, cfg.epochs, cfg.seed, self.counts, artifact_sink)
            call_hook(method, "setup", self.ctx)
            self.planned_steps = planned_steps(method, cfg.epochs)
            self.loop = self._loop(method, self.model, self.step_model, cfg.epochs, self.counts)
            # probes every so many steps, the same for every method of a setting: time to target
            # is read between epoch ends, on a fixed validation subset, off the train clock
            full_epoch = num_batches(len(self.train), cfg.batch_size)
            self.probe_every = cfg.eval_every or max(1, math.ceil(full_epoch / self.workload.probes_per_epoch))
            self.probe_idx = torch.arange(min(len(self.val), self.workload.probe_samples))
            self.probe_y = self.val.y[self.probe_idx].to(self.device)

    # -- data

    def _place(self, split: Split) -> Split:
        """Keep a split on the device when it fits in a quarter of free memory."""
        if not self.cuda or isinstance(split.x, FileImages):
            return split
        size = split.x.numel() * split.x.element_size() + (0 if split.mask is None else split.mask.numel() * 8)
        if size < 0.25 * torch.cuda.mem_get_info(self.device)[0]:
            return Split(split.x.to(self.device), split.y.to(self.device),
                         None if split.mask is None else split.mask.to(self.device))
        return Split(split.x.pin_memory() if isinstance(split.x, torch.Tensor) else split.x, split.y, split.mask)

    def inputs(self, split: Split, idx: torch.Tensor, augment: bool = False):
        on = split.y.device
        i = idx.to(on, non_blocking=True)
        x = split.x[idx] if isinstance(split.x, FileImages) else split.x[i]
        x = x.to(self.device, non_blocking=True)
        y = split.y[i].to(self.device, non_blocking=True)
        mask = None if split.mask is None else split.mask[i].to(self.device, non_blocking=True)
        if self.data.kind == "image":
            x = x.float().div_(255)
            if augment:
                x = self._augment(x)
            x = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        return x, mask, y

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        """Random crop (reflect-padded by about size/14) and, where labels allow, horizontal flip."""
        n, _, h, w = x.shape
        p = max(1, h // self.workload.crop_pad_divisor)
        padded = F.pad(x, (p, p, p, p), mode="reflect")
        dy = torch.randint(0, 2 * p + 1, (n, 1, 1), device=x.device, generator=self.aug_gen)
        dx = torch.randint(0, 2 * p + 1, (n, 1, 1), device=x.device, generator=self.aug_gen)
        rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy).expand(n, h, w)
        cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx).expand(n, h, w)
        nidx = torch.arange(n, device=x.device).view(n, 1, 1).expand(n, h, w)
        out = padded.permute(0, 2, 3, 1)[nidx, rows, cols].permute(0, 3, 1, 2)
        if self.data.flip:
            flip = torch.rand(n, 1, 1, 1, device=x.device, generator=self.aug_gen) < 0.5
            out = torch.where(flip, out.flip(3), out)
        return out

    # -- optimizer and the loop

    def _loop(self, method: Method, model, step_model, epochs: int, counts: Counts) -> Loop:
        """A fresh optimizer and LR schedule planned for the steps `method` will take in `epochs`."""
        cfg, d = self.cfg, OPTIMIZERS[self.optimizer_kind]
        lr = cfg.lr if cfg.lr is not None else d.base_lr(cfg.batch_size)
        wd = cfg.weight_decay if cfg.weight_decay is not None else d.weight_decay
        if self.optimizer_kind == "sgd":
            opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=wd)
        else:
            opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
        plan = Schedule(d, planned_steps(method, epochs), epochs)
        return Loop(method, model, step_model, opt, plan, torch.optim.lr_scheduler.LambdaLR(opt, plan), counts)

    def step(self, loop: Loop, batch: Batch):
        t = self.timer
        with t.stage("data"):
            x, mask, y = self.inputs(self.train, batch.indices, augment=True)
            w = None if batch.weights is None else batch.weights.to(self.device, non_blocking=True)
        with t.stage("forward"):
            loop.model.train()
            with self.amp:
                logits = loop.step_model(x, mask)
            losses = F.cross_entropy(logits.float(), y, reduction="none")
            loss = (losses * w).mean() if w is not None else losses.mean()
        with t.stage("backward"):
            loss.backward()
        with t.stage("optimizer"):
            loop.opt.step()
            loop.opt.zero_grad(set_to_none=True)
            loop.sched.step()
        loop.counts.forwards += len(batch)
        loop.counts.backwards += len(batch)
        loop.counts.steps += 1
        return logits.detach().float(), losses.detach(), loss.detach()

    def _epoch(self, loop: Loop, epoch: int, on_step=None, watch: bool = False, probes: list | None = None):
        """One epoch of `loop`; returns the summed training loss (a device tensor) and, when
        `watch`, the first step whose loss was not finite (-1: none). On CPU that stops the
        epoch at once; on a GPU it is tracked on the device, read once at the epoch's end.
        With `probes`, a validation probe is appended every `probe_every` steps."""
        t, method = self.timer, loop.method
        loss_sum = torch.zeros((), device=self.device)
        first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        with t.stage("bookkeeping"):
            call_hook(method, "start_epoch", epoch)
            # re-plan the schedule from what the method now knows of its remaining epochs
            loop.schedule.replan(loop.sched.last_epoch + planned_steps(method, loop.schedule.epochs, start=epoch))
        it = checked_batches(method, epoch, len(self.train))
        while True:
            with t.stage("selection"):
                batch = next(it, None)
            if batch is None:
                break
            logits, losses, loss = self.step(loop, batch)
            loss_sum += losses.sum()
            if watch:
                bad = ~torch.isfinite(loss)
                if not self.cuda and bad:
                    return loss_sum, torch.tensor(loop.counts.steps)
                if self.cuda:
                    first_bad = torch.where((first_bad < 0) & bad, loop.counts.steps, first_bad)
            with t.stage("bookkeeping"):
                call_hook(method, "observe", batch, logits, losses)
            t.flush()
            if probes is not None and loop.counts.steps % self.probe_every == 0:
                probes.append(self.probe())
            if on_step:
                on_step()
        with t.stage("bookkeeping"):
            call_hook(method, "end_epoch", epoch)
        return loss_sum, first_bad

    def train_epoch(self, epoch: int, on_step=None) -> EpochRecord:
        """Train one epoch, evaluate, and say what it did. Raises Diverged on a non-finite
        training loss or non-finite weights."""
        before, probes = self.counts.as_dict(), []
        loss_sum, first_bad = self._epoch(self.loop, epoch, on_step, watch=True, probes=probes)
        bad = int(first_bad)
        if bad >= 0:
            raise Diverged(epoch, bad, "the training loss is not finite")
        state = [p for p in self.model.parameters()] + [b for b in self.model.buffers() if b.is_floating_point()]
        if not bool(torch.stack([torch.isfinite(p).all() for p in state]).all()):
            raise Diverged(epoch, self.counts.steps, "the weights are not finite")
        counts = self.counts.since(before)
        val_acc, val_loss = self.evaluate(self.val)
        # test once, after the last epoch: nothing reads it earlier, and on small text cells it cost a third of the run
        test_acc = self.evaluate(self.test)[0] if epoch == self.cfg.epochs - 1 else float("nan")
        self.timer.flush()
        t = self.timer.totals
        return EpochRecord(
            epoch, val_acc, val_loss, test_acc, loss_sum.item() / max(1, counts.backwards),
            self.timer.train_seconds(), t["search"], t["evaluation"], self.timer.total_seconds(),
            self.loop.sched.get_last_lr()[0], counts, probes)

    def train_copy(self, method: Method, ctx: HarnessContext, epochs: int) -> None:
        """Train `ctx.model` (a copy) with `method` for `epochs`: its own optimizer and schedule,
        its work counted in `ctx.counts` (search trials)."""
        loop = self._loop(method, ctx.model, ctx.model, epochs, ctx.counts)
        for e in range(epochs):
            self._epoch(loop, e)

    # -- evaluation and scoring

    @torch.no_grad()
    def forward_eval(self, model, split: Split, idx: torch.Tensor) -> Scores:
        model.eval()
        out, losses = [], []
        w = self.workload
        bs = max(self.cfg.batch_size, w.eval_batch_gpu if self.cuda else w.eval_batch_cpu)
        for s in range(0, len(idx), bs):
            x, mask, y = self.inputs(split, idx[s : s + bs])
            with self.amp:
                logits = model(x, mask).float()
            out.append(logits)
            losses.append(F.cross_entropy(logits, y, reduction="none"))
        return Scores(torch.cat(out), torch.cat(losses))

    def probe(self) -> list:
        """[step, accuracy on the fixed validation subset, train seconds so far]."""
        with self.timer.stage("evaluation"):
            sc = self.forward_eval(self.model, self.val, self.probe_idx)
            acc = (sc.logits.argmax(1) == self.probe_y).float().mean().item()
        return [self.counts.steps, acc, self.timer.train_seconds()]

    def evaluate(self, split: Split, model=None) -> tuple[float, float]:
        model = model or self.model
        with self.timer.stage("evaluation"):
            sc = self.forward_eval(model, split, torch.arange(len(split)))
            y = split.y.to(self.device)
            acc = (sc.logits.argmax(1) == y).float().mean().item()
            loss = sc.losses.mean().item()
        return acc, loss

    # -- the clock, checkpoints

    def start(self) -> None:
        """Start the clock: from the restored totals when resumed, else (on a GPU) after two
        untimed warm-up steps, so lazy init and cuDNN autotuning stay off the clock."""
        if self._resumed_clock is None and self.cuda:
            self._warm_up()
        self.timer.start(self._resumed_clock)

    def _warm_up(self) -> None:
        loop = self.loop
        state = copy.deepcopy((self.model.state_dict(), loop.opt.state_dict(), loop.sched.state_dict()))
        n = min(self.cfg.batch_size, len(self.train))
        scratch = Loop(loop.method, loop.model, loop.step_model, loop.opt, loop.schedule, loop.sched, Counts())
        for _ in range(2):
            self.step(scratch, Batch(torch.arange(n)))
        self.model.load_state_dict(state[0])
        loop.opt.load_state_dict(state[1])
        loop.sched.load_state_dict(state[2])
        self.aug_gen.manual_seed(self.aug_seed)
        torch.cuda.synchronize()

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(), "opt": self.loop.opt.state_dict(), "sched": self.loop.sched.state_dict(),
            "schedule": dict(vars(self.loop.schedule)), "method": call_hook(self.method, "state_dict"),
            "ctx_gen": self.ctx.generator.get_state(), "aug_gen": self.aug_gen.get_state(),
            "rng": torch.get_rng_state(), "cuda_rng": torch.cuda.get_rng_state() if self.cuda else None,
            "counts": self.counts.as_dict(), "exits": dict(self.ctx.exits), "timer": self.timer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.loop.opt.load_state_dict(state["opt"])
        self.loop.sched.load_state_dict(state["sched"])
        vars(self.loop.schedule).update(state["schedule"])
        call_hook(self.method, "load_state_dict", state["method"])
        self.ctx.generator.set_state(state["ctx_gen"])
        self.aug_gen.set_state(state["aug_gen"])
        torch.set_rng_state(state["rng"])
        if self.cuda and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"])
        self.counts.load(state["counts"])
        self.ctx.exits = dict(state["exits"])
        self._resumed_clock = state["timer"]


def planned_steps(method: Method, epochs: int, start: int = 0) -> int:
    return sum(call_hook(method, "steps_in_epoch", e) for e in range(start, epochs))
