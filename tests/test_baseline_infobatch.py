"""InfoBatch: prunes only below-mean samples, rescales to keep the expected loss, anneals."""
import math

import pytest
import torch

from bench.errors import BenchError
from bench.hooks import param_defaults
from bench.registry import METHODS
from fakes import drive, make, cell


def skewed_losses(n, seed=2):
    """Exponential losses: right-skewed like real per-sample losses."""
    return -torch.log(torch.rand(n, generator=torch.Generator().manual_seed(seed)))


def visited(ep, n=1000) -> torch.Tensor:
    v = torch.zeros(n, dtype=torch.bool)
    v[ep.indices] = True
    return v


def weights_of(ep) -> torch.Tensor | None:
    if all(b.weights is None for b in ep.batches):
        return None
    return torch.cat([b.weights for b in ep.batches])


def test_registered_with_reference_defaults():
    assert param_defaults(METHODS.get("infobatch")) == {"prune_ratio": None, "anneal": 0.125, "plan_below_mean": 0.7}
    # the prune ratio defaults to the drop ratio; an explicit one overrides it
    losses = skewed_losses(1000)
    n_well = int((losses < losses.mean()).sum())
    for drop, params, keep in [(0.3, {}, 0.7), (0.3, {"prune_ratio": 0.6}, 0.4), (0.5, {"prune_ratio": 0.95}, 0.1)]:
        ep = drive("infobatch", epochs=8, drop=drop, params=params, losses=losses).epochs[1]
        assert ep.samples == 1000 - n_well + math.floor(keep * n_well)  # keep clipped to [0.1, 1]


def test_first_epoch_is_full_since_all_scores_start_equal():
    ep = drive("infobatch", epochs=8, drop=0.5, losses=skewed_losses(1000)).epochs[0]
    assert sorted(ep.indices.tolist()) == list(range(1000)) and weights_of(ep) is None


def test_never_prunes_an_above_mean_sample_and_keeps_floor_keep_of_the_rest():
    losses = skewed_losses(1000)
    well = losses < losses.mean()
    n_well = int(well.sum())
    rec = drive("infobatch", epochs=16, drop=0.3, losses=losses, batch_size=50)
    kept_sets = set()
    for ep in rec.epochs[1:14]:  # the pruning epochs
        idx, w = ep.indices, weights_of(ep)
        assert len(torch.unique(idx)) == len(idx)  # no repeats
        v = visited(ep)
        assert v[~well].all()  # every sample at or above the mean is visited
        assert int(v[well].sum()) == math.floor(0.7 * n_well)
        assert torch.allclose(w[~well[idx]], torch.tensor(1.0))
        assert torch.allclose(w[well[idx]], torch.tensor(1 / 0.7))
        assert ep.sizes == [50] * (ep.samples // 50) + ([ep.samples % 50] if ep.samples % 50 else [])
        kept_sets.add(tuple(sorted(idx[well[idx]].tolist())))
    assert len(kept_sets) == 13  # a fresh random draw of the well-learned samples each epoch


def test_rescaled_loss_keeps_the_expected_loss_sum():
    g = torch.Generator().manual_seed(3)
    # 120 low losses, 80 high: the mean splits them and keep * 120 is an integer (floor adds no bias)
    losses = torch.cat([0.5 * torch.rand(120, generator=g), 2 + torch.rand(80, generator=g)])
    losses = losses[torch.randperm(200, generator=g)]
    assert int((losses < losses.mean()).sum()) == 120
    rec = drive("infobatch", epochs=800, drop=0.5, losses=losses, n=200, batch_size=200)
    pruning = [ep for ep in rec.epochs[1:] if ep.samples < 200]
    assert len(pruning) == 699  # epochs 1 .. 699 (e + 1 <= 0.875 * 800)
    full = float(losses.sum())
    sums = torch.tensor([float((weights_of(ep) * losses[ep.indices]).sum()) for ep in pruning], dtype=torch.float64)
    se = float(sums.std()) / math.sqrt(len(sums))
    assert abs(float(sums.mean()) - full) < 4 * se and se > 0  # unbiased, and the draw is really random
    plain = torch.tensor([float(losses[ep.indices].sum()) for ep in pruning], dtype=torch.float64)
    assert float(plain.mean()) < full - 20 * se  # without the rescaling the sum would be clearly too small


def test_last_eighth_of_epochs_uses_all_data_with_weight_one():
    rec = drive("infobatch", epochs=16, drop=0.5, losses=skewed_losses(1000))
    for e, ep in enumerate(rec.epochs):
        if e == 0 or e >= 14:  # epoch 0 has no losses yet; the last 12.5% of 16 epochs anneal
            assert ep.samples == 1000 and weights_of(ep) is None
        else:
            assert ep.samples < 1000 and weights_of(ep) is not None


def test_scores_are_each_samples_last_training_loss():
    # epoch 0 trains everyone on losses `a`; epoch 1 trains the kept ones on losses `b`
    a, b = skewed_losses(1000, seed=2), skewed_losses(1000, seed=7)
    rec = drive("infobatch", epochs=8, drop=0.5, losses=lambda idx, e: (a if e == 0 else b)[idx])
    assert rec.counts.selection_forwards == 0  # no pass of its own
    seen1, well_a = visited(rec.epochs[1]), a < a.mean()
    assert seen1[~well_a].all() and int(seen1[well_a].sum()) == int(well_a.sum()) // 2  # by epoch 0's losses
    scores = torch.where(seen1, b, a)  # the last loss of each sample after epoch 1
    well = scores < scores.mean()
    v2 = visited(rec.epochs[2])
    assert v2[~well].all() and int(v2[well].sum()) == math.floor(0.5 * int(well.sum()))


def test_plan_is_a_pure_function_of_the_epoch():
    n_well = round(0.7 * 1000)
    plan = [1000] + [1000 - n_well + n_well // 2] * 6 + [1000]
    for losses in (skewed_losses(1000), torch.ones(1000), skewed_losses(1000, seed=9) * 5):
        rec = drive("infobatch", epochs=8, drop=0.5, losses=losses)
        assert [ep.planned for ep in rec.epochs] == plan
    assert [ep.planned for ep in drive("infobatch", epochs=8, drop=0.0).epochs] == [1000] * 8


def test_bad_parameters_are_refused():
    with pytest.raises(BenchError, match="prune_ratio"):
        make("infobatch", 0.5, prune_ratio=1.0)
    with pytest.raises(BenchError, match="anneal"):
        make("infobatch", 0.5, anneal=2)


def test_cells_where_it_cannot_prune_are_refused():
    assert make("infobatch", 0.0).refuse(cell(10)) is not None  # prune ratio 0: nothing pruned
    assert "epochs >= 3" in make("infobatch", 0.5).refuse(cell(2))  # epoch 0 has no losses, epoch 1 anneals
    assert make("infobatch", 0.5).refuse(cell(3)) is None


def test_active_share_counts_the_epochs_that_pruned():
    # 4 epochs prune in epochs 1 and 2 (e + 1 <= 3.5); epochs 0 and 3 are full
    rec = drive("infobatch", epochs=4, drop=0.5, losses=lambda idx, e: skewed_losses(1000, seed=e)[idx])
    assert [ep.samples < 1000 for ep in rec.epochs] == [False, True, True, False]
    assert rec.metrics["active_share"] == pytest.approx(0.5)
    flat = drive("infobatch", epochs=4, drop=0.5, losses=torch.ones(1000))  # all equal: nothing below the mean
    assert all(ep.samples == 1000 for ep in flat.epochs) and flat.metrics["active_share"] == 0.0
