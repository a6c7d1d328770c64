"""c-SGD (Active Bias, sampled by threshold closeness / prediction variance): prefers p near 0.5."""
import pytest
import torch

from bench.errors import BenchError
from bench.registry import METHODS
from test_baseline_psgd import feed, inclusion, make


def test_csgd_prefers_samples_near_the_threshold():
    m = make("csgd", drop=0.7, n=900)
    p = torch.tensor([0.05, 0.5, 0.95]).repeat_interleave(300)
    feed(m, p)
    inc = inclusion(m)
    low, mid, high = (float(inc[i * 300:(i + 1) * 300].mean()) for i in range(3))
    assert mid > 1.5 * low and mid > 1.5 * high
    assert low == pytest.approx(high, abs=0.05)  # p(1 - p) is symmetric
    probs = m.probabilities()
    eps = 0.2 * float((p * (1 - p)).mean())
    assert float(probs[300] / probs[0]) == pytest.approx((0.25 + eps) / (0.0475 + eps), rel=1e-5)


def test_csgd_and_psgd_disagree_on_the_hardest_samples():
    p = torch.tensor([0.05, 0.5]).repeat_interleave(500)
    c, ps = make("csgd", drop=0.5), make("psgd", drop=0.5)
    feed(c, p)
    feed(ps, p)
    assert float(c.probabilities()[0]) < float(c.probabilities()[999])
    assert float(ps.probabilities()[0]) > float(ps.probabilities()[999])


def test_variance_variant_prefers_fluctuating_predictions():
    m = make("csgd", drop=0.5, uncertainty="variance")
    probs = m.probabilities()
    assert torch.allclose(probs, probs[0])  # no variance known yet: uniform
    steady = torch.full((1000,), 0.5)
    swing = torch.where(torch.arange(1000) < 500, torch.tensor(0.1), torch.tensor(0.5))
    feed(m, steady)
    feed(m, torch.where(torch.arange(1000) < 500, torch.tensor(0.9), torch.tensor(0.5)))
    feed(m, swing)
    inc = inclusion(m)
    assert float(inc[:500].mean()) > 2 * float(inc[500:].mean())


def test_unknown_uncertainty_is_refused():
    with pytest.raises(BenchError):
        METHODS.get("csgd").build(0.5, {"uncertainty": "entropy"})
