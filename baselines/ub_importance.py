"""Upper-bound importance sampling (Katharopoulos and Fleuret 2018, "Not All Samples Are
Created Equal: Deep Learning with Importance Sampling", ICML, arXiv 1803.00942).

Each optimizer step:
1. presample B = `presample` * b samples uniformly (with replacement, as the reference);
2. score them with a no-grad forward pass (`ctx.score`, counted as selection forwards);
   the importance of sample i is the upper bound of its gradient norm given by the last
   layer, g_i = ||softmax(z_i) - onehot(y_i)||_2 (the gradient of the cross-entropy with
   respect to the logits);
3. draw the batch of b samples from the presample with replacement, with probabilities
   p_i = g_i / sum_j g_j;
4. weight each drawn sample by w_i = 1 / (B p_i), so that the engine's weighted batch
   mean loss, mean(w * l), is an unbiased estimate of the presample's mean loss (and
   its gradient of the presample's mean gradient, hence of the full gradient).

Variance-reduction switch (the paper's tau, as the reference's ImportanceTraining): steps
are uniform batches until an exponential moving average (momentum 0.9, from 0) of the
achievable variance reduction 1 / sqrt(1 - ||g/S - u||^2 / ||g/S||^2) exceeds
tau_th = (B + 3b) / (3b) (2 for B = 3b; eq. 29 of the paper). While uniform, the average
is fed with the importances of the training batch itself (computed from the training
forward's logits in `observe`: no extra pass); once importance sampling is on, with
those of each presample. `tau_th=0` starts importance sampling at the first step.
The switch can stay off for a whole run (short runs, flat losses): the run is then a
random subset under another name. `run_metrics()` reports `active_share`, the share
of steps that were importance steps (0 is labelled in the table).

Host syncs: with the switch (tau_th > 0), one per step, reading the variance-reduction
average to choose the step's kind; with tau_th = 0 none (everything stays on ctx.device).

The drop ratio (our choice; the paper keeps the number of steps and spends the saving as
lower gradient variance): b is the cell's batch size, so every step has a normal batch,
and an epoch takes ceil(keep * N / b) steps (round(keep * N) samples backpropagated), so
a share `drop` of the backward passes is saved against uniform. Each importance step
costs B extra no-grad forwards, counted by the harness. Uniform steps take their batch
from the epoch's shuffled order without replacement (the reference draws with
replacement). The presample defaults to 3 b (the reference's `presample=3.0`).
"""
from __future__ import annotations

from typing import Iterator

import torch

from bench.method import Batch, Method, Param, chunks, register


def gradient_bound(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """||softmax(z) - onehot(y)||_2 per sample: the last-layer gradient-norm upper bound."""
    p = torch.log_softmax(logits.float(), dim=1).exp()  # (softmax itself is oddly slow on CPU)
    p[torch.arange(len(p), device=p.device), labels.to(p.device)] -= 1.0
    return p.norm(dim=1)


def variance_reduction(g: torch.Tensor) -> torch.Tensor:
    """The reference's 1 / sqrt(1 - ||g/S - u||^2 / ||g/S||^2) for scores g of a batch (a 0-d tensor)."""
    g = g.double()
    u = 1.0 / len(g)
    s = g.sum()
    q = torch.where(s > 0, g / s, torch.full_like(g, u))
    ratio = ((q - u) ** 2).sum() / (q**2).sum()
    return 1.0 / torch.sqrt(torch.clamp(1.0 - ratio, min=1e-12))


@register
class UBImportance(Method):
    name = "ub_importance"
    presample = Param(3.0, "[1, inf)", doc="presample size B, as a factor of the batch size")
    tau_th = Param(None, "[0, inf)", kind=float, doc="variance-reduction switch threshold (default (B + 3b) / 3b)")
    momentum = Param(0.9, "[0, 1)", doc="momentum of the switch's moving average")

    def setup(self) -> None:
        b = self.ctx.batch_size
        self.big = max(1, int(self.presample * b))  # B
        self.threshold = self.tau_th if self.tau_th is not None else (self.big + 3 * b) / (3 * b)
        self.vr = torch.zeros((), dtype=torch.float64, device=self.ctx.device)
        self.importance_steps = 0
        self.uniform_steps = 0

    def run_metrics(self) -> dict[str, float]:
        steps = self.importance_steps + self.uniform_steps
        return {"active_share": self.importance_steps / steps if steps else 0.0}

    def epoch_size(self, epoch: int) -> int:
        return self.keep_count

    @property
    def active(self) -> bool:
        return self.threshold <= 0 or bool(self.vr > self.threshold)  # the switch's host sync

    def _update_vr(self, g: torch.Tensor) -> None:
        self.vr = self.momentum * self.vr + (1 - self.momentum) * variance_reduction(g)

    def sample(self, b: int) -> Batch:
        """Presample B uniformly (with replacement), then draw b of it by the bound."""
        pre = torch.randint(0, self.ctx.n_train, (self.big,), generator=self.ctx.generator, device=self.ctx.device)
        return self.draw(pre, b)

    def draw(self, pre: torch.Tensor, b: int) -> Batch:
        """Score the presample, draw b of it with p proportional to g (with replacement), weights 1 / (B p)."""
        scores = self.ctx.score(pre)
        g = gradient_bound(scores.logits, self.ctx.labels[pre]).double()
        self._update_vr(g)
        total = g.sum()
        p = torch.where(total > 0, g / total, torch.full_like(g, 1.0 / len(g)))
        pick = torch.multinomial(p, b, replacement=True, generator=self.ctx.generator)
        w = 1.0 / (len(pre) * p[pick])
        return Batch(pre[pick], w.float())

    def batches(self, epoch: int) -> Iterator[Batch]:
        order = self.epoch_indices(epoch).indices[: self.epoch_size(epoch)]
        for chunk in chunks(len(order), self.ctx.batch_size, order.device):
            if self.active:
                self.importance_steps += 1
                yield self.sample(len(chunk))
            else:
                self.uniform_steps += 1
                yield Batch(order[chunk])

    def observe(self, batch: Batch, logits: torch.Tensor, losses: torch.Tensor) -> None:
        if batch.weights is None:  # a uniform step: feed the switch from the training forward
            self._update_vr(gradient_bound(logits, self.ctx.labels[batch.indices]))
