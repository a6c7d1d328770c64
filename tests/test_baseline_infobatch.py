"""InfoBatch: prunes only below-mean samples, rescales to keep the expected loss, anneals."""
import math

import pytest
import torch

from bench.method import Method
from bench.registry import METHODS


class FakeCtx:
    def __init__(self, n=1000, epochs=16, batch_size=50, drop=0.5, seed=0):
        self.n_train, self.num_classes, self.epochs, self.batch_size, self.drop = n, 10, epochs, batch_size, drop
        self.labels = torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(1))
        self.generator = torch.Generator().manual_seed(seed)
        self.device = torch.device("cpu")


def make(drop=0.5, n=1000, epochs=16, **params) -> Method:
    m = METHODS.get("infobatch").build(drop, params)
    m.setup(FakeCtx(n=n, epochs=epochs, drop=drop))
    return m


def skewed_losses(n, seed=2):
    """Exponential losses: right-skewed like real per-sample losses."""
    return -torch.log(torch.rand(n, generator=torch.Generator().manual_seed(seed)))


def test_registered_with_reference_defaults():
    cls = METHODS.get("infobatch")
    assert cls.param_defaults() == {"prune_ratio": None, "anneal": 0.125, "plan_below_mean": 0.7}
    assert make(0.3).prune_ratio == 0.3 and make(0.3, prune_ratio=0.6).prune_ratio == 0.6


def test_first_epoch_is_full_since_all_scores_start_equal():
    m = make()
    b = m.epoch_indices(0)
    assert sorted(b.indices.tolist()) == list(range(1000)) and b.weights is None


def test_never_prunes_an_above_mean_sample_and_keeps_floor_keep_of_the_rest():
    m = make(drop=0.3)
    losses = skewed_losses(1000)
    m.scores = losses.clone()
    well = losses < losses.mean()
    n_well = int(well.sum())
    for _ in range(20):
        b = m.epoch_indices(3)
        assert len(set(b.indices.tolist())) == len(b)  # no repeats
        visited = torch.zeros(1000, dtype=torch.bool)
        visited[b.indices] = True
        assert visited[~well].all()  # every sample at or above the mean is visited
        assert int(visited[well].sum()) == math.floor(0.7 * n_well)
        w = b.weights
        assert torch.allclose(w[~well[b.indices]], torch.tensor(1.0))
        assert torch.allclose(w[well[b.indices]], torch.tensor(1 / 0.7))
        assert len(b) == m.last_size


def test_rescaled_loss_keeps_the_expected_loss_sum():
    m = make(drop=0.5)
    g = torch.Generator().manual_seed(3)
    # 600 low losses, 400 high: the mean splits them and keep * 600 is an integer (floor adds no bias)
    losses = torch.cat([0.5 * torch.rand(600, generator=g), 2 + torch.rand(400, generator=g)])
    losses = losses[torch.randperm(1000, generator=g)]
    m.scores = losses.clone()
    assert int((losses < losses.mean()).sum()) == 600
    full = float(losses.sum())
    sums = []
    for _ in range(3000):
        b = m.epoch_indices(2)
        sums.append(float((b.weights * losses[b.indices]).sum()))
    sums = torch.tensor(sums, dtype=torch.float64)
    se = float(sums.std()) / math.sqrt(len(sums))
    assert abs(float(sums.mean()) - full) < 4 * se + 1e-6
    assert sums.std() > 0  # the draw is really random
    # without the rescaling the sum would be clearly too small
    b = m.epoch_indices(2)
    assert float(losses[b.indices].sum()) < full - 20 * se


def test_last_eighth_of_epochs_uses_all_data_with_weight_one():
    m = make(drop=0.5, epochs=16)
    m.scores = skewed_losses(1000)
    for e in range(16):
        b = m.epoch_indices(e)
        if e >= 14:  # the last 12.5% of 16 epochs
            assert len(b) == 1000 and b.weights is None
        else:
            assert len(b) < 1000 and b.weights is not None
    m2 = make(drop=0.5, epochs=2)  # two epochs: only epoch 0 may prune
    assert [m2.prunes(e) for e in range(2)] == [True, False]


def test_scores_come_from_training_losses():
    m = make()
    idx = torch.tensor([5, 7, 9])
    from bench.method import Batch

    m.observe(Batch(idx), torch.zeros(3, 10), torch.tensor([0.1, 0.2, 0.3]))
    assert torch.allclose(m.scores[idx], torch.tensor([0.1, 0.2, 0.3]))
    assert float(m.scores[0]) == 3.0


def test_plan_is_a_pure_function_of_the_epoch():
    m = make(drop=0.5, epochs=8)
    plan = [m.epoch_size(e) for e in range(8)]
    n_well = round(0.7 * 1000)
    assert plan == [1000] + [1000 - n_well + n_well // 2] * 6 + [1000]
    m.scores = skewed_losses(1000)
    m.epoch_indices(3)
    assert [m.epoch_size(e) for e in range(8)] == plan
    assert make(drop=0.0).epoch_size(3) == 1000


def test_bad_parameters_are_refused():
    from bench.errors import BenchError

    with pytest.raises(BenchError):
        METHODS.get("infobatch").build(0.5, {"prune_ratio": 1.0})
    with pytest.raises(BenchError):
        METHODS.get("infobatch").build(0.5, {"anneal": 2})


def test_cells_where_it_cannot_prune_are_refused():
    assert make(0.0).refuse(10) is not None  # prune ratio 0: nothing pruned
    assert "epochs >= 3" in make(0.5).refuse(2)  # epoch 0 has no losses, epoch 1 anneals
    assert make(0.5).refuse(3) is None


def test_active_share_counts_the_epochs_that_pruned():
    m = make(0.5, epochs=4)  # prunes in epochs 1 and 2 (e + 1 <= 3.5); epoch 0 and 3 are full
    for e in range(4):
        b = m.epoch_indices(e)
        m.observe(b, torch.zeros(len(b), 10), skewed_losses(len(b), seed=e))
    assert m.active_share() == pytest.approx(0.5)
    flat = make(0.5, epochs=4)
    for e in range(4):
        b = flat.epoch_indices(e)
        flat.observe(b, torch.zeros(len(b), 10), torch.ones(len(b)))  # all equal: nothing below the mean
    assert flat.active_share() == 0.0
