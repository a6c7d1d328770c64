"""The method API: the one page a method author reads.

A method is one class in `methods/` or `baselines/`, registered with `@register`.
The harness owns the model step, the optimizer, the clock, evaluation and every
count; a method only decides which samples are trained on. It may override:

    refuse(cell)          why it would not act in this cell (one line naming the fix), or None;
                          `cell` says epochs, model, dataset and kind ("image" or "text")
    setup()               state it needs, once `self.ctx` exists
    epoch_size(epoch)     samples the epoch will train on (its forecast), so the LR schedule
                          is planned for the steps it really takes
    epoch_indices(epoch)  the epoch's samples, in order (a Batch, optional loss weights)
    batches(epoch)        the epoch's training batches; the default cuts epoch_indices into
                          batches of ctx.batch_size. Override it to build batches online
    observe(batch, logits, losses)   what the training step just computed
    end_epoch(epoch)      after an epoch's last step
    run_metrics()         figures it measured about itself, logged with the run
                          ({"active_share": x}: the share of steps a switch that can stay off was on)

Parameters are class attributes declared with `Param`; the harness validates them
and sets them on the instance. Everything a method does runs on the harness's
clock as method time, except work inside `ctx.search()` or `ctx.trial`, which is
search. Every pass made through `ctx` is counted. Keep selection on `ctx.device`:
every `.item()`, `.cpu()`, `int(tensor)` or boolean mask there costs a host sync
on a GPU, and the harness counts them (`host_syncs`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from bench.registry import METHODS


@dataclass(frozen=True)
class Param:
    """A method parameter: default, allowed range ("[0, 1)", "(0, inf)") or choices, and what it is.
    Its type is the default's (give `kind` when the default is None: the parameter is then optional)."""

    default: Any
    range: str = ""
    choices: tuple = ()
    doc: str = ""
    kind: type | None = None


@dataclass
class Batch:
    indices: torch.Tensor  # global training indices (int64), on ctx.device or the CPU
    weights: torch.Tensor | None = None  # per-sample loss weights, None = all 1

    def __len__(self) -> int:
        return len(self.indices)

    def take(self, pos: torch.Tensor) -> "Batch":
        return Batch(self.indices[pos], None if self.weights is None else self.weights[pos])


@dataclass
class Scores:
    logits: torch.Tensor  # N, C float32 on ctx.device
    losses: torch.Tensor  # N per-sample cross-entropy


class Context:
    """What the harness offers a method (`self.ctx`). Passes made here are counted."""

    n_train: int  # training samples (indices are 0 .. n_train - 1)
    num_classes: int
    epochs: int  # the cell's epochs
    epoch: int  # the epoch being trained (set before its first hook call)
    batch_size: int
    labels: torch.Tensor  # training labels as trained on (label noise included), on ctx.device
    generator: torch.Generator  # seeded, on ctx.device: the method's only source of randomness
    device: torch.device
    model: torch.nn.Module  # read it (weights, embeddings); never step it

    def score(self, indices: torch.Tensor) -> Scores:
        """No-grad, eval-mode full forward of these samples (selection forwards)."""

    def early_exit(self, indices: torch.Tensor, k: int):
        """No-grad forward through the first k stages: `bench.models.Exit` (partial forwards)."""

    def inputs(self, indices: torch.Tensor):
        """Model inputs (x, mask) of these samples on the device, un-augmented."""

    def trial(self, method: "Method", epochs: int) -> float:
        """Train a copy of the model with `method` for `epochs` from the current weights; its
        validation accuracy. Search work."""

    def search(self):
        """Context manager: work inside is search (end-to-end time, not train time)."""

    def log_artifact(self, name: str, obj: Any) -> None:
        """Save a JSON-able object with the run (e.g. a learned sampler)."""


class Method:
    """Base class: uniform training. Subclasses set `name`, declare `Param`s and override hooks."""

    name = "base"
    faithful = True  # False, with `caveat`, for a method not implemented as its paper says
    caveat = ""
    uses_drop = True  # False: no drop knob; suites run it at drop 0 only
    ctx: Context

    def __init__(self, drop: float = 0.0, **params):
        """Parameters arrive checked against their declarations (bench/hooks.py `build`)."""
        self.drop = float(drop)
        self.keep = 1.0 - self.drop
        for name, p in declared(type(self)).items():
            setattr(self, name, params.get(name, p.default))

    # -- hooks

    def refuse(self, cell) -> str | None:
        return None

    def setup(self) -> None:
        pass

    def epoch_size(self, epoch: int) -> int:
        return self.ctx.n_train

    def epoch_indices(self, epoch: int) -> Batch:
        return Batch(self.randperm(self.ctx.n_train))

    def batches(self, epoch: int) -> Iterator[Batch]:
        order = self.epoch_indices(epoch)
        for pos in chunks(len(order), self.ctx.batch_size, order.indices.device):
            yield order.take(pos)

    def observe(self, batch: Batch, logits: torch.Tensor, losses: torch.Tensor) -> None:
        pass

    def end_epoch(self, epoch: int) -> None:
        pass

    def run_metrics(self) -> dict[str, float]:
        return {}

    # -- helpers

    @property
    def keep_count(self) -> int:
        """Samples an epoch keeps at this drop ratio (at least one)."""
        return max(1, round(self.keep * self.ctx.n_train))

    def randperm(self, n: int) -> torch.Tensor:
        """A random permutation of 0..n-1 on ctx.device, from the method's generator."""
        return torch.randperm(n, generator=self.ctx.generator, device=self.ctx.device)

    def refuse_warmup(self, epochs: int, warmup_epochs: int) -> str | None:
        """The common refusal: a method whose first `warmup_epochs` are uniform acts only after them."""
        if epochs <= warmup_epochs:
            return (f"{self.name} needs epochs > warmup_epochs ({warmup_epochs}); this cell has {epochs}: "
                    "raise epochs or lower warmup_epochs")
        return None


def declared(cls: type) -> dict[str, Param]:
    """The `Param`s a method class declares (its own and inherited), in declaration order."""
    out: dict[str, Param] = {}
    for klass in reversed(cls.__mro__):
        out.update({k: v for k, v in vars(klass).items() if isinstance(v, Param)})
    return out


def chunks(n: int, batch_size: int, device=None) -> Iterator[torch.Tensor]:
    """Positions of each batch of n in order; the last may be smaller."""
    for s in range(0, n, batch_size):
        yield torch.arange(s, min(n, s + batch_size), device=device)


def num_batches(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


def static_k(keep: float, batch_size: int) -> int:
    """Kept samples of a batch: fixed per batch size, so selection never makes new shapes."""
    return max(1, math.ceil(keep * batch_size))


def register(target=None):
    """Register a Method subclass: `@register`, `@register()` or `@register("name")`."""

    def deco(cls):
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise TypeError(f"@register takes a Method subclass, got {cls!r}")
        return METHODS.register(target if isinstance(target, str) else None)(cls)

    return deco if target is None or isinstance(target, str) else deco(target)
