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
`run_metrics()` reports `active_share`, the share of epochs that pruned at least one
sample (0 when the loss distribution never put a sample below the mean).

Host syncs: two per pruning epoch (the well-learned samples and the others are listed to
size the epoch), counted as host_syncs; none per step.
"""
from __future__ import annotations

import math

import torch

from bench.method import Batch, Method, Param, register

INITIAL_SCORE = 3.0  # the reference's starting score


@register
class InfoBatch(Method):
    name = "infobatch"
    prune_ratio = Param(None, "[0, 1)", kind=float, doc="share of below-mean samples pruned (default: the drop ratio)")
    anneal = Param(0.125, "[0, 1]", doc="last share of the epochs on all data")
    plan_below_mean = Param(0.7, "[0, 1]", doc="share of samples assumed below the mean when planning the schedule")

    def __init__(self, drop: float = 0.0, **params):
        super().__init__(drop, **params)
        if self.prune_ratio is None:
            self.prune_ratio = self.drop
        self.keep_ratio = min(1.0, max(0.1, 1.0 - self.prune_ratio))

    def refuse(self, cell) -> str | None:
        epochs = cell.epochs
        if self.keep_ratio >= 1.0:
            return "infobatch with prune ratio 0 prunes nothing (uniform training); give it a drop ratio > 0"
        if not any(e + 1 <= (1.0 - self.anneal) * epochs + 1e-9 for e in range(1, epochs)):
            fix = f"it needs epochs >= {math.ceil(2 / (1 - self.anneal) - 1e-9)}" if self.anneal < 1 else "lower anneal"
            return (f"infobatch prunes only in epochs e >= 1 with e + 1 <= (1 - anneal) * epochs (anneal {self.anneal}), "
                    f"none of this cell's {epochs}: {fix}")
        return None

    def run_metrics(self) -> dict[str, float]:
        return {"active_share": self.pruned_epochs / self.epochs_seen if self.epochs_seen else 0.0}

    def setup(self) -> None:
        self.pruned_epochs = 0  # epochs that pruned at least one sample
        self.epochs_seen = 0
        self.scores = torch.full((self.ctx.n_train,), INITIAL_SCORE, dtype=torch.float32, device=self.ctx.device)

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

    def epoch_indices(self, epoch: int) -> Batch:
        n, dev = self.ctx.n_train, self.ctx.device
        weights = torch.ones(n, device=dev)
        n_sel = 0
        if self.prunes(epoch):
            well = self.scores < self.scores.mean()
            well_idx = well.nonzero().flatten()  # the epoch's one host sync: it sizes the epoch
            n_sel = math.floor(self.keep_ratio * len(well_idx))  # int() as in the reference
            kept_well = well_idx[self.randperm(len(well_idx))[:n_sel]]
            weights[kept_well] = 1.0 / self.keep_ratio
            visit = torch.cat([(~well).nonzero().flatten(), kept_well])
        else:
            visit = torch.arange(n, device=dev)
        order = visit[self.randperm(len(visit))]
        self.epochs_seen += 1
        self.pruned_epochs += int(len(order) < n)
        return Batch(order, weights[order] if n_sel else None)

    def observe(self, batch: Batch, logits: torch.Tensor, losses: torch.Tensor) -> None:
        self.scores[batch.indices] = losses.float()
