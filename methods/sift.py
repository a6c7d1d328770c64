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
4. Our own exit head starts random, so it is fitted before it selects: during the
   first `head_warmup_epochs` epochs (default 1) every batch is trained in full
   while the head takes one step on the batch's early-exit features (those partial
   forwards are counted). Models with their own head at layer k need no fitting
   and select from the first batch.
5. Rank correlation (the seed's open question): at the end of every epoch, on a
   fixed probe set of `probe_size` training samples (default 256, drawn once at
   setup; 0 = off), the Spearman correlation between the early-exit losses and the
   full-model losses (eval mode). Its passes are counted (partial and selection
   forwards) and timed as search, not train time. Logged as `sift_rank_corr.json`
   (per epoch) and returned by `final_metrics()` (`exit_rank_corr`: the last
   epoch's; `exit_rank_corr_first`: the first epoch's).

When it acts: a cell at drop 0 (every sample kept) or with no epoch after the
head's warm-up is refused (`refuse`).

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

    def __init__(self, drop: float = 0.0, exit_layer: int = 1, variant: str = "loss", head_lr: float = 1e-3,
                 head_warmup_epochs: int = 1, probe_size: int = 256):
        super().__init__(drop)
        if int(head_warmup_epochs) < 0 or int(probe_size) < 0:
            raise ValueError(f"head_warmup_epochs and probe_size must be >= 0, got {head_warmup_epochs}, {probe_size}")
        self.head_warmup_epochs = int(head_warmup_epochs)
        self.probe_size = int(probe_size)
        if int(exit_layer) < 1:
            raise ValueError(f"exit_layer must be at least 1, got {exit_layer}")
        if variant not in ("loss", "entropy"):
            raise ValueError(f"variant must be 'loss' or 'entropy', got {variant!r}")
        if not float(head_lr) > 0:
            raise ValueError(f"head_lr must be positive, got {head_lr}")
        self.exit_layer = int(exit_layer)
        self.variant = variant
        self.head_lr = float(head_lr)

    def refuse(self, epochs: int) -> str | None:
        if self.keep >= 1.0:
            return "sift at drop 0 keeps every sample (uniform training); give it a drop ratio > 0"
        if epochs <= self.head_warmup_epochs:
            return (f"sift needs epochs > head_warmup_epochs ({self.head_warmup_epochs}), the epochs that fit its exit "
                    f"head; this cell has {epochs}: raise epochs (or head_warmup_epochs=0 on models with their own "
                    "exit head, e.g. transformers)")
        return None

    def setup(self, ctx) -> None:
        super().setup(ctx)
        self.head: torch.nn.Linear | None = None  # our own exit head, for models without one at layer k
        self.head_opt: torch.optim.Optimizer | None = None
        n_exits = getattr(ctx.model, "num_exits", None)
        if n_exits is not None and self.exit_layer > n_exits:
            raise ValueError(f"sift: exit_layer {self.exit_layer} is deeper than the model's {n_exits} exits")
        self.epoch = 0
        self.own_head: bool | None = None  # whether the model has its own head at the exit (known at the first pass)
        self.warmup_epochs = self.head_warmup_epochs  # full epochs before selecting (0 once an own head is seen)
        n_probe = min(self.probe_size, ctx.n_train)
        self.probe = torch.randperm(ctx.n_train, generator=ctx.generator)[:n_probe].sort().values if n_probe else None
        self.rank_corr: list[dict] = []  # {"epoch", "spearman"} per epoch

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

    def _exit_logits(self, indices: torch.Tensor, fit: bool):
        """Early-exit logits and the labels; with `fit`, our own head takes a step on these features after scoring."""
        out = self.ctx.early_exit(indices, k=self.exit_layer)
        labels = self.ctx.labels[indices].to(out.features.device)
        if self.own_head is None:
            self.own_head = out.logits is not None
            if self.own_head:
                self.warmup_epochs = 0
        if out.logits is not None:
            return out.logits, labels
        if not fit:
            if self.head is None:
                return None, labels
            with torch.no_grad():
                return self.head(out.features.detach().float()), labels
        return self._head_logits(out.features, labels), labels

    def scores(self, batch: Batch) -> torch.Tensor:
        """Approximate per-sample losses (or entropies) of a batch, from the early exit."""
        logits, labels = self._exit_logits(batch.indices, fit=True)
        return approx_scores(logits, labels, self.variant)

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def select(self, batch: Batch) -> Batch:
        if self.keep >= 1.0:
            return batch
        k = static_k(self.keep, len(batch))
        if k >= len(batch):
            return batch
        scores = self.scores(batch)
        if not self.own_head and self.epoch < self.head_warmup_epochs:
            return batch  # the head was fitted on this batch; it selects once fitted
        pos = torch.topk(scores, k).indices.cpu()
        return batch.take(pos.sort().values)

    # -- the rank-correlation probe

    def end_epoch(self, epoch: int) -> None:
        if self.probe is None:
            return
        with self.ctx.search():  # a diagnostic: not train time
            logits, labels = self._exit_logits(self.probe, fit=False)
            if logits is None:
                return  # no head yet (nothing selected so far)
            approx = approx_scores(logits, labels, "loss").cpu()
            full = self.ctx.score(self.probe).losses.float().cpu()
        self.rank_corr.append({"epoch": epoch, "spearman": spearman(approx, full)})
        if epoch == self.ctx.epochs - 1:
            self.ctx.log_artifact("sift_rank_corr.json", {"probe_size": len(self.probe), "exit_layer": self.exit_layer,
                                                          "per_epoch": self.rank_corr})

    def final_metrics(self) -> dict[str, float]:
        """Metrics for the run's final record (the harness logs them where it supports the hook)."""
        if not self.rank_corr:
            return {}
        return {"exit_rank_corr": self.rank_corr[-1]["spearman"], "exit_rank_corr_first": self.rank_corr[0]["spearman"]}


def ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks of a 1-d tensor (0-based, float64); tied values share their average rank."""
    sv, order = x.double().sort()
    _, inv, counts = torch.unique_consecutive(sv, return_inverse=True, return_counts=True)
    first = torch.cumsum(counts, 0) - counts
    out = torch.empty(len(x), dtype=torch.float64)
    out[order] = (first + (counts - 1) / 2.0).double()[inv]
    return out


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two 1-d tensors; 0 when either is constant."""
    ra, rb = ranks(a.cpu()), ranks(b.cpu())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / den if den > 0 else 0.0
