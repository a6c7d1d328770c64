"""SwiftLearn: importance sampling from the change of logits during warm-up.

Paper: "SwiftLearn: A Data-Efficient Training Method of Deep Learning Models
using Importance Sampling", arXiv 2311.15134 (seed 000; harness spec in
METHODS.md, section SwiftLearn).

Steps
1. Warm-up: the first `warmup_epochs` epochs (default 2, as in the paper: epochs
   0 and 1) visit all data. `observe` keeps each sample's logits from the
   training forward passes (train mode, augmented inputs: the passes the step
   really makes, as METHODS.md says).
2. Importance of sample i: the mean (over classes) squared difference of its
   logits between the last two warm-up epochs.
3. Scores are standardised (zero mean, unit std over the training set), then
   probabilities = softmax(score / `temperature`), so the temperature is
   scale-free.
4. round(keep * N) samples are kept: drawn without replacement by those
   probabilities (`selection="sample"`, default) or the highest scores
   (`selection="topk"`).
5. Later epochs visit only the kept subset, reshuffled every epoch. `epoch_size`
   reports the real size, so the LR schedule is planned for the steps taken.
6. `reevaluate_every=K` (default 0 = never, as in the paper): at the start of
   epoch warmup + j*K (j >= 1) an eval-mode `ctx.score` pass over all training
   data (counted as selection forwards) gives fresh logits;
   the MSE against each sample's last known logits is the new importance and the
   subset is reselected, so dropped samples can return. Scoring passes and subset
   choices run in `epoch_indices`, once per epoch.
7. A cell with epochs <= warmup_epochs (nothing is ever dropped) or drop 0 is
   refused (`refuse`).
8. `scoring="eval"` (option; default "train", the paper's training-pass logits):
   the logits compared are those of an eval-mode, un-augmented `ctx.score` pass
   over all training data at the end of each of the last two warm-up epochs
   (counted as selection forwards). Training-pass logits mix
   the order samples were visited in (the network, a new head most of all, changes
   fastest in epoch 0) and augmentation noise; this pass has neither.

Our choices (left open by the paper)
- temperature = 1.0 on standardised scores (the paper tunes sigma per task).
- With warmup_epochs > 2 the importance compares the last two warm-up epochs.
- "Last logits" for re-evaluation: each sample's most recent logits, from a
  training forward of a kept sample or from the previous re-evaluation pass
  (training forwards are stored after warm-up only when re-evaluation is on).
- Logit buffers are float32 on the training device (N x C).

Host syncs: none (the subset is chosen and drawn on ctx.device).
"""
from __future__ import annotations

import torch

from bench.method import Batch, Method, Param, register


def standardised_probs(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(standardised scores / temperature), float64 on the scores' device."""
    s = scores.double()
    std = s.std() if s.numel() > 1 else s.new_tensor(0.0)
    z = torch.where(std > 0, (s - s.mean()) / std, torch.zeros_like(s))
    return torch.softmax(z / temperature, dim=0)


def choose_subset(scores: torch.Tensor, k: int, temperature: float, selection: str,
                  generator: torch.Generator) -> torch.Tensor:
    """k sample indices (int64, sorted, on the scores' device): importance sampling without
    replacement, or top-k."""
    n = scores.numel()
    k = max(0, min(int(k), n))
    if k == n:
        return torch.arange(n, device=scores.device)
    if selection == "topk":
        idx = torch.topk(scores.double(), k).indices
    else:
        idx = torch.multinomial(standardised_probs(scores, temperature), k, replacement=False, generator=generator)
    return idx.sort().values


def logit_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared difference of two logit tensors (N, C) -> N."""
    return (a.float() - b.float()).pow(2).mean(1)


@register
class SwiftLearn(Method):
    name = "swiftlearn"
    warmup_epochs = Param(2, "[2, inf)", doc="full epochs before selecting (importance compares the last two)")
    temperature = Param(1.0, "(0, inf)", doc="softmax temperature on the standardised scores")
    selection = Param("sample", choices=("sample", "topk"), doc="draw by the probabilities, or keep the top ones")
    reevaluate_every = Param(0, "[0, inf)", doc="re-score all data and reselect every this many epochs (0: never)")
    scoring = Param("train", choices=("train", "eval"), doc="logits of the training passes, or eval-mode scoring passes")

    def setup(self) -> None:
        self.last_logits: torch.Tensor | None = None  # N, C: each sample's most recent logits
        self.importance: torch.Tensor | None = None  # N
        self.subset: torch.Tensor | None = None  # kept indices
        self.reevaluations = 0

    def refuse(self, cell) -> str | None:
        epochs = cell.epochs
        if self.drop == 0:
            return "swiftlearn at drop 0 keeps every sample (uniform training); give it a drop ratio > 0"
        return self.refuse_warmup(epochs, self.warmup_epochs)

    def _selective(self, epoch: int) -> bool:
        return epoch >= self.warmup_epochs and self.ctx.epochs > self.warmup_epochs

    def epoch_size(self, epoch: int) -> int:
        return self.keep_count if self._selective(epoch) else self.ctx.n_train

    def epoch_indices(self, epoch: int) -> Batch:
        """The epoch's scoring passes and subset choice (they pick its samples), then its order."""
        if self.scoring == "eval" and self.warmup_epochs - 1 <= epoch <= self.warmup_epochs:
            # eval-mode logits at the end of the last two warm-up epochs (= the start of the next epoch)
            logits = self.ctx.score(torch.arange(self.ctx.n_train, device=self.ctx.device)).logits.float()
            if epoch == self.warmup_epochs:
                self.importance = logit_mse(logits, self.last_logits)
            self.last_logits = logits
        if not self._selective(epoch):
            return Batch(self.randperm(self.ctx.n_train))
        if epoch == self.warmup_epochs:
            self._select()
        elif self.reevaluate_every and (epoch - self.warmup_epochs) % self.reevaluate_every == 0:
            self._reevaluate()
        return Batch(self.subset[self.randperm(len(self.subset))])

    def _select(self) -> None:
        self.subset = choose_subset(self.importance, self.keep_count, self.temperature, self.selection, self.ctx.generator)
        if not self.reevaluate_every:
            self.last_logits = None  # no longer needed

    def _reevaluate(self) -> None:
        logits = self.ctx.score(torch.arange(self.ctx.n_train, device=self.ctx.device)).logits
        self.importance = logit_mse(logits, self.last_logits)
        self.last_logits = logits.float()
        self.reevaluations += 1
        self._select()

    def observe(self, batch: Batch, logits: torch.Tensor, losses: torch.Tensor) -> None:
        epoch = self.ctx.epoch
        if epoch < self.warmup_epochs:
            if self.scoring == "eval":
                return  # the logits come from the end-of-epoch scoring passes
            if self.last_logits is None:
                self.last_logits = torch.zeros(self.ctx.n_train, logits.shape[1], device=logits.device)
                self.importance = torch.zeros(self.ctx.n_train, device=logits.device)
            idx = batch.indices
            if epoch == self.warmup_epochs - 1:  # importance: last warm-up epoch vs the one before
                self.importance[idx] = logit_mse(logits, self.last_logits[idx])
            self.last_logits[idx] = logits.float()
        elif self.reevaluate_every and self.last_logits is not None:
            self.last_logits[batch.indices] = logits.float()
