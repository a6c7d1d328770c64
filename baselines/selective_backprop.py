"""Selective Backprop (Jiang et al. 2019, "Accelerating Deep Learning by Focusing on the
Biggest Losers", arXiv 1910.00762).

Steps (each selective epoch)
1. Candidates are taken from the epoch's shuffled order in chunks of the batch size.
2. Each chunk is scored by a no-grad, evaluation-mode forward pass (`ctx.score`,
   counted as selection forwards).
3. The chunk's losses are appended to a history of the most recent `history` losses
   (1024); each candidate is kept with probability percentile(loss among the
   history) ** beta, the percentile being the share of the history strictly below.
4. Kept samples queue up and are trained in batches of exactly `batch_size`; the part
   left at the end of the epoch is trained as one smaller batch, so every kept sample
   gets its backward pass in the epoch it was chosen.

As the reference code (angelajiang/SelectiveBackprop: `lib/calculators.py`
BatchedRelativeProbabilityCalculator, `lib/hist.py` UnboundedHistogram,
`lib/trainer.py` MemoizedTrainer, `lib/forwardproppers.py`, `lib/fp_selectors.py`):
- history of the last 1024 losses, updated with the chunk before its probabilities
  are computed; percentile = share of the history strictly below; sampling_min 0;
- the first epoch trains on all data without selection (the reference "primes" with
  one epoch's worth of images); `warmup_epochs` sets this (default 1);
- fixed-size backward batches, tail flushed at the end of the epoch;
- beta (the reference's `prob_pow`) defaults to 3 there.

beta and the drop ratio. For a loss whose percentile is uniform on [0, 1], the kept
share is E[U ** beta] = 1 / (beta + 1). With `beta=None` (default) and drop > 0, beta
is derived from the cell's drop ratio so that the expected kept share is
keep = 1 - drop: beta = drop / keep (drop 0.5 -> beta 1, the paper's default; drop 0.75
-> beta 3). At drop 0, as in the paper, the method still selects: beta is then the
reference's default 3 (kept share about 1/4), not derived from the drop ratio. An
explicit `beta` overrides both, and the kept share is then 1 / (beta + 1). beta 0
keeps every sample (uniform training plus scoring passes): such a cell is refused.

The loss cache (`stale`). The reference's "stale" forward selector (off by default:
`fp_selector_type="alwayson"`; staleness 2 when on) memoizes, per sample, the loss of
its last selection forward (CutoutForwardpropper writes `metadata["loss"]` and resets
`epochs_since_update` only for forward-selected samples); a sample seen again before
`staleness` visits reuses that loss. Note that the reference's forward pass still runs
on the whole chunk (it rebuilds the input tensor from every example), so there the
cache changes which loss is used but saves no compute. Here `stale` (default 0 = off)
skips the forward for a candidate whose loss is less than `stale` epochs old, so it
does save selection forwards (fewer are counted), and we also record the training
forward of a sample (its training loss, in train mode and augmented) as a
measurement, where the reference records only selection-forward losses.

Host syncs (bench/syncs.py): one per chunk of candidates in a selective epoch: the kept
candidates are a boolean selection, whose size the host must read to cut fixed-size
batches from the queue. The keep draw, the queue and the batches stay on ctx.device.

Where we differ: the selection forward is the harness's counted `ctx.score` in eval
mode (as the reference's CutoutForwardpropper, which calls net.eval()); the reference
also runs that selection forward during its priming epoch, we do not (the warm-up
epoch trains on all data with no scoring pass); the LR schedule is stepped per
optimizer step over the planned steps, planned from an epoch size of round(N * kept share)
per selective epoch; the realized number can differ slightly (the selection is
random), which the harness logs.
"""
from __future__ import annotations

from typing import Iterator

import torch

from bench.method import Batch, Method, Param, chunks, register

REFERENCE_BETA = 3.0  # the reference's default prob_pow, used at drop 0


