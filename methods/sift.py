"""SIFT: keep the samples of each batch with the largest early-exit loss.

Paper: "Understanding the Training Speedup from Sampling with Approximate Losses",
Das, Chen, Ieong, Bansal, Sanghavi, arXiv 2402.07052 (seed 003; harness spec in
METHODS.md, section SIFT).

Steps
1. For each drawn batch of B candidates, a no-grad forward through the first
   `exit_layer` stages (`ctx.early_exit`: partial forwards, counted per depth) and an
   exit head give per-sample approximate losses (`variant="loss"`) or predictive
   entropies (`variant="entropy"`, the variant that needs no labels).
2. While selecting, the static_k(keep, B) = ceil(keep * B) largest are kept; only
   they get the full forward and backward pass (the engine's step).
3. Exit head. `head="fitted"` (default): a linear map from the exit's pooled features
   (a CNN's stage k, a transformer's [CLS] at layer k, plus a constant) to the one-hot
   label, fitted in closed form (ridge regression) on the detached features of every
   drawn batch, with sufficient statistics that decay over about an epoch so the fit
   follows the trunk as it trains; it never touches the trunk's gradients. Its
   approximate loss is the squared error of that map (its entropy variant: of the
   softmax of it). `head="own"`: the model's own head applied at layer k where it has
   one (timm ViT, HF BERT: the paper's BERT setting), scored by cross-entropy; the
   exit must then be a layer that trains.
4. Selection starts only once the exit can rank: at the end of every epoch the
   Spearman correlation between exit losses and full-model losses (eval mode) is
   measured on `probe_size` training samples held out from the head's fit (drawn once
   at setup); the first epoch after it reaches `corr_threshold` (0.5) selects, and
   so does every later one. Until then every batch trains in full while the head fits.
   The probe's passes are the method's work (they decide when it acts).
5. Logged every epoch (`sift.json`): that correlation, the exit head's accuracy on
   the probe and the class mix of the kept samples. `run_metrics`: the correlation
   when selection started (`exit_rank_corr_at_start`) and at the end, the head's
   accuracy, the epoch selection started, the largest class share among kept samples,
   and `active_share` (the share of epochs that selected: 0 is labelled in the table).

When it acts: drop 0 (every sample kept) or a single epoch (nothing left after the first
check) is refused.

Our choices (left open by the paper)
- The threshold 0.5 and the probe of 256 held-out samples; a closed-form (ridge) head
  in place of a trained linear layer: no learning rate to tune, and no optimizer step
  that reads a value on the host; ridge 1e-3 of the features' mean square; its
  statistics decay by 1 - B / N a batch (a memory of about one epoch).
- The last, smaller batch of an epoch keeps static_k(keep, its size).
- The default keep comes from the harness drop ratio (the paper's default is keep 0.5).

Host syncs: none per step (exit, head fit and top-k stay on ctx.device); at each epoch's end
the probe reads its correlation and the head's accuracy (5 reads), and the kept samples'
class mix once selecting (1).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bench.method import Method, Param, register, static_k


def approx_scores(logits: torch.Tensor, labels: torch.Tensor | None, variant: str, squared: bool = False) -> torch.Tensor:
    """Per-sample loss (variant "loss": cross-entropy, or with `squared` the squared error against the
    one-hot label) or predictive entropy (variant "entropy")."""
    logits = logits.float()
    if variant == "entropy":
        logp = F.log_softmax(logits, 1)
        return -(logp.exp() * logp).sum(1)
    if squared:
        return (logits - F.one_hot(labels, logits.shape[1]).float()).pow(2).sum(1)
    return F.cross_entropy(logits, labels, reduction="none")


class RidgeHead:
    """A linear map features -> one-hot labels, refitted in closed form after every update from decayed
    sufficient statistics (X'X, X'Y); a constant feature gives it a bias. All on the device, no host read."""

    def __init__(self, dim: int, classes: int, decay: float, device, ridge: float = 1e-3):
        self.xx = torch.zeros(dim + 1, dim + 1, device=device)
        self.xy = torch.zeros(dim + 1, classes, device=device)
        self.w = torch.zeros(dim + 1, classes, device=device)
        self.decay, self.ridge, self.classes = decay, ridge, classes

    @staticmethod
    def _x(features: torch.Tensor) -> torch.Tensor:
        return torch.cat([features, torch.ones(len(features), 1, device=features.device)], 1)

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return self._x(features) @ self.w

    def update(self, features: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor) -> None:
        x = self._x(features) * weight.unsqueeze(1)
        self.xx.mul_(self.decay).add_(x.t() @ x)
        self.xy.mul_(self.decay).add_(x.t() @ F.one_hot(labels, self.classes).float())
        eye = torch.eye(len(self.xx), device=self.xx.device)
        lam = self.ridge * self.xx.diagonal().mean().clamp_min(1e-12)
        self.w = torch.linalg.solve_ex(self.xx + lam * eye, self.xy)[0]


@register
class SIFT(Method):
    name = "sift"
    exit_layer = Param(1, "[1, inf)", doc="stages (layers) before the early exit")
    variant = Param("loss", choices=("loss", "entropy"), doc="rank by exit loss, or by exit entropy")
    head = Param("fitted", choices=("fitted", "own"), doc="a linear head fitted on the exit, or the model's own")
    corr_threshold = Param(0.5, "[-1, 1]", doc="held-out rank correlation of exit and full losses that starts selection")
    probe_size = Param(256, "[16, inf)", doc="training samples held out from the head's fit, for that correlation")

    def refuse(self, cell) -> str | None:
        epochs = cell.epochs
        if self.keep >= 1.0:
            return "sift at drop 0 keeps every sample (uniform training); give it a drop ratio > 0"
        if epochs < 2:
            return "sift needs at least 2 epochs: it checks its exit at an epoch's end before it selects; raise epochs"
        return None

    def setup(self) -> None:
        ctx = self.ctx
        n_exits = getattr(ctx.model, "num_exits", None)
        if n_exits is not None and self.exit_layer > n_exits:
            raise ValueError(f"sift: exit_layer {self.exit_layer} is deeper than the model's {n_exits} exits")
        n_probe = min(self.probe_size, ctx.n_train // 4)
        self.probe = self.randperm(ctx.n_train)[:n_probe].sort().values
        self.fit_weight = torch.ones(ctx.n_train, device=ctx.device)
        self.fit_weight[self.probe] = 0.0  # held out from the head's fit
        self.fc: RidgeHead | None = None
        self.selecting = False
        self.start_epoch = -1
        self.corr_at_start = float("nan")
        self.kept = torch.zeros(ctx.num_classes, device=ctx.device)
        self.epochs: list[dict] = []

    # -- the exit and its head

    def exit_logits(self, indices: torch.Tensor, fit: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Exit outputs of these samples (from the head as it was before this batch's update) and their labels."""
        out = self.ctx.early_exit(indices, k=self.exit_layer)
        labels = self.ctx.labels[indices]
        if self.head == "own":
            if out.logits is None:
                raise ValueError(f"sift head=own: the model has no head of its own at layer {self.exit_layer}; "
                                 "use head=fitted")
            return out.logits, labels
        features = out.features.detach().float()
        if self.fc is None:
            decay = max(0.0, 1.0 - self.ctx.batch_size / self.ctx.n_train)
            self.fc = RidgeHead(features.shape[1], self.ctx.num_classes, decay, self.ctx.device)
        logits = self.fc(features)
        if fit:
            self.fc.update(features, labels, self.fit_weight[indices])
        return logits, labels

    def approx(self, logits: torch.Tensor, labels: torch.Tensor, variant: str) -> torch.Tensor:
        return approx_scores(logits, labels, variant, squared=self.head == "fitted")

    # -- the hooks

    def batches(self, epoch: int):
        for batch in super().batches(epoch):
            logits, labels = self.exit_logits(batch.indices, fit=True)
            if not self.selecting:
                yield batch
                continue
            k = static_k(self.keep, len(batch))
            pos = torch.topk(self.approx(logits, labels, self.variant), k).indices.sort().values
            self.kept += F.one_hot(labels[pos], self.ctx.num_classes).sum(0)
            yield batch.take(pos)

    def end_epoch(self, epoch: int) -> None:
        logits, labels = self.exit_logits(self.probe, fit=False)
        approx = self.approx(logits, labels, "loss")
        full = self.ctx.score(self.probe).losses.float()
        corr = spearman(approx, full)
        head_acc = float((logits.argmax(1) == labels).float().mean())
        kept = self.kept / self.kept.sum().clamp_min(1)
        self.epochs.append({"epoch": epoch, "selecting": self.selecting, "exit_rank_corr": corr,
                            "exit_head_acc": head_acc, "kept_class_share": kept.tolist() if self.selecting else None})
        self.kept.zero_()
        if not self.selecting and corr >= self.corr_threshold and epoch < self.ctx.epochs - 1:
            self.selecting, self.start_epoch, self.corr_at_start = True, epoch + 1, corr
        if epoch == self.ctx.epochs - 1:
            self.ctx.log_artifact("sift.json", {"exit_layer": self.exit_layer, "head": self.head,
                                                "probe_size": len(self.probe), "corr_threshold": self.corr_threshold,
                                                "per_epoch": self.epochs})

    def run_metrics(self) -> dict[str, float]:
        if not self.epochs:
            return {}
        selected = [e for e in self.epochs if e["selecting"]]
        shares = [max(e["kept_class_share"]) for e in selected if e["kept_class_share"]]
        return {
            "exit_rank_corr_at_start": self.corr_at_start, "exit_rank_corr_first": self.epochs[0]["exit_rank_corr"],
            "exit_rank_corr": self.epochs[-1]["exit_rank_corr"], "exit_head_acc": self.epochs[-1]["exit_head_acc"],
            "selection_start_epoch": float(self.start_epoch) if self.start_epoch >= 0 else math.nan,
            "kept_class_max_share": max(shares) if shares else math.nan,
            "active_share": len(selected) / self.ctx.epochs,
        }


def ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks of a 1-d tensor (0-based, float64); tied values share their average rank."""
    sv, order = x.double().sort()
    _, inv, counts = torch.unique_consecutive(sv, return_inverse=True, return_counts=True)
    first = torch.cumsum(counts, 0) - counts
    out = torch.empty(len(x), dtype=torch.float64, device=x.device)
    out[order] = (first + (counts - 1) / 2.0).double()[inv]
    return out


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two 1-d tensors; 0 when either is constant."""
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / den if den > 0 else 0.0
