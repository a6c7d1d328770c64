"""Upper-bound importance sampling: p proportional to ||softmax - onehot||, unbiased 1/(B p) weights."""
import math

import pytest
import torch
import torch.nn.functional as F

from baselines.ub_importance import gradient_bound, variance_reduction
from fakes import drive

C, N, B = 5, 2000, 32


def table(kind="random", seed=0):
    """Labels, fixed logits and their losses: random logits, all-equal ones, or nearly all confident."""
    g = torch.Generator().manual_seed(seed + 1)
    labels = torch.randint(0, C, (N,), generator=g)
    if kind == "random":
        logits = 3 * torch.randn(N, C, generator=g)
    elif kind == "uniform":
        logits = torch.zeros(N, C)
    else:  # all nearly perfect, but 5% at chance
        logits = torch.full((N, C), -10.0)
        logits[torch.arange(N), labels] = 10.0
        logits[:100] = 0.0
    return labels, logits, F.cross_entropy(logits, labels, reduction="none")


def ub(epochs=1, drop=0.5, kind="random", params=None, seed=0):
    labels, logits, losses = table(kind)
    rec = drive("ub_importance", epochs=epochs, drop=drop, params=params, n=N, num_classes=C, batch_size=B,
                labels=labels, logits=logits, losses=losses, seed=seed)
    return rec, gradient_bound(logits, labels).double(), losses.double()


def test_bound_is_the_logit_gradient_norm():
    z = torch.randn(16, C, requires_grad=True, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, C, (16,), generator=torch.Generator().manual_seed(1))
    F.cross_entropy(z, y, reduction="sum").backward()
    assert torch.allclose(gradient_bound(z.detach(), y), z.grad.norm(dim=1), atol=1e-6)


def test_draws_are_proportional_to_the_bound_with_weights_one_over_B_p():
    rec, g, _ = ub(epochs=20, params={"tau_th": 0})
    batches = [b for ep in rec.epochs for b in ep.batches]
    assert all(b.weights is not None for b in batches)
    for b in batches:  # p_i = g_i / sum_presample g, w_i = 1 / (B' p_i): w_i g_i = the presample's mean g
        wg = b.weights.double() * g[b.indices]
        assert torch.allclose(wg, wg[0].expand_as(wg), rtol=1e-5)
        assert 0.2 < float(wg[0]) < 1.4  # a mean bound of 96 samples
    # over many steps a sample is drawn in proportion to its bound: compare deciles of the bound
    counts = torch.bincount(torch.cat([b.indices for b in batches]), minlength=N).double()
    decile = torch.bucketize(g, g.quantile(torch.linspace(0, 1, 11, dtype=torch.float64)[1:-1]))
    drawn = torch.zeros(10, dtype=torch.float64).index_add_(0, decile, counts)
    mass = torch.zeros(10, dtype=torch.float64).index_add_(0, decile, g)
    assert float((drawn / drawn.sum() - mass / mass.sum()).abs().sum()) < 0.05
    assert float(mass.max() / mass.min()) > 5  # the test is not trivially uniform


def test_weighted_mean_loss_is_unbiased_for_the_full_mean():
    rec, _, losses = ub(epochs=20, params={"tau_th": 0})
    full = float(losses.mean())
    batches = [b for ep in rec.epochs for b in ep.batches if len(b) == B]
    d = torch.tensor([float((b.weights.double() * losses[b.indices]).mean()) - full for b in batches])
    se = float(d.std()) / math.sqrt(len(d))
    assert abs(float(d.mean())) < 4 * se and se > 0  # what the engine's weighted step minimises
    plain = torch.tensor([float(losses[b.indices].mean()) - full for b in batches])
    assert float(plain.mean()) > 10 * se  # without the weights: clearly biased towards the large losses


def test_steps_batches_and_counted_scoring():
    rec, _, _ = ub(params={"tau_th": 0})
    ep = rec.epochs[0]
    assert ep.planned == 1000 and len(ep.batches) == math.ceil(1000 / B)
    assert ep.sizes == [B] * 31 + [1000 - 31 * B]
    assert rec.counts.selection_forwards == 3 * B * len(ep.batches)  # B' = 3b scored per step
    assert rec.counts.backwards == 1000 and rec.metrics["active_share"] == 1.0


def test_uniform_until_the_variance_reduction_passes_tau():
    rec, _, _ = ub(epochs=2, kind="uniform")  # equal bounds: variance reduction 1 < tau_th = (3b + 3b) / 3b = 2
    for ep in rec.epochs:
        assert all(b.weights is None for b in ep.batches)
        assert ep.samples == 1000 and len(torch.unique(ep.indices)) == 1000  # the epoch's order, no repeats
    assert rec.counts.selection_forwards == 0 and rec.metrics["active_share"] == 0.0
    # a very skewed bound switches importance sampling on after a few uniform steps
    skew, _, _ = ub(kind="skewed")
    kinds = [b.weights is not None for b in skew.epochs[0].batches]
    assert not kinds[0] and kinds[-1]
    share = skew.metrics["active_share"]
    assert 0 < share < 1 and share == pytest.approx(sum(kinds) / len(kinds))
    assert skew.counts.selection_forwards == 3 * B * sum(kinds)  # only importance steps score a presample


def test_variance_reduction_formula():
    assert float(variance_reduction(torch.ones(10))) == pytest.approx(1.0)
    g = torch.zeros(10)
    g[0] = 1
    assert float(variance_reduction(g)) == pytest.approx(math.sqrt(10))


def test_active_share_is_zero_when_the_switch_never_turns_on():
    rec, _, _ = ub(kind="skewed", params={"tau_th": 1e9})
    assert rec.metrics["active_share"] == 0.0 and rec.counts.selection_forwards == 0
    assert all(b.weights is None for b in rec.epochs[0].batches)
    on, _, _ = ub(kind="uniform", params={"tau_th": 0})
    assert on.metrics["active_share"] == 1.0
