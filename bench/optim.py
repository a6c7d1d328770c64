"""The harness's optimizers and LR schedule: SGD (Nesterov) for images, AdamW for text.

A cell's own values (lr, weight_decay, optimizer) override the defaults here; the schedule
is planned per optimizer step for the steps the method will really take, so a method that
drops data decays fully inside its budget (the "No Train No Gain" lesson).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class OptimizerDefaults:
    lr: float  # SGD: per 256 samples of batch (linear scaling); AdamW: as is
    lr_scales_with_batch: bool
    weight_decay: float
    warmup_share: float  # share of the planned steps spent warming up
    warmup_start: float | None  # LR factor at step 0; None: one warm-up step's share, 1/(warm-up steps + 1)

    def base_lr(self, batch_size: int) -> float:
        return self.lr * batch_size / 256 if self.lr_scales_with_batch else self.lr


OPTIMIZERS = {
    "sgd": OptimizerDefaults(lr=0.1, lr_scales_with_batch=True, weight_decay=5e-4, warmup_share=0.2, warmup_start=0.1),
    "adamw": OptimizerDefaults(lr=1e-4, lr_scales_with_batch=False, weight_decay=0.01, warmup_share=0.1,
                               warmup_start=None),
}


def make_optimizer(kind: str, params, batch_size: int, lr: float | None, weight_decay: float | None):
    d = OPTIMIZERS[kind]
    lr = lr if lr is not None else d.base_lr(batch_size)
    wd = weight_decay if weight_decay is not None else d.weight_decay
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=wd)
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd)


class Schedule:
    """LR factor per optimizer step: linear warm-up, then linear decay to 0 at the planned
    total. `replan` moves the total (methods that drop data by loss only know their next
    epoch's size then); steps past the plan stay at the final value. `constant`: 1 throughout
    (a paper's constant rate)."""

    def __init__(self, defaults: OptimizerDefaults, total_steps: int, epochs: int = 1, constant: bool = False):
        self.warmup_share, self.warmup_start = defaults.warmup_share, defaults.warmup_start
        self.total, self.epochs, self.constant = max(1, total_steps), epochs, constant

    def replan(self, total_steps: int) -> None:
        self.total = max(1, total_steps)

    @property
    def warmup_steps(self) -> int:
        return max(1, round(self.warmup_share * self.total))

    def __call__(self, step: int) -> float:
        if self.constant:
            return 1.0
        total, warm = self.total, self.warmup_steps
        s = min(step, total)
        if s < warm:
            start = self.warmup_start if self.warmup_start is not None else 1 / (warm + 1)
            return start + (1 - start) * s / warm  # never exactly 0: the first step trains
        return max(0.0, (total - s) / max(1, total - warm))
