"""SwiftLearn: warm-up logits, MSE importance, subset size, re-evaluation and its counted cost."""
import pytest
import torch

from bench.errors import BenchError
from bench.method import num_batches
from fakes import drive, make, cell
from methods.swiftlearn import choose_subset, standardised_probs

N, C, B = 1000, 3, 100


def constructed(hot, seed=1):
    """Epoch-0/1 logits where samples in `hot` move a lot and the rest barely move."""
    g = torch.Generator().manual_seed(seed)
    e0 = torch.randn(N, C, generator=g)
    e1 = e0 + 0.01 * torch.randn(N, C, generator=g)
    e1[hot] += 3.0 * torch.randn(len(hot), C, generator=g)
    return e0, e1


def by_epoch(*tables):
    """Logits of a model that gives tables[e] in epoch e (the last one afterwards)."""
    return lambda idx, e: tables[min(e, len(tables) - 1)][idx]


def swift(epochs=4, drop=0.9, params=None, logits=None):
    return drive("swiftlearn", epochs=epochs, drop=drop, params=params, n=N, num_classes=C, batch_size=B, logits=logits)


def as_set(ep) -> list[int]:
    return sorted(ep.indices.tolist())


@pytest.mark.parametrize("selection", ["topk", "sample"])
def test_keeps_round_keep_n_and_prefers_high_mse(selection):
    hot = torch.arange(0, N, 10)  # 100 samples whose logits change between the warm-up epochs
    e0, e1 = constructed(hot)
    rec = swift(params={"selection": selection}, logits=by_epoch(e0, e1))
    for ep in rec.epochs[:2]:  # warm-up: every sample, reshuffled
        assert as_set(ep) == list(range(N)) and ep.planned == N
    k = round(0.1 * N)
    kept = rec.epochs[2]
    assert kept.samples == kept.planned == k and len(torch.unique(kept.indices)) == k
    assert len(kept.batches) == num_batches(k, B)
    share_hot = float(torch.isin(kept.indices, hot).float().mean())
    if selection == "topk":
        assert as_set(kept) == hot.tolist()
    else:  # sampled (softmax at temperature 1 gives ~47% here): far above the 10% of a uniform draw
        assert share_hot > 0.3
    later = rec.epochs[3]  # later epochs visit the kept subset only, reshuffled
    assert as_set(later) == as_set(kept) and not torch.equal(later.indices, kept.indices)
    assert rec.counts.selection_forwards == 0  # no scoring pass by default: the training logits suffice
    assert rec.counts.backwards == 2 * N + 2 * k


def test_importance_is_the_mean_squared_logit_change():
    # three groups moving by 0, 1 and 2 in every logit: top-k keeps the largest move, whatever the start
    e0 = torch.randn(N, C, generator=torch.Generator().manual_seed(2))
    move = torch.tensor([0.0, 1.0, 2.0]).repeat_interleave(torch.tensor([400, 500, 100]))
    rec = swift(epochs=3, params={"selection": "topk"}, logits=by_epoch(e0, e0 + move.unsqueeze(1)))
    assert as_set(rec.epochs[2]) == list(range(900, 1000))
    rec = swift(epochs=3, drop=0.5, params={"selection": "topk"}, logits=by_epoch(e0, e0 + move.unsqueeze(1)))
    assert set(range(900, 1000)) <= set(as_set(rec.epochs[2])) and not set(range(400)) & set(as_set(rec.epochs[2]))


def test_probabilities_are_a_scale_free_softmax():
    s = torch.tensor([1.0, 2.0, 3.0, 10.0])
    p = standardised_probs(s, 1.0)
    assert float(p.sum()) == pytest.approx(1.0) and (p.diff() > 0).all()
    assert torch.allclose(p, standardised_probs(1000 * s + 7, 1.0))  # standardised first
    assert standardised_probs(s, 0.1).max() > p.max()  # lower temperature: sharper
    assert torch.allclose(standardised_probs(torch.ones(5), 1.0), torch.full((5,), 0.2, dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    assert choose_subset(torch.rand(50), 50, 1.0, "sample", g).tolist() == list(range(50))
    idx = choose_subset(torch.arange(50.0), 10, 1.0, "topk", g)
    assert idx.tolist() == list(range(40, 50))
    drawn = choose_subset(torch.arange(50.0), 10, 1.0, "sample", g)
    assert len(torch.unique(drawn)) == 10 and drawn.tolist() == sorted(drawn.tolist())


def test_reevaluation_scores_all_data_and_lets_dropped_samples_return():
    e0, e1 = constructed(torch.arange(100))
    later = e1 + 0.5  # the kept samples' training logits after the warm-up
    fresh = later.clone()
    fresh[500:600] += 5.0  # samples that were dropped now change most
    rec = swift(epochs=6, params={"selection": "topk", "reevaluate_every": 2},
                logits=by_epoch(e0, e1, later, later, fresh))
    scored = [ep.counts.selection_forwards for ep in rec.epochs]
    assert scored == [0, 0, 0, 0, N, 0]  # one eval pass over all data at epoch warmup + 2
    assert [as_set(ep) for ep in rec.epochs[2:4]] == [list(range(100))] * 2
    assert [as_set(ep) for ep in rec.epochs[4:]] == [list(range(500, 600))] * 2
    # without re-evaluation the first subset stays
    rec = swift(epochs=6, params={"selection": "topk"}, logits=by_epoch(e0, e1, later, later, fresh))
    assert all(as_set(ep) == list(range(100)) for ep in rec.epochs[2:]) and rec.counts.selection_forwards == 0


def test_eval_scoring_compares_end_of_epoch_eval_logits_and_counts_them():
    hot = torch.arange(0, N, 10)
    e0, e1 = constructed(hot)
    noise = torch.randn(N, C, generator=torch.Generator().manual_seed(9))
    # epoch e's logits: training passes and the eval pass at its start (= the end of epoch e - 1) alike
    rec = swift(epochs=4, params={"selection": "topk", "scoring": "eval"}, logits=by_epoch(noise, e0, e1))
    assert [ep.counts.selection_forwards for ep in rec.epochs] == [0, N, N, 0]  # after each warm-up epoch
    assert as_set(rec.epochs[2]) == hot.tolist() and rec.epochs[2].samples == 100
    # the training passes would have compared noise with e0: not the hot samples
    train = swift(epochs=3, params={"selection": "topk"}, logits=by_epoch(noise, e0, e1))
    assert as_set(train.epochs[2]) != hot.tolist()


def test_a_cell_that_is_only_warm_up_is_refused():
    m = make("swiftlearn", 0.9)
    assert m.refuse(cell(2)) == ("swiftlearn needs epochs > warmup_epochs (2); this cell has 2: "
                           "raise epochs or lower warmup_epochs")
    assert m.refuse(cell(3)) is None
    assert make("swiftlearn", 0.0).refuse(cell(5)) is not None  # drop 0: keeps everything
    with pytest.raises(BenchError, match="warmup_epochs"):
        make("swiftlearn", 0.5, warmup_epochs=1)


def test_cell_counts():
    n, keep = 256, round(0.1 * 256)
    c = drive("swiftlearn", epochs=3, drop=0.9, n=n, batch_size=64).counts
    assert c.backwards == c.forwards == 2 * n + keep
    assert c.steps == 2 * num_batches(n, 64) + num_batches(keep, 64) and c.selection_forwards == 0
    c = drive("swiftlearn", epochs=4, drop=0.9, params={"reevaluate_every": 1}, n=n, batch_size=64).counts
    assert c.backwards == 2 * n + 2 * keep
    assert c.selection_forwards == n  # one re-evaluation pass (epoch 3), counted
