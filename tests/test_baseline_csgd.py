"""c-SGD (Active Bias, sampled by threshold closeness / prediction variance): prefers p near 0.5."""
import pytest
import torch

from bench.errors import BenchError
from fakes import make
from test_baseline_psgd import draws, run, two_groups


def test_csgd_prefers_samples_near_the_threshold():
    p = torch.tensor([0.05, 0.5, 0.95]).repeat_interleave(300)
    rec = run("csgd", p=p, drop=0.7, n=900, epochs=41)
    c = draws(rec, 1, n=900)
    low, mid, high = (float(c[i * 300:(i + 1) * 300].sum()) for i in range(3))
    assert low == pytest.approx(high, rel=0.1)  # p(1 - p) is symmetric
    # with replacement, draws are proportional to p(1 - p) + eps * mean p(1 - p)
    eps = 0.2 * float((p * (1 - p)).mean())
    assert mid / low == pytest.approx((0.25 + eps) / (0.0475 + eps), rel=0.06)


def test_csgd_and_psgd_disagree_on_the_hardest_samples():
    p = two_groups(0.05, 0.5)
    c, ps = (draws(run(name, p=p, epochs=5), 1) for name in ("csgd", "psgd"))
    assert c[:500].sum() < 0.5 * c[500:].sum()
    assert ps[:500].sum() > 1.2 * ps[500:].sum()


def test_variance_variant_prefers_fluctuating_predictions():
    # after a single visit no sample has a variance yet: the draw is uniform although p differs
    rec = run("csgd", p=two_groups(0.1, 0.5), epochs=11, params={"uncertainty": "variance"})
    c = draws(rec, 1)
    assert float(c[:500].sum() / c.sum()) == pytest.approx(0.5, abs=0.03)
    # three full epochs: the first half swings 0.1, 0.9, 0.1, the second half stays at 0.5 (variance 0)
    seq = [two_groups(0.1, 0.5), two_groups(0.9, 0.5), two_groups(0.1, 0.5)]
    params = {"uncertainty": "variance", "warmup_epochs": 3}
    c = draws(run("csgd", p=lambda e: seq[min(e, 2)], epochs=5, params=params), 3)
    assert c[:500].sum() > 5 * c[500:].sum()
    c = draws(run("csgd", p=lambda e: seq[min(e, 2)], epochs=5, params={**params, "epsilon": 0.0}), 3)
    assert c[500:].sum() == 0 and c.sum() == 2 * 500  # epsilon 0: a steady prediction is never drawn


def test_unknown_uncertainty_is_refused():
    with pytest.raises(BenchError, match="uncertainty"):
        make("csgd", 0.5, uncertainty="entropy")
