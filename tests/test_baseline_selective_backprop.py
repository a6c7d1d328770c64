"""Selective Backprop: keeps percentile**beta, 1/(beta+1) on uniform losses, fixed-size batches."""
import math

import pytest
import torch

from fakes import drive, make, cell


def sb(epochs=2, drop=0.5, params=None, **ctx_kw):
    return drive("selective_backprop", epochs=epochs, drop=drop, params=params, **ctx_kw)


@pytest.mark.parametrize("drop,beta,expected",
                         [(0.5, None, 0.5), (0.75, None, 0.25), (0.5, 2.0, 1 / 3), (0.2, None, 0.8)])
def test_kept_share_is_one_over_beta_plus_one_on_uniform_losses(drop, beta, expected):
    n, b = 20000, 100
    rec = sb(drop=drop, params=None if beta is None else {"beta": beta}, n=n, batch_size=b)  # losses: fresh noise
    ep = rec.epochs[1]
    assert ep.planned == round(n * expected)  # the schedule is planned from the expected kept share
    assert ep.samples / n == pytest.approx(expected, abs=0.02)
    assert ep.counts.selection_forwards == n  # every candidate forwarded once, counted
    assert ep.counts.backwards == ep.samples
    planned_steps = math.ceil(ep.planned / b)
    assert abs(len(ep.batches) - planned_steps) <= 0.05 * planned_steps + 1  # the plan estimates the steps well


@pytest.mark.parametrize("drop,params,keep", [(0.5, {}, 1 / 2), (0.75, {}, 1 / 4), (0.0, {}, 1 / 4),
                                               (0.0, {"beta": 2.0}, 1 / 3)])
def test_beta_from_drop_matches_the_paper_default(drop, params, keep):
    # drop 0.5 -> beta 1 (the paper's default); 0.75 -> beta 3; drop 0 -> the reference's beta 3, not from the drop
    assert sb(drop=drop, params=params, n=1200).epochs[1].planned == round(1200 * keep)


def test_backward_batches_are_fixed_size_and_unique():
    ep = sb(n=5003, batch_size=64).epochs[1]
    assert all(s == 64 for s in ep.sizes[:-1]) and 0 < ep.sizes[-1] <= 64
    assert len(torch.unique(ep.indices)) == ep.samples
    assert all(b.weights is None for b in ep.batches)


def test_prefers_the_biggest_losers():
    n = 10000
    losses = torch.rand(n, generator=torch.Generator().manual_seed(5))
    idx = sb(drop=0.75, n=n, losses=losses).epochs[1].indices
    top = losses > 0.75
    assert float(top[idx].float().mean()) > 0.55  # E[U^3 | U>.75] / E[U^3] = 0.68
    assert float(losses[idx].mean()) > 0.75  # E[U^4]/E[U^3] = 0.8
    low = (losses < 0.25).nonzero().flatten()
    assert float(torch.isin(low, idx).float().mean()) < 0.02  # kept with prob <= .25^3


def test_warmup_epoch_trains_everything_without_scoring():
    rec = sb(n=2000, batch_size=100)
    ep = rec.epochs[0]
    assert sorted(ep.indices.tolist()) == list(range(2000)) and ep.counts.selection_forwards == 0
    assert ep.planned == 2000 and ep.sizes == [100] * 20
    rec0 = sb(epochs=1, params={"warmup_epochs": 0}, n=2000)
    assert rec0.counts.selection_forwards == 2000 and rec0.epochs[0].samples < 2000


def test_drop_zero_still_selects_with_the_reference_beta():
    assert make("selective_backprop", 0.0).refuse(cell(3)) is None
    ep = sb(epochs=3, drop=0.0, n=20000).epochs[2]
    assert ep.samples / 20000 == pytest.approx(0.25, abs=0.02) and ep.counts.selection_forwards == 20000


def test_no_op_cells_are_refused():
    assert "beta 0" in make("selective_backprop", 0.0, beta=0.0).refuse(cell(3))
    assert "epochs > warmup_epochs (1)" in make("selective_backprop", 0.5).refuse(cell(1))
    assert make("selective_backprop", 0.5).refuse(cell(2)) is None


def rising():
    """Losses that are one constant per call, higher at every call: each chunk ties within itself
    and lies above every loss seen before."""
    calls = []

    def losses(idx, epoch):
        calls.append(1)
        return torch.full((len(idx),), float(len(calls)))

    return losses


def test_history_is_bounded_and_percentile_is_strict():
    n, b = 4000, 100
    kept = {h: sb(epochs=1, params={"warmup_epochs": 0, "history": h}, n=n, batch_size=b,
                  losses=rising()).epochs[0].samples for h in (b, 2 * b, 1024)}
    # history = one chunk: the percentile is the share strictly below among equal losses, 0: nothing kept
    assert kept[b] == 0
    # two chunks: the chunk's losses lie above exactly half the history: kept with 0.5 ** beta (beta 1 at drop .5)
    assert kept[2 * b] / (n - b) == pytest.approx(0.5, abs=0.05)
    # the reference's 1024: up to 924 older losses lie below, so nearly everything is kept
    assert kept[1024] / n > 0.8


def test_stale_losses_spare_the_selection_forward():
    rec = sb(epochs=3, params={"stale": 2}, n=2000)
    scored = [ep.counts.selection_forwards for ep in rec.epochs]
    assert scored[0] == 0  # warm-up: training losses are observed for every sample
    assert scored[1] == 0  # all losses are 1 epoch old: reused
    # kept samples were trained in epoch 1 (fresh); the rest are 2 epochs old: re-scored
    assert 0 < scored[2] < 2000 and scored[2] == 2000 - rec.epochs[1].samples
    assert sb(epochs=2, n=2000).epochs[1].counts.selection_forwards == 2000  # stale 0: always scored
