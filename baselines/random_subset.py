"""Random subset: a fresh uniform subset of round(keep * N) samples each epoch.

The control every method must beat (DeepCore; Kaddour et al. 2023, "No Train No
Gain"): the LR schedule is planned for the steps it really takes, so it fully
decays inside the budget.

`warmup_epochs` (default 0): the first epochs visit all data, as a method with
full warm-up epochs does (SwiftLearn, Selective Backprop, p-SGD, ...); with it the
subset is the control of the same shape: the same full epochs, then keep * N per
epoch.
"""
import torch

from bench.method import Batch, Method, register


@register
class RandomSubset(Method):
    name = "random_subset"

    def __init__(self, drop: float = 0.0, warmup_epochs: int = 0):
        super().__init__(drop)
        if int(warmup_epochs) < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
        self.warmup_epochs = int(warmup_epochs)

    def refuse(self, epochs: int) -> str | None:
        if self.drop == 0:
            return "random_subset at drop 0 is uniform training; give it a drop ratio > 0"
        return self.refuse_warmup(epochs, self.warmup_epochs)

    def epoch_size(self, epoch: int) -> int:
        return self.ctx.n_train if epoch < self.warmup_epochs else self.keep_count

    def epoch_indices(self, epoch: int) -> Batch:
        perm = torch.randperm(self.ctx.n_train, generator=self.ctx.generator)
        return Batch(perm[: self.epoch_size(epoch)])
