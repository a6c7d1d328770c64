"""The training engine: one loop for image and text classification.

The harness owns everything here: data placement and augmentation, the step, the optimizer
and its schedule, evaluation, the clock and the counts. Methods only choose batches
(bench/method.py); every call into a method is timed as its `method` stage. On a GPU the data
stay on the device as uint8 and are cropped and flipped there (airbench style), and the clock
is read at epoch ends and probes only: no host sync per step.

No shape is first run on the clock. The first time a training step sees a new batch size, it
runs once untimed (its forward and backward, what they change put back); on a GPU so does every
new shape of an evaluation, a scoring pass or an early exit. So cuDNN autotuning, lazy
initialisation and compilation of a shape never land on any method's time, whichever cell of
the process runs first. (On the CPU nothing is tuned per shape: the eval-mode duplicates are
skipped there, but for the tests, which check the GPU's path.)
"""
from __future__ import annotations

import copy
import math
import os
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from bench import hooks
from bench.config import CellConfig
from bench.context import HarnessContext
from bench.data import Data, FileImages, Split
from bench.errors import Diverged
from bench.meter import PaceMeter
from bench.method import Batch, Method, Scores, num_batches
from bench.models import Classifier
from bench.optim import OPTIMIZERS, Schedule, make_optimizer
from bench.syncs import SyncCounter
from bench.timing import StageTimer
from bench.work import Counts, PassCosts, encode_plan, measure_costs
from bench.workload import WORKLOADS


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
    plan: str = ""  # this epoch's training batch sizes, run-length coded (bench/work.py)
    syncs: dict = field(default_factory=dict)  # host_syncs, harness_syncs of this epoch (when counted)
    probes: list = field(default_factory=list)  # [optimizer step, probe val acc, train seconds] inside the epoch

    def metrics(self) -> dict[str, float]:
        d = {k: v for k, v in asdict(self).items() if k not in ("epoch", "counts", "plan", "syncs", "probes")}
        if math.isnan(d["test_acc"]):
            d.pop("test_acc")
        return {**d, **{f"epoch_{k}": v for k, v in self.counts.as_dict().items()}, **self.syncs}

    def state(self) -> dict:
        return {**asdict(self), "counts": self.counts.state()}

    @classmethod
    def from_state(cls, d: dict) -> "EpochRecord":
        return cls(**{**d, "counts": Counts.from_state(d["counts"])})


@dataclass
class Loop:
    """What one training run steps: the cell's own, or a search trial's copy."""

    method: Method
    ctx: HarnessContext
    model: torch.nn.Module
    step_model: torch.nn.Module
    opt: torch.optim.Optimizer
    schedule: Schedule
    sched: torch.optim.lr_scheduler.LambdaLR
    plan_epochs: int

    @property
    def counts(self) -> Counts:
        return self.ctx.counts


