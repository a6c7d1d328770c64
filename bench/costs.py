"""What a backward and a partial forward cost against a full forward, counted once per
run with torch.utils.flop_counter on a small batch of real inputs.

Work fractions weight each pass by these costs, so a method that saves backwards
but adds scoring or early-exit forwards is charged for them, and its ideal
speedup (one over its cost-weighted work) can be set against the measured one.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

DEFAULT_BACKWARD = 2.0  # the usual rule of thumb, used only where no flops are counted


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


class PassCosts:
    """Counted on a copy of the model: its weights, statistics and gradients stay untouched."""

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, mask, y: torch.Tensor):
        self._net, self._x, self._mask = copy.deepcopy(model).train(), x, mask
        self._forward = _flops(lambda: self._net(x, mask))
        loss = F.cross_entropy(self._net(x, mask).float(), y)
        bwd = _flops(loss.backward)
        self.backward = bwd / self._forward if self._forward > 0 and bwd > 0 else DEFAULT_BACKWARD
        self._partial: dict[int, float] = {}

    @torch.no_grad()
    def partial(self, k: int) -> float:
        """An early exit through the first k stages, relative to a full forward."""
        if k not in self._partial:
            self._net.eval()
            flops = _flops(lambda: self._net.early_exit(self._x, self._mask, k))
            self._partial[k] = min(1.0, flops / self._forward) if self._forward > 0 else 1.0
        return self._partial[k]
