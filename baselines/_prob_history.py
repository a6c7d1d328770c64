"""Shared piece of p-SGD and c-SGD (Chang et al. 2017, "Active Bias: Training More Accurate
Neural Networks by Emphasizing High Variance Samples", NeurIPS, arXiv 1704.07433).

Both keep, per sample, the history of the predicted probability of its (possibly noisy)
training label, p = softmax(logits)[y], from the training forward passes (`observe`: no
extra pass). The history is kept as running sums (count, sum p, sum p^2) over every
visit since the start of training, which gives the history mean and variance exactly.

Each epoch after `warmup_epochs` uniform full epochs, round(keep * N) samples are drawn
with replacement (default, as the paper draws every mini-batch by these probabilities)
with probability proportional to score_i + epsilon, and visited in that (random)
order. So at drop 0 an epoch is still N draws by the scores, not a permutation: the
methods reweight the epoch, as in the paper. Subclasses define the score. A sample
with no history yet (possible only with warmup_epochs=0) is given the chance-level
prior p = 1 / num_classes. A cell with no epoch after the warm-up is refused.

Smoothing: the paper adds a smoothness constant epsilon to every score. Its value is not
given in the material we have, and the scores of the variants live on different scales
(1 - p in [0, 1], p(1 - p) in [0, 1/4]), so here epsilon is relative: the constant added
is `epsilon` times the mean score over all samples (default 0.2: a guess; the public
re-implementation songhwanjun/ActiveBias has a default "smoothness" of 0.2 for its
weighting variant, whose exact use we could not check). With
`epsilon=0` the draw follows the scores alone (a tiny floor keeps every probability
positive so a draw without replacement is always possible).

Where we differ from the paper: the paper runs full-length epochs of SGD on these
draws; here an epoch draws round(keep * N) samples (the drop ratio sets the saving;
at drop 0 it is the paper's N) and the weights stay 1 (Active Bias' sampling variants
do not reweight the loss). `replacement=False` draws round(keep * N) distinct samples
instead (not allowed at drop 0, where it would be a permutation: uniform training).
"""
from __future__ import annotations

import torch

from bench.method import Batch, Method, Param


class ProbHistoryMethod(Method):
    """Base: history of p(true label) per sample, sampling by `score(...) + epsilon`."""

    name = "_prob_history"
    warmup_epochs = Param(1, "[0, inf)", doc="uniform full epochs before sampling")
    epsilon = Param(0.2, "[0, inf)", doc="smoothness constant, relative to the mean score")
    replacement = Param(True, doc="draw with replacement (the paper's per-batch draws)")

    def refuse(self, cell) -> str | None:
        epochs = cell.epochs
        why = self.refuse_warmup(epochs, self.warmup_epochs)
        if why:
            return why
        if self.drop == 0 and not self.replacement:
            return (f"{self.name} at drop 0 without replacement draws all N samples (a permutation: uniform training); "
                    "use replacement=True")
        return None

    def setup(self) -> None:
        n, dev = self.ctx.n_train, self.ctx.device
        self.count = torch.zeros(n, dtype=torch.float64, device=dev)
        self.sum_p = torch.zeros(n, dtype=torch.float64, device=dev)
        self.sum_p2 = torch.zeros(n, dtype=torch.float64, device=dev)

    def history(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """count, mean p and unbiased variance of p (NaN where fewer than 2 visits)."""
        count, s, s2 = self.count, self.sum_p, self.sum_p2
        prior = 1.0 / self.ctx.num_classes
        mean = torch.where(count > 0, s / count.clamp(min=1), torch.full_like(s, prior))
        var = (s2 - count * mean**2) / (count - 1)
        var = torch.where(count > 1, var.clamp(min=0), torch.full_like(s, float("nan")))
        return count, mean, var

    def score(self, count: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def probabilities(self) -> torch.Tensor:
        s = self.score(*self.history()).double().clamp(min=0)
        s = s + self.epsilon * s.mean()
        s = s.clamp(min=1e-12)
        return s / s.sum()

    def epoch_size(self, epoch: int) -> int:
        return self.ctx.n_train if epoch < self.warmup_epochs else self.keep_count

    def epoch_indices(self, epoch: int) -> Batch:
        n = self.ctx.n_train
        if epoch < self.warmup_epochs:
            return Batch(self.randperm(n))
        k = self.epoch_size(epoch)
        drawn = torch.multinomial(self.probabilities(), k, replacement=self.replacement, generator=self.ctx.generator)
        if not self.replacement:  # a draw without replacement comes out biased to high p first: shuffle
            drawn = drawn[self.randperm(k)]
        return Batch(drawn)

    def observe(self, batch: Batch, logits: torch.Tensor, losses: torch.Tensor) -> None:
        idx = batch.indices.to(self.count.device, non_blocking=True)
        p = torch.log_softmax(logits.float(), dim=1).exp().gather(1, self.ctx.labels[idx].view(-1, 1)).flatten()
        p = p.to(self.count.device).double()
        self.count.index_add_(0, idx, torch.ones_like(p))
        self.sum_p.index_add_(0, idx, p)
        self.sum_p2.index_add_(0, idx, p * p)