class Trainer:
    """One cell's training: model, optimizer, schedule, generators, clock and counts.

    Built without a method it only places data and evaluates."""

    def __init__(self, cfg: CellConfig, data: Data, model: Classifier, device: torch.device,
                 timer: StageTimer | None = None, *, method: Method | None = None, artifact_sink=None):
        self.cfg, self.data, self.device = cfg, data, device
        self.cuda = device.type == "cuda"
        if self.cuda:
            torch.cuda.set_device(device)  # events and kernels on the cell's own GPU
        self.timer = timer or StageTimer(device)
        self.syncs = SyncCounter(device)
        self.workload = WORKLOADS[data.kind]
        self.model = model.to(device)
        on_cpu_too = cfg.cpu_bf16 and device.type == "cpu"
        self.amp = torch.autocast("cuda" if self.cuda else "cpu", dtype=torch.bfloat16, enabled=self.cuda or on_cpu_too)
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
        self.file_gen = torch.Generator().manual_seed(self.aug_seed)  # random-resized crops of images on disk
        self.optimizer_kind = cfg.optimizer if cfg.optimizer != "auto" else self.workload.optimizer
        self.eval_batch = max(cfg.batch_size, self.workload.eval_batch_gpu if self.cuda else self.workload.eval_batch_cpu)
        self.warmed: set[tuple] = set()  # input shapes already run once untimed
        self.warm_eval = self.cuda or os.environ.get("BENCH_WARM_EVAL") == "1"
        # train-mode batch norm needs two samples: a batch of one is skipped on such a model (counted)
        self.needs_two = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in self.model.modules())
        self.counts = Counts()
        self._resumed_clock: dict | None = None
        self.meter: PaceMeter | None = None
        if method is not None:
            self.method = method
            self.ctx = HarnessContext(self, cfg.epochs, cfg.seed, self.counts, artifact_sink)
            hooks.setup(method, self.ctx)
            self.loop = self._loop(method, self.ctx, self.model, self.step_model, cfg.plan_epochs or cfg.epochs)
            self.planned_steps = planned_steps(method, self.loop.plan_epochs)
            # probes every so many steps, the same for every method of a setting: time to target
            # is read between epoch ends, on a fixed validation subset, off the train clock
            full_epoch = num_batches(len(self.train), cfg.batch_size)
            self.probe_every = cfg.eval_every or max(1, math.ceil(full_epoch / self.workload.probes_per_epoch))
            self.probe_idx = torch.arange(min(len(self.val), self.workload.probe_samples))
            self.probe_y = self.val.y[self.probe_idx].to(self.device)
            # on a CPU, where cells share cores, the train time is also read in reference steps (bench/meter.py)
            self.meter = None if self.cuda else PaceMeter(self.timer.clock, every=self.workload.meter_every)
            ref = min(self.workload.meter_batch or cfg.batch_size, cfg.batch_size, len(self.train))
            self.meter_idx = torch.arange(ref, device=self.device)

    # -- data

    def _place(self, split: Split) -> Split:
        """Keep a split on the device when it fits in a quarter of free memory."""
        if not self.cuda or isinstance(split.x, FileImages):
            return split
        size = split.x.numel() * split.x.element_size() + (0 if split.mask is None else split.mask.numel() * 8)
        if size < 0.25 * torch.cuda.mem_get_info(self.device)[0]:
            return Split(split.x.to(self.device), split.y.to(self.device),
                         None if split.mask is None else split.mask.to(self.device))
        return split

    def _gather(self, t: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        """Rows `i` of `t` on the device. A host tensor is gathered into pinned memory (torch's
        caching host allocator), so the copy really is asynchronous."""
        if t.device == self.device:
            return t[i if i.device == t.device else i.to(t.device, non_blocking=True)]
        i = i.cpu()  # host data indexed by device indices: a host sync, counted as the harness's
        if not self.cuda:
            return t[i]
        buf = torch.empty((len(i),) + tuple(t.shape[1:]), dtype=t.dtype, pin_memory=True)
        torch.index_select(t, 0, i, out=buf)
        return buf.to(self.device, non_blocking=True)

    def inputs(self, split: Split, idx: torch.Tensor, augment: bool = False):
        files = isinstance(split.x, FileImages)
        if files:  # decoded on the host: the indices must be there (a harness sync per batch)
            x = split.x.batch(idx.cpu(), train=augment, generator=self.file_gen).to(self.device, non_blocking=True)
        else:
            x = self._gather(split.x, idx)
        y = self._gather(split.y, idx)
        mask = None if split.mask is None else self._gather(split.mask, idx)
        if self.data.kind == "image":
            x = x.float().div_(255)
            if augment:
                x = self._augment(x, crop=not files)  # files were cropped at random when decoded
            x = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        return x, mask, y

    def _augment(self, x: torch.Tensor, crop: bool = True) -> torch.Tensor:
        """Random crop (reflect-padded by about size/14) and, where labels allow, horizontal flip."""
        n, _, h, w = x.shape
        if not crop:
            if self.data.flip:
                flip = torch.rand(n, 1, 1, 1, device=x.device, generator=self.aug_gen) < 0.5
                x = torch.where(flip, x.flip(3), x)
            return x
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

    def _loop(self, method: Method, ctx: HarnessContext, model, step_model, plan_epochs: int) -> Loop:
        """A fresh optimizer and LR schedule planned for the steps `method` will take in `plan_epochs`."""
        cfg = self.cfg
        opt = make_optimizer(self.optimizer_kind, model.parameters(), cfg.batch_size, cfg.lr, cfg.weight_decay)
        plan = Schedule(OPTIMIZERS[self.optimizer_kind], planned_steps(method, plan_epochs), plan_epochs,
                        constant=cfg.schedule == "constant")
        return Loop(method, ctx, model, step_model, opt, plan, torch.optim.lr_scheduler.LambdaLR(opt, plan), plan_epochs)

    def step(self, loop: Loop, batch: Batch):
        if ("train", len(batch)) not in self.warmed:
            self._warm_step(loop, batch)
        logits, losses, loss = self._step(loop, batch)
        loop.counts.forwards += len(batch)
        loop.counts.backwards += len(batch)
        loop.counts.steps += 1
        return logits, losses, loss

    def _step(self, loop: Loop, batch: Batch):
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
        return logits.detach().float(), losses.detach(), loss.detach()

    def _warm_step(self, loop: Loop, batch: Batch) -> None:
        """One untimed forward and backward of this batch's shape (the optimizer's kernels do not depend on
        it)."""
        self.warmed.add(("train", len(batch)))
        with self.timer.untimed():
            self._side_step(loop, batch.indices)

    def _side_step(self, loop: Loop, indices: torch.Tensor) -> None:
        """A training forward and backward of `indices` that leaves no trace: the buffers (batch-norm
        statistics), the gradients (none between steps) and the random streams are put back."""
        buffers = [b.detach().clone() for b in loop.model.buffers()]
        rng = (torch.get_rng_state(), torch.cuda.get_rng_state() if self.cuda else None, self.aug_gen.get_state(),
               self.file_gen.get_state())
        x, mask, y = self.inputs(self.train, indices, augment=True)
        loop.model.train()
        with self.amp:
            logits = loop.step_model(x, mask)
        F.cross_entropy(logits.float(), y).backward()
        loop.opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for b, saved in zip(loop.model.buffers(), buffers):
                b.copy_(saved)
        torch.set_rng_state(rng[0])
        if self.cuda:
            torch.cuda.set_rng_state(rng[1])
            torch.cuda.synchronize()
        self.aug_gen.set_state(rng[2])
        self.file_gen.set_state(rng[3])

    def read_meter(self, force: bool = False) -> None:
        """A pace reading (bench/meter.py), off the clock: when due, or now when forced."""
        if self.meter is None:  # a GPU: never read its clock per step (a host sync)
            return
        at = self.timer.train_seconds()
        if not (force or self.meter.due(at)):
            return
        with self.timer.untimed():
            self.meter.read(at, lambda: self._side_step(self.loop, self.meter_idx))

    def _run_warm(self, key: tuple, fn):
        """`fn()`, run once untimed first when `key` (an eval-mode pass and its input shape) is new. On the
        CPU nothing is tuned per shape, so the duplicate pass is only made where `warm_eval` asks for it
        (a GPU; the tests, which check the GPU's path on CPU: BENCH_WARM_EVAL=1)."""
        if key not in self.warmed:
            self.warmed.add(key)
            if self.warm_eval:
                with self.timer.untimed():
                    fn()
                    if self.cuda:
                        torch.cuda.synchronize()
        return fn()

    def _hook(self, loop: Loop, hook: str, *args):
        """A method hook, timed as the method's and its host syncs counted as the method's."""
        with self.timer.stage("method"), self.syncs.at("method"):
            return hooks.call_hook(loop.method, hook, *args)

    def _epoch(self, loop: Loop, epoch: int, on_step=None, watch: bool = False, probes: list | None = None):
        """One epoch of `loop`: (summed training loss as a device tensor, first step whose loss was
        not finite or -1, the epoch's batch sizes). On CPU a bad loss stops the epoch at once; on a
        GPU it is tracked on the device, read once at the epoch's end."""
        t, method = self.timer, loop.method
        loop.ctx.epoch = epoch
        loss_sum = torch.zeros((), device=self.device)
        first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        sizes: list[int] = []
        # re-plan the schedule from what the method now knows of its remaining epochs
        with t.stage("method"), self.syncs.at("method"):
            rest = planned_steps(method, loop.plan_epochs, start=epoch)
        loop.schedule.replan(loop.sched.last_epoch + rest)
        checker = hooks.BatchChecker(method, len(self.train), lazy=self.cuda or self.syncs.audit)
        it = checker.batches(epoch)
        while True:
            with t.stage("method"), self.syncs.at("method"):
                batch = next(it, None)
            if batch is None:
                break
            if len(batch) == 1 and self.needs_two:
                loop.counts.skipped += 1
                continue
            sizes.append(len(batch))
            with self.syncs.at("harness"):
                logits, losses, loss = self.step(loop, batch)
                loss_sum += losses.sum()
                if watch:
                    bad = ~torch.isfinite(loss)
                    if not self.cuda and not self.syncs.audit and bad:  # the audit plays a GPU: no read
                        return loss_sum, torch.tensor(loop.counts.steps), sizes
                    else:
                        first_bad = torch.where((first_bad < 0) & bad, loop.counts.steps, first_bad)
            self._hook(loop, "observe", batch, logits, losses)
            if probes is not None:  # the cell's own loop (not a search trial's)
                if loop.counts.steps % self.probe_every == 0:
                    probes.append(self.probe())
                self.read_meter()
            if on_step:
                on_step()
        self._hook(loop, "end_epoch", epoch)
        checker.finish()
        return loss_sum, first_bad, sizes

    def train_epoch(self, epoch: int, on_step=None) -> EpochRecord:
        """Train one epoch, evaluate, and say what it did. Raises Diverged on a non-finite
        training loss or non-finite weights."""
        before, probes = self.counts.copy(), []
        loss_sum, first_bad, sizes = self._epoch(self.loop, epoch, on_step, watch=True, probes=probes)
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
        syncs = self.syncs.take() if self.syncs.enabled else {}
        return EpochRecord(
            epoch, val_acc, val_loss, test_acc, loss_sum.item() / max(1, counts.backwards),
            self.timer.train_seconds(), t["search"], t["evaluation"], self.timer.total_seconds(),
            self.loop.sched.get_last_lr()[0], counts, encode_plan([sizes]), syncs, probes)

    def train_copy(self, method: Method, ctx: HarnessContext, epochs: int) -> None:
        """Train `ctx.model` (a copy) with `method` for `epochs`: its own optimizer and schedule,
        its work counted in `ctx.counts` (search trials)."""
        loop = self._loop(method, ctx, ctx.model, ctx.model, epochs)
        for e in range(epochs):
            self._epoch(loop, e)

    # -- evaluation and scoring

    @torch.no_grad()
    def forward_eval(self, model, split: Split, idx: torch.Tensor) -> Scores:
        model.eval()
        out, losses = [], []
        for s in range(0, len(idx), self.eval_batch):
            x, mask, y = self.inputs(split, idx[s : s + self.eval_batch])

            def run():
                with self.amp:
                    return model(x, mask).float()

            logits = self._run_warm(("eval", len(y)), run)
            out.append(logits)
            losses.append(F.cross_entropy(logits, y, reduction="none"))
        return Scores(torch.cat(out), torch.cat(losses))

    @torch.no_grad()
    def early_exit(self, model, idx: torch.Tensor, k: int):
        x, mask, _ = self.inputs(self.train, idx)
        model.eval()

        def run():
            with self.amp:
                return model.early_exit(x, mask, k)

        out = self._run_warm(("exit", k, len(idx)), run)
        out.features = out.features.float()
        if out.logits is not None:
            out.logits = out.logits.float()
        return out

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

    @torch.no_grad()
    def bn_recomputed_accuracy(self, batches: int = 10) -> float | None:
        """A diagnostic, not a fix: test accuracy after the batch-norm statistics are recomputed on random
        training batches (a copy of the model; a method that backpropagates a biased share of each batch
        also biases the statistics evaluation uses). None for a model without batch norm."""
        bn = (torch.nn.modules.batchnorm._BatchNorm,)
        if not any(isinstance(m, bn) for m in self.model.modules()):
            return None
        with self.timer.untimed():
            model = copy.deepcopy(self.model)
            for m in model.modules():
                if isinstance(m, bn):
                    m.reset_running_stats()
                    m.momentum = None  # a plain average over the batches below
            model.train()
            g = torch.Generator().manual_seed(self.cfg.seed + 99)
            order = torch.randperm(len(self.train), generator=g)
            rng = (torch.get_rng_state(), self.aug_gen.get_state(), self.file_gen.get_state())
            for s in range(0, min(len(order), batches * self.cfg.batch_size), self.cfg.batch_size):
                x, mask, _ = self.inputs(self.train, order[s : s + self.cfg.batch_size].to(self.device), augment=True)
                with self.amp:
                    model(x, mask)
            torch.set_rng_state(rng[0])
            self.aug_gen.set_state(rng[1])
            self.file_gen.set_state(rng[2])
            acc, _ = self.evaluate(self.test, model)
        return acc

    def pass_costs(self, clock=None) -> PassCosts:
        """Seconds per sample of each kind of pass this cell made, measured now on a batch of training
        samples of the cell's batch size (off the clock)."""
        n = min(self.cfg.batch_size, len(self.train))
        with self.timer.untimed():
            x, mask, y = self.inputs(self.train, torch.arange(n, device=self.device))
            return measure_costs(self.model, x, mask, y, exits=sorted(self.counts.exits), amp=self.amp, clock=clock)

    # -- the clock, checkpoints

    def start(self) -> None:
        """Start the clock, from the restored totals when resumed, and read the pace meter."""
        self.timer.start(self._resumed_clock)
        self.read_meter(force=True)

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(), "opt": self.loop.opt.state_dict(), "sched": self.loop.sched.state_dict(),
            "schedule": dict(vars(self.loop.schedule)), "method": hooks.method_state(self.method),
            "ctx_gen": self.ctx.generator.get_state(), "aug_gen": self.aug_gen.get_state(),
            "file_gen": self.file_gen.get_state(),
            "rng": torch.get_rng_state(), "cuda_rng": torch.cuda.get_rng_state() if self.cuda else None,
            "counts": self.counts.state(), "timer": self.timer.state_dict(),
            "meter": self.meter.state_dict() if self.meter is not None else [],
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.loop.opt.load_state_dict(state["opt"])
        self.loop.sched.load_state_dict(state["sched"])
        vars(self.loop.schedule).update(state["schedule"])
        hooks.load_method_state(self.method, state["method"])
        self.ctx.generator.set_state(state["ctx_gen"])
        self.aug_gen.set_state(state["aug_gen"])
        self.file_gen.set_state(state["file_gen"])
        torch.set_rng_state(state["rng"])
        if self.cuda and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"])
        loaded = Counts.from_state(state["counts"])
        vars(self.counts).update(vars(loaded))
        self._resumed_clock = state["timer"]
        if self.meter is not None:
            self.meter.load_state_dict(state.get("meter", []))


def planned_steps(method: Method, epochs: int, start: int = 0) -> int:
    """Optimizer steps the method will take in epochs start..epochs-1, from its epoch sizes."""
    return sum(num_batches(hooks.call_hook(method, "epoch_size", e), method.ctx.batch_size)
               for e in range(start, epochs))


