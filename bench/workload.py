"""The harness's training defaults, one frozen record per kind of workload.

A cell's own values (--lr, --weight-decay, --optimizer) override these; the
optimizer's defaults follow the optimizer actually used, the rest the data kind.
"""
from __future__ import annotations

from dataclasses import dataclass


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


@dataclass(frozen=True)
class Workload:
    kind: str
    optimizer: str  # the optimizer behind --optimizer auto
    crop_pad_divisor: int = 14  # random crop, reflect-padded by max(1, size // this)
    eval_batch_cpu: int = 256  # evaluation and scoring batch: the larger of this and the training batch
    eval_batch_gpu: int = 1024
    augment_seed_offset: int = 7  # augmentation generator seed = cell seed + this
    probes_per_epoch: int = 4  # validation probes per full (uniform) epoch, for time to target
    probe_samples: int = 1024  # the probes' fixed validation subset: its first this many samples


IMAGE = Workload("image", "sgd")
TEXT = Workload("text", "adamw")
WORKLOADS = {"image": IMAGE, "text": TEXT}


class Schedule:
    """LR factor per optimizer step: linear warm-up, then linear decay to 0 at the planned
    total. `replan` moves the total (methods that drop data by loss only know their next
    epoch's size then); steps past the plan stay at the final value."""

    def __init__(self, defaults: OptimizerDefaults, total_steps: int, epochs: int = 1):
        self.warmup_share, self.warmup_start = defaults.warmup_share, defaults.warmup_start
        self.total, self.epochs = max(1, total_steps), epochs

    def replan(self, total_steps: int) -> None:
        self.total = max(1, total_steps)

    @property
    def warmup_steps(self) -> int:
        return max(1, round(self.warmup_share * self.total))

    def __call__(self, step: int) -> float:
        total, warm = self.total, self.warmup_steps
        s = min(step, total)
        if s < warm:
            start = self.warmup_start if self.warmup_start is not None else 1 / (warm + 1)
            return start + (1 - start) * s / warm  # never exactly 0: the first step trains
        return max(0.0, (total - s) / max(1, total - warm))
