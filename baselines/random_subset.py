"""Random subset: a fresh uniform subset of round(keep * N) samples each epoch.

The control every method must beat (DeepCore; Kaddour et al. 2023, "No Train No
Gain"): the LR schedule is planned for the steps it really takes, so it fully
decays inside the budget.
"""
import torch

from bench.method import Batch, Method, register


@register
class RandomSubset(Method):
    name = "random_subset"

    def epoch_size(self, epoch: int) -> int:
        return self.keep_count

    def epoch_indices(self, epoch: int) -> Batch:
        perm = torch.randperm(self.ctx.n_train, generator=self.ctx.generator)
        return Batch(perm[: self.epoch_size(epoch)])
