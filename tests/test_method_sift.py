"""SIFT: top-k by early-exit loss once the exit ranks like the full model, counted partial passes."""
import math

import pytest
import torch
import torch.nn.functional as F

from bench.errors import BenchError
from bench.hooks import MethodError
from bench.method import static_k
from fakes import drive, make, cell
from methods.sift import spearman

N, C, B = 1050, 10, 100  # the last batch of an epoch has 50 samples
LABELS = torch.arange(N) % C


def noisy_features(sigma: torch.Tensor, dim: int = 16, seed: int = 0) -> torch.Tensor:
    """Early-exit features: the one-hot label plus noise of norm sigma. Any head fitted on them errs
    more, the larger the noise: the exit loss ranks like sigma."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(len(sigma), dim, generator=g)
    base = torch.zeros(len(sigma), dim)
    base[:, :C] = F.one_hot(LABELS[: len(sigma)], C).float()
    return base + sigma.unsqueeze(1) * z / z.norm(dim=1, keepdim=True)


def sigma_of(seed=1):
    return torch.rand(N, generator=torch.Generator().manual_seed(seed))


def sift(epochs=3, drop=0.5, params=None, **ctx_kw):
    kw = dict(n=N, num_classes=C, batch_size=B, labels=LABELS)
    return drive("sift", epochs=epochs, drop=drop, params=params, **{**kw, **ctx_kw})


def kept_sizes(drop):
    return [static_k(1 - drop, B)] * (N // B) + [static_k(1 - drop, N % B)]


@pytest.mark.parametrize("drop", [0.5, 0.3])
def test_selects_after_the_first_epoch_when_the_exit_predicts_the_loss(drop):
    sigma = sigma_of()
    rec = sift(drop=drop, features=noisy_features(sigma), losses=sigma)  # full loss = the exit's noise
    m = rec.metrics
    assert m["selection_start_epoch"] == 1.0 and m["active_share"] == pytest.approx(2 / 3)
    assert rec.epochs[0].sizes == [B] * (N // B) + [N % B]  # epoch 0 trains in full while the head fits
    for ep in rec.epochs[1:]:
        assert ep.sizes == kept_sizes(drop)  # ceil(keep * size) of every drawn batch, the last one too
        assert len(torch.unique(ep.indices)) == ep.samples and all(b.weights is None for b in ep.batches)
        # the kept samples are those of high exit loss: nearly all above the drop quantile of the losses
        above = float((sigma[ep.indices] > sigma.quantile(drop)).float().mean())
        assert above > 0.8
    assert m["exit_rank_corr_at_start"] > 0.8 and m["exit_rank_corr"] > 0.8 and m["exit_head_acc"] > 0.9


def test_never_selects_when_the_exit_is_uninformative():
    g = torch.Generator().manual_seed(2)
    rec = sift(epochs=4, features=torch.randn(N, 16, generator=g), losses=torch.rand(N, generator=g))
    m = rec.metrics
    assert all(ep.sizes == [B] * (N // B) + [N % B] for ep in rec.epochs)
    assert rec.counts.backwards == 4 * N
    assert m["active_share"] == 0.0 and math.isnan(m["selection_start_epoch"])
    assert math.isnan(m["exit_rank_corr_at_start"]) and math.isnan(m["kept_class_max_share"])
    assert abs(m["exit_rank_corr"]) < 0.3 and m["exit_head_acc"] < 0.3


def test_selection_waits_for_the_correlation_to_reach_the_threshold():
    sigma, noise = sigma_of(), torch.rand(N, generator=torch.Generator().manual_seed(3))
    late = sift(epochs=5, features=noisy_features(sigma), losses=lambda idx, e: (noise if e < 2 else sigma)[idx])
    assert [ep.samples < N for ep in late.epochs] == [False, False, False, True, True]
    assert late.metrics["selection_start_epoch"] == 3.0 and late.metrics["active_share"] == pytest.approx(2 / 5)
    strict = sift(features=noisy_features(sigma), losses=sigma, params={"corr_threshold": 0.99})
    assert strict.metrics["active_share"] == 0.0 and strict.counts.backwards == 3 * N


def test_counts_and_the_logged_record():
    sigma = sigma_of()
    rec = sift(features=noisy_features(sigma), losses=sigma, params={"exit_layer": 2, "probe_size": 100})
    c, probe = rec.counts, 100
    assert c.partial_forwards == 3 * N + 3 * probe  # every drawn batch's exit, and the probe's each epoch end
    assert c.exits == {2: c.partial_forwards}  # at the exit depth asked for
    assert c.selection_forwards == 3 * probe  # the probe's full losses: the method's own work
    assert c.backwards == c.forwards == N + 2 * sum(kept_sizes(0.5)) and c.search_forwards == 0
    log = rec.ctx.artifacts["sift.json"]
    assert log["exit_layer"] == 2 and log["probe_size"] == probe and log["corr_threshold"] == 0.5
    per = log["per_epoch"]
    assert [e["epoch"] for e in per] == [0, 1, 2] and [e["selecting"] for e in per] == [False, True, True]
    m = rec.metrics
    assert m["exit_rank_corr_at_start"] == per[0]["exit_rank_corr"] and m["exit_rank_corr"] == per[-1]["exit_rank_corr"]
    assert m["exit_head_acc"] == per[-1]["exit_head_acc"] and per[0]["kept_class_share"] is None
    shares = [max(e["kept_class_share"]) for e in per[1:]]
    assert m["kept_class_max_share"] == max(shares)
    assert all(sum(e["kept_class_share"]) == pytest.approx(1) for e in per[1:])


def test_kept_class_share_shows_a_class_skewed_selection():
    sigma = sigma_of() * torch.where(LABELS == 0, 3.0, 1.0)  # class 0 has the hardest samples
    rec = sift(features=noisy_features(sigma), losses=sigma)
    assert rec.metrics["active_share"] > 0
    kept = torch.cat([ep.indices for ep in rec.epochs[1:]])
    share0 = float((LABELS[kept] == 0).float().mean())
    assert share0 > 0.14 and rec.metrics["kept_class_max_share"] == pytest.approx(share0, abs=0.02)


def test_the_head_never_touches_the_trunk():
    trunk = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh())
    x = torch.randn(N, 8, generator=torch.Generator().manual_seed(4))
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    rec = sift(features=lambda idx, k: trunk(x[idx]), losses=torch.rand(N, generator=torch.Generator().manual_seed(5)),
               model=trunk, params={"corr_threshold": -1.0})  # the exit's features carry the trunk's graph
    assert rec.metrics["active_share"] > 0
    assert all(p.grad is None for p in trunk.parameters())
    assert all(torch.equal(v, before[k]) for k, v in trunk.state_dict().items())


def own_head_cell(drop, variant, labels):
    sharp = torch.tensor([[9.0, 0, 0], [0, 9.0, 0]])
    flat = torch.tensor([[0.0, 0, 0], [0.1, 0, 0]])
    exit_logits = torch.cat([sharp, flat, sharp, flat])  # high entropy at 2, 3, 6, 7
    return drive("sift", epochs=2, drop=drop, params={"head": "own", "variant": variant, "corr_threshold": -1.0},
                 n=8, num_classes=3, batch_size=8, labels=labels, exit_logits=exit_logits)


def test_entropy_variant_uses_the_models_own_head_and_no_labels():
    for labels in (torch.zeros(8, dtype=torch.long), torch.tensor([2, 1, 0, 2, 1, 0, 2, 1])):
        rec = own_head_cell(0.5, "entropy", labels)
        assert rec.epochs[0].samples == 8 and sorted(rec.epochs[1].indices.tolist()) == [2, 3, 6, 7]
    # the loss variant on the same logits: the labels decide (label 0 everywhere: rows 1 and 5 are confidently wrong)
    rec = own_head_cell(0.75, "loss", torch.zeros(8, dtype=torch.long))
    assert sorted(rec.epochs[1].indices.tolist()) == [1, 5]


def test_own_head_keeps_exactly_the_top_exit_losses_of_the_batch():
    n = 200  # one batch per epoch: its kept part must be the top half of all samples by exit loss
    exit_logits = 2 * torch.randn(n, C, generator=torch.Generator().manual_seed(6))
    exit_loss = F.cross_entropy(exit_logits, LABELS[:n], reduction="none")
    rec = sift(params={"head": "own"}, n=n, batch_size=n, labels=LABELS[:n], exit_logits=exit_logits,
               losses=exit_loss + 0.01)  # the full loss agrees with the exit's
    assert rec.metrics["selection_start_epoch"] == 1.0 and rec.metrics["exit_rank_corr"] == pytest.approx(1.0)
    top = set(torch.topk(exit_loss, n // 2).indices.tolist())
    assert rec.epochs[0].samples == n
    for ep in rec.epochs[1:]:
        assert ep.sizes == [n // 2] and set(ep.indices.tolist()) == top


def test_own_head_needs_a_head_at_the_exit_and_the_exit_must_exist():
    with pytest.raises(MethodError, match="no head of its own"):
        sift(params={"head": "own"})
    deep = torch.nn.Linear(4, C)
    deep.num_exits = 2
    with pytest.raises(MethodError, match="deeper"):
        sift(params={"exit_layer": 3}, model=deep)


def test_no_op_cells_and_bad_parameters_are_refused():
    assert "drop 0" in make("sift", 0.0).refuse(cell(3))
    assert "at least 2 epochs" in make("sift", 0.5).refuse(cell(1))
    assert make("sift", 0.5).refuse(cell(2)) is None
    with pytest.raises(BenchError):
        make("sift", 0.5, variant="gradnorm")
    with pytest.raises(BenchError):
        make("sift", 0.5, head="adam")


def test_spearman():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert spearman(a, a * 10) == pytest.approx(1.0) and spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(a, torch.ones(4)) == 0.0  # constant: ties share one rank
    assert spearman(torch.tensor([1.0, 1.0, 2.0]), torch.tensor([0.0, 0.0, 5.0])) == pytest.approx(1.0)
