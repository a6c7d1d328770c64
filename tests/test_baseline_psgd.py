"""p-SGD (Active Bias, sampled by difficulty): draws low-p samples more, keep * N per epoch."""
import math

import pytest
import torch

from bench.method import Batch
from bench.registry import METHODS


class FakeCtx:
    def __init__(self, n=1000, num_classes=2, batch_size=50, drop=0.5, seed=0):
        self.n_train, self.num_classes, self.epochs, self.batch_size, self.drop = n, num_classes, 4, batch_size, drop
        self.labels = torch.randint(0, num_classes, (n,), generator=torch.Generator().manual_seed(1))
        self.generator = torch.Generator().manual_seed(seed)
        self.device = torch.device("cpu")


def logits_for(p: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Logits whose softmax gives probability p to the label (rest spread evenly)."""
    rest = (1 - p) / (num_classes - 1)
    z = torch.log(rest).unsqueeze(1).repeat(1, num_classes)
    z[torch.arange(len(p)), labels] = torch.log(p)
    return z


def feed(m, p: torch.Tensor, idx=None):
    idx = torch.arange(len(p)) if idx is None else idx
    m.observe(Batch(idx), logits_for(p, m.ctx.labels[idx], m.ctx.num_classes), torch.zeros(len(idx)))


def make(name="psgd", drop=0.5, n=1000, num_classes=2, **params):
    m = METHODS.get(name).build(drop, params)
    m.setup(FakeCtx(n=n, num_classes=num_classes, drop=drop))
    return m


def inclusion(m, epoch=1, draws=200):
    hits = torch.zeros(m.ctx.n_train)
    for _ in range(draws):
        b = m.epoch_indices(epoch)
        hits[b.indices] += 1
    return hits / draws


def test_history_mean_and_variance_from_training_forwards():
    m = make(num_classes=3)
    feed(m, torch.full((1000,), 0.2))
    feed(m, torch.full((1000,), 0.6))
    feed(m, torch.full((1000,), 0.4))
    count, mean, var = m.history()
    assert torch.allclose(count, torch.tensor(3.0, dtype=torch.float64))
    assert torch.allclose(mean, torch.tensor(0.4, dtype=torch.float64))
    assert torch.allclose(var, torch.tensor(0.04, dtype=torch.float64))


def test_warmup_epoch_is_uniform_and_full():
    m = make(warmup_epochs=2)
    for e in (0, 1):
        b = m.epoch_indices(e)
        assert sorted(b.indices.tolist()) == list(range(1000)) and b.weights is None
    assert m.epoch_size(1) == 1000 and m.epoch_size(2) == 500


def test_draws_keep_n_samples_with_replacement_by_default():
    m = make(drop=0.7)
    feed(m, torch.rand(1000, generator=torch.Generator().manual_seed(3)))
    b = m.epoch_indices(1)
    assert len(b) == round(0.3 * 1000) == m.epoch_size(1) and b.weights is None
    assert len(set(b.indices.tolist())) < len(b)  # 300 draws of 1000 by weight: repeats
    assert m.steps_in_epoch(1) == math.ceil(300 / 50)


def test_without_replacement_draws_distinct_samples():
    m = make(drop=0.7, replacement=False)
    feed(m, torch.rand(1000, generator=torch.Generator().manual_seed(3)))
    b = m.epoch_indices(1)
    assert len(b) == 300 and len(set(b.indices.tolist())) == len(b)


@pytest.mark.parametrize("name", ["psgd", "csgd"])
def test_drop_zero_reweights_the_epoch_instead_of_a_permutation(name):
    m = make(name, drop=0.0)
    assert m.refuse(3) is None
    feed(m, torch.where(torch.arange(1000) < 500, torch.tensor(0.1), torch.tensor(0.5)))
    b = m.epoch_indices(1)
    assert len(b) == 1000 and len(set(b.indices.tolist())) < 900  # not a permutation of all N
    hard = float((b.indices < 500).float().mean())
    assert hard > 0.55 if name == "psgd" else hard < 0.45  # psgd: 1 - p; csgd: p(1 - p) peaks at .5
    assert make(name, drop=0.0, replacement=False).refuse(3) is not None


@pytest.mark.parametrize("name", ["psgd", "csgd"])
def test_a_cell_without_a_sampled_epoch_is_refused(name):
    m = make(name, drop=0.5, warmup_epochs=2)
    assert "epochs > warmup_epochs (2)" in m.refuse(2)
    assert m.refuse(3) is None


def test_psgd_says_its_score_is_our_reading():
    cls = METHODS.get("psgd")
    assert cls.faithful is False and "garbled" in cls.caveat


def test_psgd_prefers_low_p_samples():
    m = make(drop=0.7)
    p = torch.where(torch.arange(1000) < 500, torch.tensor(0.1), torch.tensor(0.9))
    feed(m, p)
    inc = inclusion(m)
    hard, easy = float(inc[:500].mean()), float(inc[500:].mean())
    assert hard > 2 * easy
    # proportional to (1 - p) + eps * mean: .9 + .1 vs .1 + .1 -> 5x the weight
    probs = m.probabilities()
    assert float(probs[0] / probs[999]) == pytest.approx(5.0, rel=1e-6)


def test_epsilon_zero_follows_the_score_alone():
    m = make(drop=0.5, epsilon=0.0)
    feed(m, torch.where(torch.arange(1000) < 500, torch.tensor(0.2), torch.tensor(0.6)))
    probs = m.probabilities()
    assert float(probs[0] / probs[999]) == pytest.approx(0.8 / 0.4, rel=1e-6)


def test_unseen_samples_get_the_chance_prior():
    m = make(num_classes=4, warmup_epochs=0)
    _, mean, var = m.history()
    assert torch.allclose(mean, torch.tensor(0.25, dtype=torch.float64)) and var.isnan().all()
    b = m.epoch_indices(0)
    assert len(b) == 500


def test_replacement_option():
    m = make(drop=0.0, replacement=True)
    feed(m, torch.rand(1000, generator=torch.Generator().manual_seed(4)))
    b = m.epoch_indices(1)
    assert len(b) == 1000 and len(set(b.indices.tolist())) < 1000
