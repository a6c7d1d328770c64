"""Selective Backprop: keeps percentile**beta, 1/(beta+1) on uniform losses, fixed-size batches."""
import math

import pytest
import torch

from bench.method import Scores
from bench.registry import METHODS


class FakeCtx:
    """Scores are a fixed table of losses (or fresh uniform noise); score calls are counted."""

    def __init__(self, n=20000, batch_size=100, drop=0.5, losses=None, seed=0):
        self.n_train, self.num_classes, self.epochs, self.batch_size, self.drop = n, 10, 4, batch_size, drop
        self.labels = torch.zeros(n, dtype=torch.long)
        self.generator = torch.Generator().manual_seed(seed)
        self.device = torch.device("cpu")
        self.table = losses
        self.noise = torch.Generator().manual_seed(seed + 100)
        self.scored = 0
        self.calls = []

    def score(self, indices):
        self.scored += len(indices)
        self.calls.append(indices.clone())
        l = self.table[indices] if self.table is not None else torch.rand(len(indices), generator=self.noise)
        return Scores(torch.zeros(len(indices), self.num_classes), l.clone())


def make(drop=0.5, ctx=None, **params):
    m = METHODS.get("selective_backprop").build(drop, params)
    ctx = ctx or FakeCtx(drop=drop)
    m.setup(ctx)
    return m, ctx


def run_epoch(m, epoch):
    out = []
    for b in m.batches(epoch):
        out.append(b)
        m.observe(b, torch.zeros(len(b), 10), torch.rand(len(b)))
    return out


@pytest.mark.parametrize("drop,beta,expected", [(0.5, None, 0.5), (0.75, None, 0.25), (0.5, 2.0, 1 / 3), (0.2, None, 0.8)])
def test_kept_share_is_one_over_beta_plus_one_on_uniform_losses(drop, beta, expected):
    m, ctx = make(drop, **({} if beta is None else {"beta": beta}))
    assert m.expected_keep == pytest.approx(expected)
    batches = run_epoch(m, 1)
    kept = sum(len(b) for b in batches)
    assert kept / ctx.n_train == pytest.approx(expected, abs=0.02)
    assert ctx.scored == ctx.n_train  # every candidate forwarded once, counted
    # the plan estimates the steps well
    assert abs(len(batches) - m.steps_in_epoch(1)) <= 0.05 * m.steps_in_epoch(1) + 1


def test_beta_from_drop_matches_the_paper_default():
    assert make(0.5)[0].beta == pytest.approx(1.0)
    assert make(0.75)[0].beta == pytest.approx(3.0)
    assert make(0.0)[0].beta == 3.0  # drop 0: the reference's default, not derived from the drop ratio
    assert make(0.0, beta=2.0)[0].beta == 2.0


def test_backward_batches_are_fixed_size_and_unique():
    m, ctx = make(0.5, ctx=FakeCtx(n=5003, batch_size=64))
    batches = run_epoch(m, 1)
    sizes = [len(b) for b in batches]
    assert all(s == 64 for s in sizes[:-1]) and 0 < sizes[-1] <= 64
    idx = torch.cat([b.indices for b in batches])
    assert len(set(idx.tolist())) == len(idx)
    assert all(b.weights is None for b in batches)


def test_prefers_the_biggest_losers():
    n = 10000
    losses = torch.rand(n, generator=torch.Generator().manual_seed(5))
    m, ctx = make(0.75, ctx=FakeCtx(n=n, losses=losses))
    idx = torch.cat([b.indices for b in run_epoch(m, 1)])
    top = losses > 0.75
    assert float(top[idx].float().mean()) > 0.55  # E[U^3 | U>.75] / E[U^3] = 0.68
    assert float(losses[idx].mean()) > 0.75  # E[U^4]/E[U^3] = 0.8
    low = (losses < 0.25).nonzero().flatten()
    assert float(torch.isin(low, idx).float().mean()) < 0.02  # kept with prob <= .25^3


def test_warmup_epoch_trains_everything_without_scoring():
    m, ctx = make(0.5)
    batches = run_epoch(m, 0)
    assert sum(len(b) for b in batches) == ctx.n_train and ctx.scored == 0
    assert m.steps_in_epoch(0) == math.ceil(ctx.n_train / ctx.batch_size) == len(batches)
    m0, ctx0 = make(0.5, warmup_epochs=0)
    run_epoch(m0, 0)
    assert ctx0.scored == ctx0.n_train


def test_drop_zero_still_selects_with_the_reference_beta():
    m, ctx = make(0.0)
    assert m.refuse(3) is None
    kept = sum(len(b) for b in run_epoch(m, 2))
    assert kept / ctx.n_train == pytest.approx(0.25, abs=0.02) and ctx.scored == ctx.n_train


def test_no_op_cells_are_refused():
    assert "beta 0" in make(0.0, beta=0.0)[0].refuse(3)
    assert "epochs > warmup_epochs (1)" in make(0.5)[0].refuse(1)
    assert make(0.5)[0].refuse(2) is None


def test_history_is_bounded_and_percentile_is_strict():
    m, _ = make(0.5, history=4)
    p = m.keep_probability(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert torch.allclose(p, torch.tensor([0.0, 0.25, 0.5, 0.75]))
    m.keep_probability(torch.tensor([10.0, 11.0]))
    assert m.hist.tolist() == [3.0, 4.0, 10.0, 11.0]


def test_stale_losses_spare_the_selection_forward():
    m, ctx = make(0.5, ctx=FakeCtx(n=2000), stale=2)
    run_epoch(m, 0)  # warm-up: training losses are observed for every sample
    assert ctx.scored == 0
    run_epoch(m, 1)  # all losses are 1 epoch old: reused
    assert ctx.scored == 0
    run_epoch(m, 2)
    # kept samples were trained in epoch 1 (fresh); the rest are 2 epochs old: re-scored
    assert 0 < ctx.scored < 2000
    fresh, _ = make(0.5, ctx=FakeCtx(n=2000))
    run_epoch(fresh, 1)
    assert fresh.ctx.scored == 2000
