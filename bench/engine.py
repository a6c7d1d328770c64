"""The training engine: one loop for image and text classification.

The harness owns everything here: data placement and augmentation, the step,
the optimizer and its schedule, evaluation, the clock and the sample counts.
Methods only choose batches (bench/method.py). On a GPU the data stay on the
device as uint8 and are cropped and flipped there (airbench style).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F

from bench.config import CellConfig
from bench.data import Data, FileImages, Split
from bench.method import Batch, Context, Method, Scores
from bench.models import Classifier
from bench.timing import StageTimer


@dataclass
class Counts:
    """Realized per-sample work. Selection passes are counted, never hidden."""

    forwards: int = 0  # training forwards
    backwards: int = 0
    selection_forwards: int = 0  # full no-grad scoring passes (ctx.score)
    partial_forwards: int = 0  # early-exit passes through the first k stages
    search_forwards: int = 0  # inside trials (search)
    search_backwards: int = 0
    steps: int = 0

    def add(self, other: "Counts") -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def hardware_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu-{platform.machine()}-{torch.get_num_threads()}threads"


class Schedule:
    """LR factor per optimizer step, planned for the steps the method will take.
    `total` is re-planned each epoch (methods that drop data by loss only know their
    next epoch's size then); steps past the plan stay at the final value."""

    def __init__(self, kind: str, total_steps: int, epochs: int = 1):
        self.kind, self.total, self.epochs = kind, max(1, total_steps), epochs

    def __call__(self, step: int) -> float:
        total = self.total
        warm = max(1, round((0.2 if self.kind == "sgd" else 0.1) * total))
        s = min(step, total)
        if s < warm:
            return (0.1 + 0.9 * s / warm) if self.kind == "sgd" else s / warm
        return max(0.0, (total - s) / max(1, total - warm))


def schedule(kind: str, total_steps: int, epochs: int = 1) -> Schedule:
    return Schedule(kind, total_steps, epochs)


class Trainer:
    def __init__(self, cfg: CellConfig, data: Data, model: Classifier, device: torch.device, timer: StageTimer):
        self.cfg, self.data, self.device, self.timer = cfg, data, device, timer
        self.model = model.to(device)
        self.cuda = device.type == "cuda"
        self.amp = torch.autocast("cuda", dtype=torch.bfloat16) if self.cuda else torch.autocast("cpu", enabled=False)
        if self.cuda and data.kind == "image":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.step_model = torch.compile(self.model) if cfg.compile else self.model
        self.train = self._place(data.train)
        self.val, self.test = self._place(data.val), self._place(data.test)
        if data.kind == "image":
            self.mean = torch.tensor(data.mean, device=device).view(1, -1, 1, 1)
            self.std = torch.tensor(data.std, device=device).view(1, -1, 1, 1)
        self.aug_gen = torch.Generator(device=device).manual_seed(cfg.seed + 7)
        self.optimizer_kind = cfg.optimizer if cfg.optimizer != "auto" else ("adamw" if data.kind == "text" else "sgd")

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
            x = (x - self.mean) / self.std
            if self.cuda:
                x = x.contiguous(memory_format=torch.channels_last)
        return x, mask, y

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        """Random crop (reflect-padded by size/8) and, where labels allow, horizontal flip."""
        n, _, h, w = x.shape
        p = max(1, h // 14)
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

    # -- optimizer

    def make_optimizer(self, model: torch.nn.Module, method: Method, epochs: int):
        """Optimizer and LR schedule planned for the steps `method` will take in `epochs`."""
        cfg = self.cfg
        if self.optimizer_kind == "sgd":
            lr = cfg.lr if cfg.lr is not None else 0.1 * cfg.batch_size / 256
            wd = cfg.weight_decay if cfg.weight_decay is not None else 5e-4
            opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=wd)
        else:
            lr = cfg.lr if cfg.lr is not None else 1e-4
            wd = cfg.weight_decay if cfg.weight_decay is not None else 0.01
            opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
        total = planned_steps(method, epochs)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule(self.optimizer_kind, total, epochs))
        return opt, sched

    # -- the step

    def step(self, model, step_model, opt, sched, batch: Batch, counts: Counts):
        t = self.timer
        with t.stage("data"):
            x, mask, y = self.inputs(self.train, batch.indices, augment=True)
            w = None if batch.weights is None else batch.weights.to(self.device, non_blocking=True)
        with t.stage("forward"):
            model.train()
            with self.amp:
                logits = step_model(x, mask)
            losses = F.cross_entropy(logits.float(), y, reduction="none")
            loss = (losses * w).mean() if w is not None else losses.mean()
        with t.stage("backward"):
            loss.backward()
        with t.stage("optimizer"):
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
        counts.forwards += len(batch)
        counts.backwards += len(batch)
        counts.steps += 1
        return logits.detach().float(), losses.detach()

    def run_epoch(self, method: Method, epoch: int, model, step_model, opt, sched, counts: Counts, on_step=None):
        """One epoch; returns the summed training loss (a device tensor: no sync here)."""
        t = self.timer
        loss_sum = torch.zeros((), device=self.device)
        with t.stage("bookkeeping"):
            method.start_epoch(epoch)
            # re-plan the schedule from what the method now knows of its remaining epochs
            plan = sched.lr_lambdas[0]
            plan.total = max(1, sched.last_epoch + planned_steps(method, plan.epochs, start=epoch))
        it = iter(method.batches(epoch))
        while True:
            with t.stage("selection"):
                batch = next(it, None)
            if batch is None:
                break
            logits, losses = self.step(model, step_model, opt, sched, batch, counts)
            loss_sum += losses.sum()
            with t.stage("bookkeeping"):
                method.observe(batch, logits, losses)
            t.flush()
            if on_step:
                on_step()
        with t.stage("bookkeeping"):
            method.end_epoch(epoch)
        return loss_sum

    # -- evaluation and scoring

    @torch.no_grad()
    def forward_eval(self, model, split: Split, idx: torch.Tensor) -> Scores:
        model.eval()
        out, losses = [], []
        bs = max(self.cfg.batch_size, 1024 if self.cuda else 256)
        for s in range(0, len(idx), bs):
            x, mask, y = self.inputs(split, idx[s : s + bs])
            with self.amp:
                logits = model(x, mask).float()
            out.append(logits)
            losses.append(F.cross_entropy(logits, y, reduction="none"))
        return Scores(torch.cat(out), torch.cat(losses))

    def evaluate(self, split: Split, model=None) -> tuple[float, float]:
        model = model or self.model
        with self.timer.stage("evaluation"):
            sc = self.forward_eval(model, split, torch.arange(len(split)))
            y = split.y.to(self.device)
            acc = (sc.logits.argmax(1) == y).float().mean().item()
            loss = sc.losses.mean().item()
        return acc, loss


