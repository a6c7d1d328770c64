"""p-SGD (Active Bias, sampled by difficulty): draws low-p samples more, keep * N per epoch."""
import math

import pytest
import torch

from bench.registry import METHODS
from fakes import drive, make, cell


def logits_for(p: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Logits whose softmax gives probability p to the label (rest spread evenly)."""
    p = p.double()
    rest = (1 - p) / (num_classes - 1)
    z = torch.log(rest).unsqueeze(1).repeat(1, num_classes)
    z[torch.arange(len(p)), labels] = torch.log(p)
    return z.float()


def labels_of(n=1000, num_classes=2):
    return torch.randint(0, num_classes, (n,), generator=torch.Generator().manual_seed(1))


def run(name="psgd", p=None, epochs=2, drop=0.5, n=1000, num_classes=2, batch_size=50, params=None, seed=0):
    """Drive the method with training logits giving p(label) = p (a tensor of N, or a function of the epoch)."""
    labels = labels_of(n, num_classes)
    logits = None
    if callable(p):
        tables = {}

        def logits(idx, e):
            if e not in tables:
                tables[e] = logits_for(p(e), labels, num_classes)
            return tables[e][idx]
    elif p is not None:
        logits = logits_for(p, labels, num_classes)
    return drive(name, epochs=epochs, drop=drop, params=params, n=n, num_classes=num_classes, batch_size=batch_size,
                 labels=labels, logits=logits, seed=seed)


def draws(rec, first: int, n=1000) -> torch.Tensor:
    """How often each sample was drawn in epochs first.. (the sampled epochs)."""
    return torch.bincount(torch.cat([ep.indices for ep in rec.epochs[first:]]), minlength=n).double()


def two_groups(a: float, b: float, n=1000) -> torch.Tensor:
    return torch.where(torch.arange(n) < n // 2, torch.tensor(a), torch.tensor(b))


def test_score_uses_the_mean_p_over_every_training_visit():
    # the first half's p goes 0.1, 0.9, 0.2 in three full epochs (mean 0.4), the second half's stays 0.4
    seq = [two_groups(0.1, 0.4), two_groups(0.9, 0.4), two_groups(0.2, 0.4)]
    rec = run(p=lambda e: seq[e] if e < 3 else torch.full((1000,), 0.4), epochs=13, params={"warmup_epochs": 3})
    c = draws(rec, 3)
    share = float(c[:500].sum() / c.sum())  # equal means: equal chances (the last p alone would give 0.56)
    assert c.sum() == 10 * 500 and share == pytest.approx(0.5, abs=0.03)


def test_warmup_epochs_are_uniform_and_full():
    rec = run(epochs=3, params={"warmup_epochs": 2})
    for e in (0, 1):
        ep = rec.epochs[e]
        assert sorted(ep.indices.tolist()) == list(range(1000)) and ep.planned == 1000
    assert rec.epochs[2].planned == rec.epochs[2].samples == 500
    assert all(b.weights is None for ep in rec.epochs for b in ep.batches)
    assert rec.counts.selection_forwards == 0  # the history comes from the training forwards


def test_draws_keep_n_samples_with_replacement_by_default():
    rec = run(p=torch.rand(1000, generator=torch.Generator().manual_seed(3)), drop=0.7)
    ep = rec.epochs[1]
    assert ep.samples == ep.planned == round(0.3 * 1000) and all(b.weights is None for b in ep.batches)
    assert len(torch.unique(ep.indices)) < ep.samples  # 300 draws of 1000 by weight: repeats
    assert ep.sizes == [50] * math.ceil(300 / 50)


def test_without_replacement_draws_distinct_samples():
    rec = run(p=torch.rand(1000, generator=torch.Generator().manual_seed(3)), drop=0.7, params={"replacement": False})
    ep = rec.epochs[1]
    assert ep.samples == 300 and len(torch.unique(ep.indices)) == 300


@pytest.mark.parametrize("name", ["psgd", "csgd"])
def test_drop_zero_reweights_the_epoch_instead_of_a_permutation(name):
    assert make(name, 0.0).refuse(cell(3)) is None
    rec = run(name, p=two_groups(0.1, 0.5), drop=0.0)
    ep = rec.epochs[1]
    assert ep.samples == ep.planned == 1000 and len(torch.unique(ep.indices)) < 900  # not a permutation of all N
    hard = float((ep.indices < 500).float().mean())
    assert hard > 0.55 if name == "psgd" else hard < 0.45  # psgd: 1 - p; csgd: p(1 - p) peaks at .5
    assert make(name, 0.0, replacement=False).refuse(cell(3)) is not None


@pytest.mark.parametrize("name", ["psgd", "csgd"])
def test_a_cell_without_a_sampled_epoch_is_refused(name):
    m = make(name, 0.5, warmup_epochs=2)
    assert "epochs > warmup_epochs (2)" in m.refuse(cell(2))
    assert m.refuse(cell(3)) is None


def test_psgd_says_its_score_is_our_reading():
    cls = METHODS.get("psgd")
    assert cls.faithful is False and "garbled" in cls.caveat


def test_psgd_prefers_low_p_samples_in_proportion():
    rec = run(p=two_groups(0.1, 0.9), drop=0.7, epochs=41)
    c = draws(rec, 1)
    # with replacement, draws are proportional to (1 - p) + eps * mean: .9 + .1 vs .1 + .1 -> 5x
    assert float(c[:500].sum() / c[500:].sum()) == pytest.approx(5.0, rel=0.06)


def test_epsilon_zero_follows_the_score_alone():
    rec = run(p=two_groups(0.2, 0.6), drop=0.5, epochs=41, params={"epsilon": 0.0})
    c = draws(rec, 1)
    assert float(c[:500].sum() / c[500:].sum()) == pytest.approx(0.8 / 0.4, rel=0.05)
    eps = draws(run(p=two_groups(0.2, 0.6), drop=0.5, epochs=41), 1)  # default: (.8 + .12) / (.4 + .12)
    assert float(eps[:500].sum() / eps[500:].sum()) == pytest.approx(0.92 / 0.52, rel=0.05)


def test_unseen_samples_count_as_chance_level_predictions():
    # no warm-up: epoch 0 draws from the chance prior p = 1 / C alone (uniform, with replacement)
    rec = run(epochs=2, num_classes=10, params={"warmup_epochs": 0})  # training logits 0: p = 1 / C as well
    first = rec.epochs[0].indices
    assert rec.epochs[0].planned == rec.epochs[0].samples == 500 and len(torch.unique(first)) < 500
    seen = torch.zeros(1000, dtype=torch.bool)
    seen[first] = True
    unseen_share = float((~seen[rec.epochs[1].indices]).float().mean())
    assert unseen_share == pytest.approx(float((~seen).float().mean()), abs=0.06)  # same score: uniform again
    # seen samples predicted well (p = 0.9) give way to the unseen ones (prior 0.1)
    rec = run(p=torch.full((1000,), 0.9), epochs=2, num_classes=10, params={"warmup_epochs": 0})
    seen = torch.zeros(1000, dtype=torch.bool)
    seen[rec.epochs[0].indices] = True
    assert float((~seen[rec.epochs[1].indices]).float().mean()) > 0.8 > float((~seen).float().mean())


def test_same_seed_same_draws():
    a, b = (run(p=two_groups(0.2, 0.6), seed=5) for _ in range(2))
    assert all(torch.equal(x.indices, y.indices) for x, y in zip(a.epochs, b.epochs))
