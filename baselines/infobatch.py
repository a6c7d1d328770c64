"""InfoBatch: unbiased dynamic data pruning by loss (Qin et al., ICLR 2024, arXiv 2303.04947).

Each sample's score is its last training loss, taken from the training forward passes
(`observe`), never from an extra pass. At the start of each epoch the "well-learned"
samples, those whose score is below the mean score, are randomly pruned: a share
`prune_ratio` of them get no forward or backward pass this epoch; the kept ones have
their loss scaled by 1 / (1 - prune_ratio), so the expected gradient over the
pruning draw equals the full-data gradient. Samples at or above the mean are always
kept with weight 1. The last `anneal` share of the epochs (12.5%) train on all data
with weight 1. The visit order is shuffled.

As the reference code (NUS-HPC-AI-Lab/InfoBatch, `infobatch/infobatch.py`):
- scores start at 3 for every sample, so nothing is below the mean and epoch 0 is a
  full epoch; after it every score is a real training loss;
- exactly floor(keep * n_well) of the n_well well-learned samples are kept, drawn
  without replacement (not an independent coin per sample), with weight 1 / keep;
- keep = 1 - prune_ratio is clipped to [0.1, 1];
- epoch e prunes iff e + 1 <= (1 - anneal) * epochs, which is the reference's
  `iterations > num_epochs * delta` test with its sampler's counter (it starts at 1);
- scores are the raw (unweighted) per-sample training losses.

Where we differ:
- The sampler is explicit (`epoch_indices` returns indices and weights); no DataLoader
  patching, no distributed gather. All randomness is the harness generator.
- The LR schedule is planned before training, but InfoBatch's epoch size depends on
  losses not yet seen. `epoch_size` therefore returns an estimate for pruning epochs:
  it assumes a share `plan_below_mean` (default 0.7, our guess: per-sample losses are
  right-skewed, so most lie below their mean) of the samples is below the mean. The
  estimate is a pure function of the epoch (never of the state), so a resumed run
  plans exactly the same schedule. If the real epochs are shorter than planned the
  LR does not fully decay; if longer, the extra steps run at the final LR (0 for the
  SGD schedule). The realized drop is measured and logged by the harness either way.
- `prune_ratio` defaults to the cell's drop ratio. Note that the realized drop is
  smaller than the prune ratio: only below-mean samples are pruned, and only in the
  first (1 - anneal) of the epochs.

When it acts: epoch 0 has no losses yet and the last `anneal` of the epochs use all
data, so pruning needs an epoch e >= 1 with e + 1 <= (1 - anneal) * E, i.e. E >= 3 at
the default anneal; a cell with fewer epochs (or prune ratio 0) is refused.
`active_share()` is the share of epochs that pruned at least one sample (0 when the
loss distribution never put a sample below the mean).
"""
from __future__ import annotations

import math

import torch

from bench.method import Batch, Method, register

INITIAL_SCORE = 3.0  # the reference's starting score


@register
class InfoBatch(Method):
    name = "infobatch"
    epoch_size_is_estimate = True  # pruning epochs' sizes depend on losses not yet seen (see "Where we differ")

    def __init__(self, drop: float = 0.0, prune_ratio: float | None = None, anneal: float = 0.125,
                 plan_below_mean: float = 0.7):
        super().__init__(drop)
        r = self.drop if prune_ratio is None else float(prune_ratio)
        if not 0.0 <= r < 1.0:
            raise ValueError(f"prune_ratio must be in [0, 1), got {r}")
        if not 0.0 <= float(anneal) <= 1.0:
            raise ValueError(f"anneal must be in [0, 1], got {anneal}")
        if not 0.0 <= float(plan_below_mean) <= 1.0:
            raise ValueError(f"plan_below_mean must be in [0, 1], got {plan_below_mean}")
        self.prune_ratio = r
        self.keep_ratio = min(1.0, max(0.1, 1.0 - r))
        self.anneal = float(anneal)
        self.plan_below_mean = float(plan_below_mean)

    def refuse(self, epochs: int) -> str | None:
        if self.keep_ratio >= 1.0:
            return "infobatch with prune ratio 0 prunes nothing (uniform training); give it a drop ratio > 0"
        if not any(e + 1 <= (1.0 - self.anneal) * epochs + 1e-9 for e in range(1, epochs)):
            fix = f"it needs epochs >= {math.ceil(2 / (1 - self.anneal) - 1e-9)}" if self.anneal < 1 else "lower anneal"
            return (f"infobatch prunes only in epochs e >= 1 with e + 1 <= (1 - anneal) * epochs (anneal {self.anneal}), "
                    f"none of this cell's {epochs}: {fix}")
        return None

    def active_share(self) -> float | None:
        return self.pruned_epochs / self.epochs_seen if self.epochs_seen else 0.0

    def setup(self, ctx) -> None:
        super().setup(ctx)
        self.pruned_epochs = 0  # epochs that pruned at least one sample
        self.epochs_seen = 0
        self.scores = torch.full((ctx.n_train,), INITIAL_SCORE, dtype=torch.float32, device=ctx.device)
        self.last_size: int | None = None  # realized size of the latest epoch (for inspection)

    # -- planning

    def prunes(self, epoch: int) -> bool:
        """Whether this epoch prunes: the first (1 - anneal) of the epochs do."""
        stop = (1.0 - self.anneal) * self.ctx.epochs
        return self.keep_ratio < 1.0 and epoch + 1 <= stop + 1e-9

    def epoch_size(self, epoch: int) -> int:
        n = self.ctx.n_train
        if epoch == 0 or not self.prunes(epoch):  # epoch 0: all scores equal, nothing below the mean
            return n
        n_well = round(self.plan_below_mean * n)
        return n - n_well + math.floor(self.keep_ratio * n_well)

    # -- the sampler

    def epoch_indices(self, epoch: int) -> Batch:
        g = self.ctx.generator
        n = self.ctx.n_train
        weights = torch.ones(n)
        if self.prunes(epoch):
            scores = self.scores.cpu()
            well = scores < scores.mean()
            well_idx = well.nonzero().flatten()
            n_sel = math.floor(self.keep_ratio * len(well_idx))  # int() as in the reference
            kept_well = well_idx[torch.randperm(len(well_idx), generator=g)[:n_sel]]
            weights[kept_well] = 1.0 / self.keep_ratio
            visit = torch.cat([(~well).nonzero().flatten(), kept_well])
        else:
            visit = torch.arange(n)
        order = visit[torch.randperm(len(visit), generator=g)]
        self.last_size = len(order)
        self.epochs_seen += 1
        self.pruned_epochs += int(len(order) < n)
        w = weights[order]
        return Batch(order, None if bool((w == 1).all()) else w)

    def observe(self, batch: Batch, logits: torch.Tensor, losses: torch.Tensor) -> None:
        self.scores[batch.indices.to(self.scores.device, non_blocking=True)] = losses.detach().float().to(self.scores.device)
