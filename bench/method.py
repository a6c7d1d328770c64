"""The method API: the only place a data-selection method touches training.

A method is one class, in `methods/` or `baselines/`, registered with
`@register` (from here; `@register()` and `@register("name")` work too). The
harness (engine) owns the model step, the optimizer, the clock and the
evaluation; a method only decides, at three levels, what gets trained on:

1. `epoch_indices(epoch)`: which samples an epoch visits, in order, with
   optional per-sample loss weights (SwiftLearn, InfoBatch, random subset).
   It must return exactly `epoch_size(epoch)` indices in [0, n_train), unless
   the class sets `epoch_size_is_estimate = True` (InfoBatch: its size depends
   on losses not yet seen).
2. `select(batch)`: which part of a drawn batch gets the forward/backward pass;
   it may score the batch cheaply first with `ctx.score` / `ctx.early_exit`
   (SIFT).
3. `observe(batch, logits, losses)`: what happened in the step just taken.

`batches(epoch)` ties 1 and 2 together; a method that builds batches online
(Selective Backprop, IMPON) overrides it.

Epoch length: override `epoch_size(epoch)` (samples the epoch visits, before
`select`). The LR schedule is planned from `steps_in_epoch(epoch)`, which
derives the step count from `epoch_size`; override it only when the steps are
not `epoch_size / batch_size` (Selective Backprop's online batches). Both are
asked again after each `start_epoch`, so a size known only then still counts.

Where the time goes (bench/engine.py, `Trainer.train_epoch`): `start_epoch`,
`observe` and `end_epoch` run in the *bookkeeping* stage; everything that
happens while the engine draws the next batch (`batches`, hence
`epoch_indices` and `select`) runs in the *selection* stage. Both stages are
train time, and a `ctx.score` pass counts as selection forwards wherever it is
made (inside `ctx.trial`, as search forwards), so the choice only changes the
stage breakdown. The rule: a whole-epoch
scoring pass whose result picks the epoch's samples belongs in `epoch_indices`
(charged as selection); `start_epoch` / `end_epoch` hold upkeep that picks no
sample (resetting state). Work inside `ctx.search()` or `ctx.trial` is charged
to search, outside train time, wherever it is called.

A hook that raises, or returns indices out of range or fewer samples than
`epoch_size` promised, ends the cell with one `MethodError` naming the method
and the hook (`call_hook`, `checked_batches`).
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from bench.errors import BenchError
from bench.registry import METHODS


@dataclass
class Batch:
    indices: torch.Tensor  # global training indices (int64, CPU)
    weights: torch.Tensor | None = None  # per-sample loss weights (CPU), None = all 1

    def __len__(self) -> int:
        return len(self.indices)

    def take(self, pos: torch.Tensor) -> "Batch":
        return Batch(self.indices[pos], None if self.weights is None else self.weights[pos])


@dataclass
class Scores:
    logits: torch.Tensor  # N, C float32 on the training device
    losses: torch.Tensor  # N per-sample cross-entropy


class Context:
    """What the harness offers a method. Forward passes made here are counted."""

    n_train: int
    num_classes: int
    epochs: int
    batch_size: int
    drop: float
    labels: torch.Tensor  # training labels as trained on (noise included), CPU
    generator: torch.Generator  # seeded CPU generator: the method's only source of randomness
    device: torch.device
    model: torch.nn.Module  # read it (weights, embeddings); never step it

    def score(self, indices: torch.Tensor) -> Scores:
        """No-grad, eval-mode full forward of these samples (a selection pass)."""
        raise NotImplementedError

    def early_exit(self, indices: torch.Tensor, k: int):
        """No-grad forward through the first k stages: `bench.models.Exit` (a partial pass)."""
        raise NotImplementedError

    def inputs(self, indices: torch.Tensor):
        """Model inputs (x, mask) of these samples on the device, un-augmented."""
        raise NotImplementedError

    def trial(self, method: "Method", epochs: int) -> float:
        """Train a copy of the current model with `method` for `epochs`, from the current
        weights, and return its validation accuracy. Timed and counted as search."""
        raise NotImplementedError

    def search(self):
        """Context manager: work inside is charged to search (end-to-end, not train time)."""
        raise NotImplementedError

    def log_artifact(self, name: str, obj: Any) -> None:
        """Save a JSON-able object with the run (e.g. a learned sampler)."""
        raise NotImplementedError


class Method:
    """Base class: uniform training. Subclasses set `name` and override hooks.

    Parameters are the keyword arguments of `__init__` (besides `drop`); they are
    validated against its signature and logged with the run.
    """

    name = "base"
    faithful = True  # False, with `caveat`, for a method not implemented as its paper says
    caveat = ""
    uses_drop = True  # False: the method has no drop knob; suites run it at drop 0 only, and runs refuse drop > 0
    epoch_size_is_estimate = False  # True: epoch_size is a forecast (InfoBatch), epoch_indices may differ from it

    def __init__(self, drop: float = 0.0):
        self.drop = float(drop)
        self.keep = 1.0 - self.drop

    @classmethod
    def build(cls, drop: float, params: dict[str, Any]) -> "Method":
        sig = inspect.signature(cls.__init__)
        allowed = [p for p in sig.parameters if p not in ("self", "drop")]
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise BenchError(
                f"method {cls.name} has no parameter {', '.join(unknown)}; "
                f"its parameters: {', '.join(allowed) or 'none'}"
            )
        try:
            return cls(drop=drop, **params)
        except (TypeError, ValueError) as e:
            raise BenchError(f"method {cls.name}: {e}") from None

    @classmethod
    def param_defaults(cls) -> dict[str, Any]:
        sig = inspect.signature(cls.__init__)
        return {k: p.default for k, p in sig.parameters.items() if k not in ("self", "drop")}

    @property
    def keep_count(self) -> int:
        """Samples an epoch keeps at this drop ratio (at least one)."""
        return max(1, round(self.keep * self.ctx.n_train))

    # -- can it act in this cell?

    def refuse(self, epochs: int) -> str | None:
        """Why this method would be uniform training (or ignore its drop) in a cell of
        `epochs` epochs, as one line naming the fix; None when it acts. Checked when a
        suite loads and before a run opens, so a no-op cell is never recorded."""
        return None

    def final_metrics(self) -> dict[str, float]:
        """Figures the method measured about itself (e.g. SIFT's rank correlation), logged
        with the run's final metrics."""
        return {}

    def refuse_warmup(self, epochs: int, warmup_epochs: int) -> str | None:
        """The common refusal: a method whose first `warmup_epochs` are uniform acts only after them."""
        if epochs <= warmup_epochs:
            return (f"{self.name} needs epochs > warmup_epochs ({warmup_epochs}); this cell has {epochs}: "
                    "raise epochs or lower warmup_epochs")
        return None

    def active_share(self) -> float | None:
        """Share of steps (or epochs) in which a mechanism that can stay off at run time
        was on; None when the method always acts. Logged with the run; 0 is labelled."""
        return None

    # -- setup and planning

    def setup(self, ctx: Context) -> None:
        self.ctx = ctx

    def steps_in_epoch(self, epoch: int) -> int:
        """Optimizer steps this epoch will take: the LR schedule is planned from these."""
        return num_batches(self.epoch_size(epoch), self.ctx.batch_size)

    def epoch_size(self, epoch: int) -> int:
        """Samples visited in this epoch (before `select`)."""
        return self.ctx.n_train

    # -- the three levels

    def epoch_indices(self, epoch: int) -> Batch:
        return Batch(torch.randperm(self.ctx.n_train, generator=self.ctx.generator))

    def select(self, batch: Batch) -> Batch:
        return batch

    def observe(self, batch: Batch, logits: torch.Tensor, losses: torch.Tensor) -> None:
        pass

    def batches(self, epoch: int) -> Iterator[Batch]:
        promised = self.epoch_size(epoch)
        order = self.epoch_indices(epoch)
        check_batch(self, order, self.ctx.n_train, "epoch_indices")
        check_epoch_size(self, epoch, promised, len(order))
        for chunk in chunks(len(order), self.ctx.batch_size):
            yield self.select(order.take(chunk))

    # -- whole-epoch upkeep (bookkeeping stage; a scoring pass that picks samples goes in epoch_indices)

    def start_epoch(self, epoch: int) -> None:
        pass

    def end_epoch(self, epoch: int) -> None:
        pass

    # -- resume

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "ctx"}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def num_batches(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


def chunks(n: int, batch_size: int) -> Iterator[torch.Tensor]:
    """Positions of each batch; the last may be smaller (one extra shape per epoch, not per step)."""
    for s in range(0, n, batch_size):
        yield torch.arange(s, min(n, s + batch_size))


def static_k(keep: float, batch_size: int) -> int:
    """Selected size per batch: fixed, so selection never changes tensor shapes."""
    return max(1, math.ceil(keep * batch_size))


def register(target=None):
    """Register a Method subclass: `@register`, `@register()` or `@register("name")`.

    The name is the class's own `name` attribute, or the one given (which must agree)."""

    def deco(cls):
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise TypeError(f"@register takes a Method subclass, got {cls!r}")
        return METHODS.register(target if isinstance(target, str) else None)(cls)

    return deco if target is None or isinstance(target, str) else deco(target)


# -- errors inside a method's hooks

HOOKS = ("setup", "epoch_size", "steps_in_epoch", "start_epoch", "batches", "epoch_indices", "select",
         "observe", "end_epoch", "state_dict", "load_state_dict", "refuse", "active_share")


class MethodError(BenchError):
    """A method's hook raised, or broke the API's contract. Names the method and the hook."""


def _where(method: Method, tb, hook: str) -> tuple[str, str]:
    """The deepest hook of `method` on the traceback, and the deepest line of the method's code."""
    where = ""
    while tb is not None:
        code = tb.tb_frame.f_code
        if tb.tb_frame.f_locals.get("self") is method:
            hook = code.co_name if code.co_name in HOOKS else hook
            where = f" ({code.co_filename}:{tb.tb_lineno})"
        tb = tb.tb_next
    return hook, where


def method_error(method: Method, hook: str, e: Exception) -> MethodError:
    if isinstance(e, MethodError):  # already named (a trial's inner method)
        return e
    hook, where = _where(method, e.__traceback__, hook)
    return MethodError(f"method {method.name}: {hook} raised {type(e).__name__}: {e}{where}")


def call_hook(method: Method, hook: str, *args):
    """`getattr(method, hook)(*args)`; an exception inside becomes one MethodError."""
    try:
        return getattr(method, hook)(*args)
    except Exception as e:
        raise method_error(method, hook, e) from e


def checked_batches(method: Method, epoch: int, n_train: int) -> Iterator[Batch]:
    """`method.batches(epoch)`, each batch checked; an exception inside becomes one MethodError."""
    it = iter(call_hook(method, "batches", epoch))
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except Exception as e:
            raise method_error(method, "batches", e) from e
        check_batch(method, batch, n_train, "batches")
        yield batch


def check_batch(method: Method, batch: Batch, n_train: int, hook: str) -> None:
    """A Batch of 1-D integer indices in [0, n_train), and weights of the same length."""
    idx = batch.indices if isinstance(batch, Batch) else None
    if not isinstance(idx, torch.Tensor) or idx.ndim != 1 or idx.dtype.is_floating_point or idx.dtype == torch.bool:
        got = type(batch).__name__ if idx is None else f"indices of dtype {idx.dtype}, shape {tuple(idx.shape)}"
        raise MethodError(f"method {method.name}: {hook} must give a Batch of 1-D integer indices, got {got}")
    if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= n_train):
        raise MethodError(
            f"method {method.name}: {hook} gave index {int(idx.min()) if int(idx.min()) < 0 else int(idx.max())} "
            f"outside [0, {n_train}) (the training set has {n_train} samples)"
        )
    if batch.weights is not None and len(batch.weights) != len(idx):
        raise MethodError(f"method {method.name}: {hook} gave {len(batch.weights)} weights for {len(idx)} indices")


def check_epoch_size(method: Method, epoch: int, promised: int, got: int) -> None:
    """The epoch's order has the `epoch_size` the LR schedule was planned from (unless the
    method says its size is only a forecast)."""
    if got != promised and not method.epoch_size_is_estimate:
        raise MethodError(
            f"method {method.name}: epoch_indices({epoch}) gave {got} samples but epoch_size({epoch}) "
            f"promised {promised}, and the LR schedule was planned from that; make them agree "
            "(or, when the size can only be forecast, set epoch_size_is_estimate = True on the class)"
        )
