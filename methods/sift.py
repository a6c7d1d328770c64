"""SIFT: keep the samples of each batch with the largest early-exit loss.

Paper: "Understanding the Training Speedup from Sampling with Approximate Losses",
Das, Chen, Ieong, Bansal, Sanghavi, arXiv 2402.07052 (seed 003; harness spec in
METHODS.md, section SIFT).

Steps
1. For each drawn batch of B candidates, a no-grad forward through the first
   `exit_layer` blocks (`ctx.early_exit`, default k = 1; counted by the harness as
   partial forwards, timed as selection) and an exit head give per-sample
   approximate losses (`variant="loss"`, default) or predictive entropies
   (`variant="entropy"`, the variant that needs no labels).
2. The static_k(keep, B) = ceil(keep * B) largest are kept; only they get the full
   forward and backward pass (the engine's step). With drop = 0 every sample is
   kept and no early pass is made.
3. Exit head: where the model has its own head at layer k (timm ViT: its norm and
   head; HF BERT: its pooler and classifier), those logits are used. Otherwise
   (CNNs: pooled stage-k features, logits None) the method owns a
   torch.nn.Linear(features_dim, C), created lazily on ctx.device and trained on
   its own loss on the detached features, so it never changes the trunk's
   gradients.

Our choices (left open by the paper)
- Exit-head optimizer: Adam, lr `head_lr` = 1e-3, one step per drawn batch, on
  all B candidates' detached features and (trained-on) labels; the head scores the
  batch before its update on that batch. Its tiny backward is not counted as a
  sample-backward (it is a D x C linear layer, not the model) but its time is
  charged to the selection stage.
- The last, smaller batch of an epoch keeps static_k(keep, its size).
- The default keep comes from the harness drop ratio (the paper's default is
  keep 0.5, i.e. drop 0.5).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.method import Batch, Method, register, static_k


def approx_scores(logits: torch.Tensor, labels: torch.Tensor | None, variant: str) -> torch.Tensor:
    """Per-sample cross-entropy (variant "loss") or predictive entropy (variant "entropy")."""
    logits = logits.float()
    if variant == "entropy":
        logp = F.log_softmax(logits, 1)
        return -(logp.exp() * logp).sum(1)
    return F.cross_entropy(logits, labels, reduction="none")


@register
class SIFT(Method):
    name = "sift"

    def __init__(self, drop: float = 0.0, exit_layer: int = 1, variant: str = "loss", head_lr: float = 1e-3):
        super().__init__(drop)
        if int(exit_layer) < 1:
            raise ValueError(f"exit_layer must be at least 1, got {exit_layer}")
        if variant not in ("loss", "entropy"):
            raise ValueError(f"variant must be 'loss' or 'entropy', got {variant!r}")
        if not float(head_lr) > 0:
            raise ValueError(f"head_lr must be positive, got {head_lr}")
        self.exit_layer = int(exit_layer)
        self.variant = variant
        self.head_lr = float(head_lr)

    def setup(self, ctx) -> None:
        super().setup(ctx)
        self.head: torch.nn.Linear | None = None  # our own exit head, for models without one at layer k
        self.head_opt: torch.optim.Optimizer | None = None
        n_exits = getattr(ctx.model, "num_exits", None)
        if n_exits is not None and self.exit_layer > n_exits:
            raise ValueError(f"sift: exit_layer {self.exit_layer} is deeper than the model's {n_exits} exits")

    def _head_logits(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Score with our exit head, then train it one step on the detached features."""
        features = features.detach().float()
        if self.head is None:
            self.head = torch.nn.Linear(features.shape[1], self.ctx.num_classes).to(self.ctx.device)
            self.head_opt = torch.optim.Adam(self.head.parameters(), lr=self.head_lr)
        with torch.no_grad():
            logits = self.head(features)
        with torch.enable_grad():
            loss = F.cross_entropy(self.head(features), labels)
            self.head_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.head_opt.step()
        return logits

    def scores(self, batch: Batch) -> torch.Tensor:
        """Approximate per-sample losses (or entropies) of a batch, from the early exit."""
        out = self.ctx.early_exit(batch.indices, k=self.exit_layer)
        labels = self.ctx.labels[batch.indices].to(out.features.device)
        logits = out.logits if out.logits is not None else self._head_logits(out.features, labels)
        return approx_scores(logits, labels, self.variant)

    def select(self, batch: Batch) -> Batch:
        if self.keep >= 1.0:
            return batch
        k = static_k(self.keep, len(batch))
        if k >= len(batch):
            return batch
        pos = torch.topk(self.scores(batch), k).indices.cpu()
        return batch.take(pos.sort().values)
