"""Host syncs: calls that make the host wait for the GPU (reading a value, copying to the CPU,
an op whose output size depends on values), counted per epoch as `host_syncs` (inside the
method's hooks) and `harness_syncs` (the engine's own step path).

On a GPU they are counted for real, with CUDA's sync debug mode. On the CPU nothing waits, so
counting is an audit, on only when BENCH_COUNT_SYNCS=1 (the tests set it): a TorchFunctionMode
counts the calls that would sync if the tensors lived on a GPU. It costs Python time per torch
call, so a timed run never has it on.
"""
from __future__ import annotations

import contextlib
import os
import warnings

import torch
from torch.overrides import TorchFunctionMode

READS = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy", "cpu"}
DATA_DEPENDENT = {"nonzero", "argwhere", "masked_select", "unique", "unique_consecutive", "repeat_interleave"}


def _syncs(func, args, kwargs) -> bool:
    name = getattr(func, "__name__", "")
    if name in READS or name in DATA_DEPENDENT:
        return not (name == "repeat_interleave" and kwargs.get("output_size") is not None)
    if name in ("__getitem__", "__setitem__") and len(args) > 1:
        index = args[1] if isinstance(args[1], tuple) else (args[1],)
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in index)
    return False  # `.to(device)` is left out: on a CPU run it cannot tell a host copy from a device move


class _Audit(TorchFunctionMode):
    def __init__(self, counter: "SyncCounter"):
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.counter.where and _syncs(func, args, kwargs):
            self.counter.counts[self.counter.where] += 1
        return func(*args, **kwargs)


class SyncCounter:
    """`with counter.at("method"):` counts the syncs made inside as the method's, `at("harness")` as the
    engine's (ctx.score inside a method hook is the harness's), `at("")` not at all (search: off the clock)."""

    def __init__(self, device: torch.device, audit: bool | None = None):
        self.cuda = device.type == "cuda"
        self.audit = (os.environ.get("BENCH_COUNT_SYNCS") == "1") if audit is None else audit
        self.enabled = self.cuda or self.audit
        self.counts = {"method": 0, "harness": 0}
        self.where = ""
        self.suspended = 0
        self._mode = _Audit(self) if self.audit and not self.cuda else None

    @contextlib.contextmanager
    def at(self, where: str):
        if not self.enabled or self.suspended:
            yield
            return
        if where == "":
            self.suspended += 1
            try:
                with self._attributed(""):
                    yield
            finally:
                self.suspended -= 1
            return
        with self._attributed(where):
            yield

    @contextlib.contextmanager
    def _attributed(self, where: str):
        prev, self.where = self.where, where
        try:
            if self.cuda:
                with warnings.catch_warnings(record=True) as got:
                    warnings.simplefilter("always")
                    before = torch.cuda.get_sync_debug_mode()
                    torch.cuda.set_sync_debug_mode(1)
                    try:
                        yield
                    finally:
                        torch.cuda.set_sync_debug_mode(before)
                if where:
                    self.counts[where] += sum("synchroniz" in str(w.message) for w in got)
            elif prev or not where:  # the audit mode is on already, or nothing is counted: attribution only
                yield
            else:
                with self._mode:
                    yield
        finally:
            self.where = prev

    def take(self) -> dict[str, int]:
        """Counts since the last take: {"host_syncs": method's, "harness_syncs": harness's}."""
        out = {"host_syncs": self.counts["method"], "harness_syncs": self.counts["harness"]}
        self.counts = {"method": 0, "harness": 0}
        return out
