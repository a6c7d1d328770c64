"""One fake context and one driver for method tests: a method runs its hooks in the engine's order
against fixed per-sample losses and logits, and the test reads the batches and counts it produced.

    rec = drive("selective_backprop", epochs=3, drop=0.5, n=2000, losses=table)
    rec.epochs[1].batches, rec.epochs[1].samples, rec.epochs[1].counts, rec.counts.selection_forwards, rec.metrics
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from typing import Callable

import torch

from bench import hooks
from bench.method import Batch, Method, Scores
from bench.models import Exit
from bench.registry import METHODS
from bench.work import Counts


class FakeContext:
    """The Context a method sees, with no real model: scoring passes and training steps read `losses` (a
    table of N losses, or a function (indices, epoch) -> losses; default fresh uniform noise) and `logits`
    (N x C, or a function (indices, epoch) -> logits; default zeros); early exits give `features` (N x D,
    or a function (indices, k) -> features; default the logits) and `exit_logits` (N x C: the model's own
    head at the exit; default None); `inputs` gives `inputs` (N x ..., or a function indices -> (x, mask);
    default `features` when it is a table, else zeros N x 4). `step(model, batch)`, if given, is what a
    training step does to the model (a trial steps its own copy). Every pass is counted as the harness
    counts it."""

    def __init__(self, n: int = 1000, num_classes: int = 10, epochs: int = 3, batch_size: int = 100, seed: int = 0,
                 losses: torch.Tensor | Callable | None = None, logits: torch.Tensor | Callable | None = None,
                 features: torch.Tensor | Callable | None = None, labels: torch.Tensor | None = None, model=None,
                 trial_accuracy: Callable[[Method], float] | None = None, exit_logits: torch.Tensor | None = None,
                 inputs: torch.Tensor | Callable | None = None, step: Callable | None = None):
        self.n_train, self.num_classes, self.epochs, self.batch_size = n, num_classes, epochs, batch_size
        self.epoch = 0
        self.device = torch.device("cpu")
        self.generator = torch.Generator().manual_seed(seed)
        self.labels = labels if labels is not None else torch.arange(n) % num_classes
        self.noise = torch.Generator().manual_seed(seed + 100)
        self._losses, self._logits, self._features = losses, logits, features
        self._exit_logits, self._inputs, self.step = exit_logits, inputs, step
        self.model = model if model is not None else torch.nn.Linear(4, num_classes)
        self.trial_accuracy = trial_accuracy or (lambda method: 0.5)
        self.counts = Counts()
        self.artifacts: dict[str, object] = {}
        self.trials: list[Method] = []
        self._searching = 0

    def losses_of(self, idx: torch.Tensor) -> torch.Tensor:
        if callable(self._losses):
            return self._losses(idx, self.epoch).float()
        if self._losses is not None:
            return self._losses[idx].float()
        return torch.rand(len(idx), generator=self.noise)

    def logits_of(self, idx: torch.Tensor) -> torch.Tensor:
        if callable(self._logits):
            return self._logits(idx, self.epoch).float()
        return self._logits[idx].float() if self._logits is not None else torch.zeros(len(idx), self.num_classes)

    def score(self, indices: torch.Tensor) -> Scores:
        if self._searching:
            self.counts.search_forwards += len(indices)
        else:
            self.counts.selection_forwards += len(indices)
        return Scores(self.logits_of(indices), self.losses_of(indices))

    def early_exit(self, indices: torch.Tensor, k: int) -> Exit:
        if self._searching:
            self.counts.search_forwards += len(indices)
        else:
            self.counts.partial_forwards += len(indices)
            self.counts.exits[k] = self.counts.exits.get(k, 0) + len(indices)
        if callable(self._features):
            feats = self._features(indices, k)
        else:
            feats = self._features[indices].float() if self._features is not None else self.logits_of(indices)
        return Exit(feats, self._exit_logits[indices].float() if self._exit_logits is not None else None)

    def inputs(self, indices: torch.Tensor):
        if callable(self._inputs):
            return self._inputs(indices)
        table = self._inputs if self._inputs is not None else self._features
        if table is None or callable(table):
            table = torch.zeros(self.n_train, 4)
        return table[indices].float(), None

    def trial(self, method: Method, epochs: int) -> float:
        """Train `method` on a copy of the model (as the harness does); its passes are search work."""
        sub = FakeContext(self.n_train, self.num_classes, epochs, self.batch_size, seed=len(self.trials) + 1,
                          losses=self._losses, logits=self._logits, features=self._features, labels=self.labels,
                          model=copy.deepcopy(self.model), exit_logits=self._exit_logits, inputs=self._inputs,
                          step=self.step)
        rec = drive(method, epochs, ctx=sub)
        self.counts.search_forwards += rec.counts.forwards + rec.counts.selection_forwards
        self.counts.search_backwards += rec.counts.backwards
        self.trials.append(method)
        return float(self.trial_accuracy(method))

    @contextlib.contextmanager
    def search(self):
        self._searching += 1
        try:
            yield
        finally:
            self._searching -= 1

    def log_artifact(self, name: str, obj) -> None:
        self.artifacts[name] = obj


@dataclass
class Epoch:
    batches: list[Batch] = field(default_factory=list)
    planned: int = 0  # epoch_size as asked before the epoch
    counts: Counts = field(default_factory=Counts)  # the passes of this epoch alone

    @property
    def indices(self) -> torch.Tensor:
        return torch.cat([b.indices for b in self.batches]) if self.batches else torch.empty(0, dtype=torch.long)

    @property
    def samples(self) -> int:
        return sum(len(b) for b in self.batches)

    @property
    def sizes(self) -> list[int]:
        return [len(b) for b in self.batches]


@dataclass
class Record:
    method: Method
    ctx: FakeContext
    epochs: list[Epoch]
    metrics: dict

    @property
    def counts(self) -> Counts:
        return self.ctx.counts


def cell(epochs: int, model: str = "tiny_cnn", dataset: str = "fashion_mnist", **kw):
    """The cell a method's `refuse` is asked about."""
    from bench.config import CellConfig

    return CellConfig(model=model, dataset=dataset, epochs=epochs, **kw)