class HarnessContext(Context):
    """The Context a method sees, backed by a Trainer. Counts go to `self.counts`."""

    def __init__(self, trainer: Trainer, method_drop: float, epochs: int, seed: int, artifact_sink=None):
        self.trainer = trainer
        self.n_train = len(trainer.train)
        self.num_classes = trainer.data.num_classes
        self.epochs = epochs
        self.batch_size = trainer.cfg.batch_size
        self.drop = method_drop
        self.labels = trainer.data.train.y.clone()
        self.generator = torch.Generator().manual_seed(seed)
        self.device = trainer.device
        self.model = trainer.model
        self.counts = Counts()
        self._artifact_sink = artifact_sink

    def score(self, indices: torch.Tensor) -> Scores:
        self.counts.selection_forwards += len(indices)
        return self.trainer.forward_eval(self.model, self.trainer.train, indices)

    @torch.no_grad()
    def early_exit(self, indices: torch.Tensor, k: int):
        self.counts.partial_forwards += len(indices)
        tr = self.trainer
        x, mask, _ = tr.inputs(tr.train, indices)
        self.model.eval()
        with tr.amp:
            out = self.model.early_exit(x, mask, k)
        out.features = out.features.float()
        if out.logits is not None:
            out.logits = out.logits.float()
        return out

    def inputs(self, indices: torch.Tensor):
        x, mask, _ = self.trainer.inputs(self.trainer.train, indices)
        return x, mask

    def trial(self, method: Method, epochs: int) -> float:
        tr = self.trainer
        with tr.timer.exclusive("search"):
            model = copy.deepcopy(self.model)
            sub = HarnessContext(tr, method.drop, epochs, int(torch.randint(0, 2**31, (1,), generator=self.generator)))
            sub.model = model
            method.setup(sub)
            opt, sched = tr.make_optimizer(model, method, epochs)
            counts = Counts()
            for e in range(epochs):
                tr.run_epoch(method, e, model, model, opt, sched, counts)
            acc, _ = tr.evaluate(tr.val, model)
            tr.timer.flush()
        self.counts.search_forwards += counts.forwards + sub.counts.selection_forwards
        self.counts.search_backwards += counts.backwards
        return acc

    def search(self):
        return self.trainer.timer.exclusive("search")

    def log_artifact(self, name: str, obj) -> None:
        if self._artifact_sink:
            self._artifact_sink(name, obj)


def planned_steps(method: Method, epochs: int, start: int = 0) -> int:
    return sum(method.steps_in_epoch(e) for e in range(start, epochs))

