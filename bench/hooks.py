"""The harness side of the method API: building a method from its declared parameters,
calling its hooks, and checking what they return.

A hook that raises, or a batch that breaks the contract (not a 1-D integer tensor, an index
outside [0, n_train), weights of another length), ends the cell with one `MethodError` naming
the method and the hook. Index ranges are checked on the device and read once per epoch, so
checking costs no host sync per step.
"""
from __future__ import annotations

import math
from typing import Any, Iterator

import torch

from bench.errors import BenchError
from bench.method import Batch, Method, Param, declared

HOOKS = ("setup", "refuse", "epoch_size", "epoch_indices", "batches", "observe", "end_epoch", "run_metrics")


class MethodError(BenchError):
    """A method's hook raised, or broke the API's contract. Names the method and the hook."""


# -- parameters


def param_defaults(cls: type) -> dict[str, Any]:
    return {k: p.default for k, p in declared(cls).items()}


def _in_range(value: float, spec: str) -> bool:
    lo_s, hi_s = (s.strip() for s in spec[1:-1].split(","))
    lo, hi = float(lo_s), float(hi_s)
    ok_lo = value >= lo if spec[0] == "[" else value > lo
    ok_hi = value <= hi if spec[-1] == "]" else value < hi
    return ok_lo and ok_hi


def check_param(method: str, name: str, p: Param, value: Any) -> Any:
    """The value, of the declared type, in range; or a one-line BenchError."""
    kind = p.kind or type(p.default)
    if value is None and p.default is None:
        return None
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        want = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(kind, kind.__name__)
        raise BenchError(f"method {method}: {name} must be {want}, got {value!r}")
    if p.choices and value not in p.choices:
        raise BenchError(f"method {method}: {name} must be one of {', '.join(map(str, p.choices))}, got {value!r}")
    if p.range and (isinstance(value, float) and math.isnan(value) or not _in_range(value, p.range)):
        raise BenchError(f"method {method}: {name} must be in {p.range}, got {value!r}")
    return value


def checked_params(cls: type, params: dict[str, Any]) -> dict[str, Any]:
    """`params` checked against the class's declarations, defaults filled in; else one line."""
    decl = declared(cls)
    unknown = sorted(set(params) - set(decl))
    if unknown:
        raise BenchError(f"method {cls.name} has no parameter {', '.join(unknown)}; "
                         f"its parameters: {', '.join(decl) or 'none'}")
    return {name: check_param(cls.name, name, p, params.get(name, p.default)) for name, p in decl.items()}


def build(cls: type, drop: float, params: dict[str, Any]) -> Method:
    """An instance of `cls` with checked parameters; bad ones (or a bad combination its __init__
    refuses) in one line."""
    checked = checked_params(cls, params)
    try:
        return cls(drop=drop, **checked)
    except BenchError:
        raise
    except (TypeError, ValueError) as e:
        raise BenchError(f"method {cls.name}: {e}") from None


# -- calling hooks


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


def setup(method: Method, ctx) -> None:
    method.ctx = ctx
    call_hook(method, "setup")


class BatchChecker:
    """`method.batches(epoch)`, each batch's type checked as it comes. Index ranges: on the CPU checked at
    once; elsewhere (`lazy`) folded into one device flag that `finish()` reads at the end of the epoch,
    the indices clamped meanwhile so a bad one cannot crash the device before it is reported."""

    def __init__(self, method: Method, n_train: int, lazy: bool = False):
        self.method, self.n_train, self.lazy = method, n_train, lazy
        self.bad: torch.Tensor | None = None
        self.samples = 0

    def batches(self, epoch: int) -> Iterator[Batch]:
        it = iter(call_hook(self.method, "batches", epoch))
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            except Exception as e:
                raise method_error(self.method, "batches", e) from e
            yield self.check(batch)

    def check(self, batch: Batch) -> Batch:
        name = self.method.name
        idx = batch.indices if isinstance(batch, Batch) else None
        if not isinstance(idx, torch.Tensor) or idx.ndim != 1 or idx.dtype.is_floating_point or idx.dtype == torch.bool:
            got = type(batch).__name__ if idx is None else f"indices of dtype {idx.dtype}, shape {tuple(idx.shape)}"
            raise MethodError(f"method {name}: batches must give a Batch of 1-D integer indices, got {got}")
        if not len(idx):
            raise MethodError(f"method {name}: batches gave an empty batch; yield only batches with samples")
        if batch.weights is not None and len(batch.weights) != len(idx):
            raise MethodError(f"method {name}: batches gave {len(batch.weights)} weights for {len(idx)} indices")
        self.samples += len(idx)
        out = (idx.min() < 0) | (idx.max() >= self.n_train)
        if not self.lazy:
            self.bad = out
            self.finish()
            return batch
        self.bad = out if self.bad is None else self.bad | out
        return Batch(idx.clamp(0, self.n_train - 1), batch.weights)

    def finish(self) -> None:
        """The epoch's one read of the range flag (a host sync on a GPU)."""
        if self.bad is not None and bool(self.bad):
            raise MethodError(f"method {self.method.name}: batches gave an index outside [0, {self.n_train}) "
                              f"(the training set has {self.n_train} samples)")
        self.bad = None


# -- resume


def method_state(method: Method) -> dict[str, Any]:
    return {k: v for k, v in vars(method).items() if k != "ctx"}


def load_method_state(method: Method, state: dict[str, Any]) -> None:
    vars(method).update(state)