def make(name: str, drop: float = 0.0, **params) -> Method:
    return hooks.build(METHODS.get(name), drop, params)


def drive(method: Method | str, epochs: int | None = None, ctx: FakeContext | None = None, drop: float = 0.0,
          params: dict | None = None, **ctx_kw) -> Record:
    """Run `method` (an instance or a registered name) through `epochs` epochs in the engine's order:
    setup, then per epoch epoch_size, batches (each batch checked as the engine checks it; observe
    after each with the context's logits and losses), end_epoch; then run_metrics. Batches are kept as
    yielded (on the CPU here: the fake's device)."""
    if isinstance(method, str):
        method = make(method, drop, **(params or {}))
    if ctx is None:
        ctx = FakeContext(**({"epochs": epochs} if epochs else {}), **ctx_kw)
    epochs = epochs or ctx.epochs
    hooks.setup(method, ctx)
    out = []
    for e in range(epochs):
        ctx.epoch = e
        before = ctx.counts.copy()
        ep = Epoch(planned=hooks.call_hook(method, "epoch_size", e))
        checker = hooks.BatchChecker(method, ctx.n_train)
        for batch in checker.batches(e):
            ep.batches.append(batch)
            ctx.counts.forwards += len(batch)
            ctx.counts.backwards += len(batch)
            ctx.counts.steps += 1
            if ctx.step is not None:
                ctx.step(ctx.model, batch)
            hooks.call_hook(method, "observe", batch, ctx.logits_of(batch.indices), ctx.losses_of(batch.indices))
        hooks.call_hook(method, "end_epoch", e)
        checker.finish()
        ep.counts = ctx.counts.since(before)
        out.append(ep)
    return Record(method, ctx, out, hooks.call_hook(method, "run_metrics"))
