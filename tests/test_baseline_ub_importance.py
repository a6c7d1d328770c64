"""Upper-bound importance sampling: p proportional to ||softmax - onehot||, unbiased 1/(B p) weights."""
import math

import pytest
import torch
import torch.nn.functional as F

from baselines.ub_importance import gradient_bound, variance_reduction
from bench.method import Scores
from bench.registry import METHODS

C = 5


class FakeCtx:
    """Fixed logits per sample (so fixed losses and bounds); score calls are recorded."""

    def __init__(self, n=2000, batch_size=32, drop=0.5, uniform=False, seed=0):
        self.n_train, self.num_classes, self.epochs, self.batch_size, self.drop = n, C, 3, batch_size, drop
        g = torch.Generator().manual_seed(seed + 1)
        self.labels = torch.randint(0, C, (n,), generator=g)
        self.logits = torch.zeros(n, C) if uniform else 3 * torch.randn(n, C, generator=g)
        self.losses = F.cross_entropy(self.logits, self.labels, reduction="none")
        self.generator = torch.Generator().manual_seed(seed)
        self.device = torch.device("cpu")
        self.calls = []

    def score(self, indices):
        self.calls.append(indices.clone())
        return Scores(self.logits[indices].clone(), self.losses[indices].clone())


def make(drop=0.5, ctx=None, **params):
    m = METHODS.get("ub_importance").build(drop, params)
    m.setup(ctx or FakeCtx(drop=drop))
    return m


def test_bound_is_the_logit_gradient_norm():
    z = torch.randn(16, C, requires_grad=True)
    y = torch.randint(0, C, (16,))
    F.cross_entropy(z, y, reduction="sum").backward()
    assert torch.allclose(gradient_bound(z.detach(), y), z.grad.norm(dim=1), atol=1e-6)


def test_probabilities_are_proportional_to_the_bound():
    m = make(tau_th=0)
    ctx = m.ctx
    b = m.sample(32)
    pre = ctx.calls[-1]
    assert len(pre) == 3 * 32 == m.big
    # one fixed presample of distinct samples: each draw's weight gives back its probability
    pre = torch.randperm(2000, generator=torch.Generator().manual_seed(9))[:96]
    g = gradient_bound(ctx.logits[pre], ctx.labels[pre]).double()
    target = g / g.sum()
    pos = {int(i): j for j, i in enumerate(pre)}
    counts = torch.zeros(96, dtype=torch.float64)
    for _ in range(250):
        b = m.draw(pre, 32)
        j = torch.tensor([pos[int(i)] for i in b.indices])
        assert torch.allclose(1.0 / (96 * b.weights.double()), target[j], rtol=1e-5)  # w = 1 / (B p)
        counts.index_add_(0, j, torch.ones(len(j), dtype=torch.float64))
    freq = counts / counts.sum()
    assert float((freq - target).abs().sum()) < 0.1  # total variation of 8,000 draws
    assert float(target.max() / target.min()) > 5  # the test is not trivially uniform


def test_weighted_mean_loss_is_unbiased_for_the_presample_mean():
    m = make(tau_th=0)
    ctx = m.ctx
    diffs, plain = [], []
    for _ in range(1000):
        b = m.sample(32)
        pre_mean = float(ctx.losses[ctx.calls[-1]].mean())
        l = ctx.losses[b.indices]
        diffs.append(float((b.weights * l).mean()) - pre_mean)  # what Trainer.step minimises
        plain.append(float(l.mean()) - pre_mean)
    d = torch.tensor(diffs, dtype=torch.float64)
    se = float(d.std()) / math.sqrt(len(d))
    assert abs(float(d.mean())) < 4 * se and se > 0
    # without the weights the estimate is clearly biased towards the large losses
    assert float(torch.tensor(plain).mean()) > 10 * se


def test_steps_batches_and_counted_scoring():
    m = make(drop=0.5, tau_th=0)
    batches = list(m.batches(0))
    assert len(batches) == math.ceil(1000 / 32) == m.steps_in_epoch(0)
    assert [len(b) for b in batches] == [32] * 31 + [1000 - 31 * 32]
    assert sum(len(c) for c in m.ctx.calls) == 96 * len(batches)  # B = 3b scored per step
    assert all(b.weights is not None for b in batches)


def test_uniform_until_the_variance_reduction_passes_tau():
    ctx = FakeCtx(uniform=True)  # equal bounds: variance reduction 1 < tau_th = 2
    m = make(drop=0.5, ctx=ctx)
    assert m.threshold == pytest.approx(2.0)
    for b in m.batches(0):
        assert b.weights is None
        m.observe(b, ctx.logits[b.indices], ctx.losses[b.indices])
    assert ctx.calls == [] and m.vr < m.threshold and 1 - 0.9**32 == pytest.approx(m.vr, abs=0.01)
    idx = torch.cat([b.indices for b in m.batches(1)])
    assert len(set(idx.tolist())) == len(idx) == 1000
    # a very skewed bound switches importance sampling on after a few steps
    skew = FakeCtx(seed=3)
    skew.logits = torch.full((2000, C), -10.0)
    skew.logits[torch.arange(2000), skew.labels] = 10.0  # all nearly perfect...
    skew.logits[:100, :] = 0.0  # ...but 5% at chance
    m2 = make(drop=0.5, ctx=skew)
    kinds = []
    for b in m2.batches(0):
        kinds.append(b.weights is not None)
        m2.observe(b, skew.logits[b.indices], torch.zeros(len(b)))
    assert not kinds[0] and kinds[-1]


def test_variance_reduction_formula():
    assert variance_reduction(torch.ones(10)) == pytest.approx(1.0)
    g = torch.zeros(10)
    g[0] = 1
    assert variance_reduction(g) == pytest.approx(math.sqrt(10))


def test_active_share_is_zero_when_the_switch_never_turns_on():
    m = make(0.5, ctx=FakeCtx(uniform=True), tau_th=1e9)
    for b in m.batches(0):
        m.observe(b, m.ctx.logits[b.indices], m.ctx.losses[b.indices])
    assert m.active_share() == 0.0 and m.uniform_steps > 0
    on = make(0.5, tau_th=0)
    list(on.batches(0))
    assert on.active_share() == 1.0
