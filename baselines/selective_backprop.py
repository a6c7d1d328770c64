"""Selective Backprop (Jiang et al. 2019, "Accelerating Deep Learning by Focusing on the
Biggest Losers", arXiv 1910.00762).

Candidates are taken from the epoch's shuffled order in chunks of the batch size. Each
chunk is scored by a no-grad, evaluation-mode forward pass (`ctx.score`, counted as
selection forwards). The chunk's losses are appended to a history of the most recent
`history` losses (1024), and each candidate is kept with probability
percentile(loss among the history) ** beta, where the percentile is the share of the
history strictly below the loss. Kept samples queue up and are trained in batches of
exactly `batch_size`; the part left at the end of the epoch is trained as one smaller
batch, so every kept sample gets its backward pass in the epoch it was chosen.

As the reference code (angelajiang/SelectiveBackprop: `lib/calculators.py`
BatchedRelativeProbabilityCalculator, `lib/hist.py`, `lib/trainer.py`):
- history of the last 1024 losses, updated with the chunk before its probabilities
  are computed; percentile = share of the history strictly below; sampling_min 0;
- the first epoch trains on all data without selection (the reference "primes" with
  one epoch's worth of images); `warmup_epochs` sets this (default 1);
- fixed-size backward batches, tail flushed at the end of the epoch;
- `stale` (the reference's optional "stale" forward selector, whose staleness
  defaults to 2; default 0 here = off, every candidate forwarded): a candidate whose loss was measured less than `stale` epochs ago
  reuses it instead of being forwarded again. We also count the training forward of a
  sample as a measurement (its training loss, in train mode and augmented), where the
  reference only memoizes the selection forward's loss.

beta and the drop ratio. For a loss whose percentile is uniform on [0, 1], the kept
share is E[U ** beta] = 1 / (beta + 1). With `beta=None` (default) we derive beta from
the cell's drop ratio so that the expected kept share is keep = 1 - drop:
beta = 1 / keep - 1 = drop / keep (drop 0.5 -> beta 1, the paper's default; drop 0.75
-> beta 3). An explicit `beta` overrides the drop ratio, and the kept share is then
1 / (beta + 1). With beta 0 (drop 0) every sample is kept and no scoring is done.

Where we differ: the selection forward is the harness's counted `ctx.score` in eval
mode (as the reference's CutoutForwardpropper, which calls net.eval()); the LR schedule
is stepped per optimizer step over the planned steps, estimated as
ceil(N * kept share / batch size) per selective epoch; the realized number can differ
slightly (the selection is random), which the harness logs.
"""
from __future__ import annotations

import math
from typing import Iterator

import torch

from bench.method import Batch, Method, chunks, num_batches, register


@register
class SelectiveBackprop(Method):
    name = "selective_backprop"

    def __init__(self, drop: float = 0.0, beta: float | None = None, history: int = 1024,
                 warmup_epochs: int = 1, stale: int = 0):
        super().__init__(drop)
        if beta is None:
            beta = self.drop / self.keep
        if float(beta) < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if int(history) < 1:
            raise ValueError(f"history must be at least 1, got {history}")
        if int(warmup_epochs) < 0 or int(stale) < 0:
            raise ValueError("warmup_epochs and stale must be >= 0")
        self.beta = float(beta)
        self.history = int(history)
        self.warmup_epochs = int(warmup_epochs)
        self.stale = int(stale)

    @property
    def expected_keep(self) -> float:
        return 1.0 / (self.beta + 1.0)

    def setup(self, ctx) -> None:
        super().setup(ctx)
        self.hist = torch.empty(0)  # the most recent losses, oldest first
        self.last_loss = torch.full((ctx.n_train,), float("nan"))
        self.last_epoch = torch.full((ctx.n_train,), -(10**9), dtype=torch.long)
        self.epoch = 0
        self.candidates = 0
        self.kept = 0

    # -- planning

    def selective(self, epoch: int) -> bool:
        return epoch >= self.warmup_epochs and self.beta > 0

    def steps_in_epoch(self, epoch: int) -> int:
        n, b = self.ctx.n_train, self.ctx.batch_size
        if not self.selective(epoch):
            return num_batches(n, b)
        return max(1, math.ceil(n * self.expected_keep / b))

    # -- selection

    def _losses(self, idx: torch.Tensor) -> torch.Tensor:
        """Current losses of these candidates: fresh (counted ctx.score) or, with `stale`,
        a recent enough one."""
        losses = torch.empty(len(idx))
        fresh = torch.ones(len(idx), dtype=torch.bool)
        if self.stale > 0:
            fresh = (self.epoch - self.last_epoch[idx] >= self.stale) | self.last_loss[idx].isnan()
            losses[~fresh] = self.last_loss[idx[~fresh]]
        if bool(fresh.any()):
            fidx = idx[fresh]
            scored = self.ctx.score(fidx).losses.detach().float().cpu()
            losses[fresh] = scored
            self.last_loss[fidx] = scored
            self.last_epoch[fidx] = self.epoch
        return losses

    def keep_probability(self, losses: torch.Tensor) -> torch.Tensor:
        """Append the losses to the history, then percentile(loss) ** beta for each."""
        self.hist = torch.cat([self.hist, losses.float()])[-self.history:]
        pct = (self.hist.unsqueeze(0) < losses.float().unsqueeze(1)).float().mean(1)
        return pct.pow(self.beta)

    def batches(self, epoch: int) -> Iterator[Batch]:
        self.epoch = epoch
        order = self.epoch_indices(epoch)
        b = self.ctx.batch_size
        if not self.selective(epoch):
            for chunk in chunks(len(order), b):
                yield order.take(chunk)
            return
        g = self.ctx.generator
        queue: list[torch.Tensor] = []
        queued = 0
        for chunk in chunks(len(order), b):
            idx = order.indices[chunk]
            prob = self.keep_probability(self._losses(idx))
            kept = idx[torch.rand(len(idx), generator=g) < prob]
            self.candidates += len(idx)
            self.kept += len(kept)
            if len(kept):
                queue.append(kept)
                queued += len(kept)
            while queued >= b:
                flat = torch.cat(queue)
                yield Batch(flat[:b])
                rest = flat[b:]
                queue, queued = ([rest] if len(rest) else []), len(rest)
        if queued:
            yield Batch(torch.cat(queue))

    def observe(self, batch: Batch, logits: torch.Tensor, losses: torch.Tensor) -> None:
        if self.stale > 0:
            self.last_loss[batch.indices] = losses.detach().float().cpu()
            self.last_epoch[batch.indices] = self.epoch
