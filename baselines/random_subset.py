"""Random subset: a fresh uniform subset of round(keep * N) samples each epoch.

The control every method must beat (DeepCore; Kaddour et al. 2023, "No Train No Gain"):
the LR schedule is planned for the steps it really takes, so it fully decays inside the
budget. The harness runs it as two controls of every method row (bench/controls.py):

- `warmup_epochs`: the first epochs visit all data, then keep * N per epoch;
- `plan`: replay a method's realized batch plan (bench/work.py): in every epoch exactly the
  batch sizes the method trained, in its order, filled with random samples (a permutation
  per epoch, wrapping into a new one if the epoch trains more than N). This is the
  selection control: the same backward count in every epoch and the same step structure,
  random samples. With a plan the drop ratio is not used.
"""
import torch

from bench.method import Batch, Method, Param, register
from bench.work import check_plan, decode_plan


@register
class RandomSubset(Method):
    name = "random_subset"
    warmup_epochs = Param(0, "[0, inf)", doc="full epochs before the subset epochs")
    plan = Param(None, kind=str, doc="a realized batch plan to replay ('128x140,80x1;...', one part per epoch)")

    def __init__(self, drop: float = 0.0, **params):
        super().__init__(drop, **params)
        if self.plan is not None and (why := check_plan(self.plan)):
            raise ValueError(why)

    def refuse(self, cell) -> str | None:
        epochs = cell.epochs
        if self.plan is not None:
            n = len(decode_plan(self.plan))
            return None if n == epochs else f"random_subset's plan has {n} epochs, the cell {epochs}; give one per epoch"
        if self.drop == 0:
            return "random_subset at drop 0 is uniform training; give it a drop ratio > 0"
        return self.refuse_warmup(epochs, self.warmup_epochs)

    def setup(self) -> None:
        self.sizes = decode_plan(self.plan) if self.plan is not None else None

    def epoch_size(self, epoch: int) -> int:
        if self.sizes is not None:
            return sum(self.sizes[epoch])
        return self.ctx.n_train if epoch < self.warmup_epochs else self.keep_count

    def epoch_indices(self, epoch: int) -> Batch:
        n, k = self.ctx.n_train, self.epoch_size(epoch)
        perms = [self.randperm(n) for _ in range(-(-k // n))]  # an epoch of more than N wraps into a new one
        return Batch(torch.cat(perms)[:k] if perms else torch.empty(0, dtype=torch.long, device=self.ctx.device))

    def batches(self, epoch: int):
        if self.sizes is None:
            yield from super().batches(epoch)
            return
        order, at = self.epoch_indices(epoch), 0
        for size in self.sizes[epoch]:
            yield Batch(order.indices[at : at + size])
            at += size