@register
class SelectiveBackprop(Method):
    name = "selective_backprop"
    beta = Param(None, "[0, inf)", kind=float, doc="keep probability = percentile ** beta (default: from the drop)")
    history = Param(1024, "[1, inf)", doc="recent losses the percentile is taken over")
    warmup_epochs = Param(1, "[0, inf)", doc="full epochs before selecting (the reference's priming)")
    stale = Param(0, "[0, inf)", doc="reuse a loss less than this many epochs old (0: always score)")

    def __init__(self, drop: float = 0.0, **params):
        super().__init__(drop, **params)
        if self.beta is None:
            self.beta = self.drop / self.keep if self.drop > 0 else REFERENCE_BETA

    def refuse(self, cell) -> str | None:
        epochs = cell.epochs
        if self.beta == 0:
            return "selective_backprop with beta 0 keeps every sample (uniform training); give beta > 0"
        return self.refuse_warmup(epochs, self.warmup_epochs)

    @property
    def expected_keep(self) -> float:
        return 1.0 / (self.beta + 1.0)

    def setup(self) -> None:
        n, dev = self.ctx.n_train, self.ctx.device
        self.hist = torch.empty(0, device=dev)  # the most recent losses, oldest first
        self.last_loss = torch.full((n,), float("nan"), device=dev)
        self.last_epoch = torch.full((n,), -(10**9), dtype=torch.long, device=dev)
        self.candidates = 0
        self.kept = 0

    def selective(self, epoch: int) -> bool:
        return epoch >= self.warmup_epochs and self.beta > 0

    def epoch_size(self, epoch: int) -> int:
        n = self.ctx.n_train
        return round(n * self.expected_keep) if self.selective(epoch) else n

    def _losses(self, idx: torch.Tensor) -> torch.Tensor:
        """Current losses of these candidates: fresh (counted ctx.score) or, with `stale`, a recent enough one."""
        if self.stale <= 0:
            return self.ctx.score(idx).losses.float()
        epoch = self.ctx.epoch
        fresh = (epoch - self.last_epoch[idx] >= self.stale) | self.last_loss[idx].isnan()
        losses = self.last_loss[idx].clone()
        fidx = idx[fresh]  # a boolean selection: one sync (stale is off by default)
        if len(fidx):
            scored = self.ctx.score(fidx).losses.float()
            losses[fresh] = scored
            self.last_loss[fidx] = scored
            self.last_epoch[fidx] = epoch
        return losses

    def keep_probability(self, losses: torch.Tensor) -> torch.Tensor:
        """Append the losses to the history, then percentile(loss) ** beta for each."""
        self.hist = torch.cat([self.hist, losses.float()])[-self.history:]
        pct = (self.hist.unsqueeze(0) < losses.float().unsqueeze(1)).float().mean(1)
        return pct.pow(self.beta)

    def batches(self, epoch: int) -> Iterator[Batch]:
        order = self.epoch_indices(epoch)
        b = self.ctx.batch_size
        if not self.selective(epoch):
            yield from (order.take(c) for c in chunks(len(order), b, order.indices.device))
            return
        queue = order.indices[:0]
        for chunk in chunks(len(order), b, order.indices.device):
            idx = order.indices[chunk]
            prob = self.keep_probability(self._losses(idx))
            draw = torch.rand(len(idx), generator=self.ctx.generator, device=self.ctx.device)
            kept = idx[draw < prob]  # its length is read here: the one host sync per chunk
            self.candidates += len(idx)
            self.kept += len(kept)
            queue = torch.cat([queue, kept])
            while len(queue) >= b:
                yield Batch(queue[:b])
                queue = queue[b:]
        if len(queue):
            yield Batch(queue)

    def observe(self, batch: Batch, logits: torch.Tensor, losses: torch.Tensor) -> None:
        if self.stale > 0:
            self.last_loss[batch.indices] = losses.float()
            self.last_epoch[batch.indices] = self.ctx.epoch
