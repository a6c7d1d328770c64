"""SwiftLearn: warm-up logits, MSE importance, subset size, re-evaluation and its counted cost."""
import pytest
import torch

from bench.cell import run_cell
from bench.method import Batch, Context, Scores, num_batches
from conftest import tiny_cell
from methods.swiftlearn import SwiftLearn, choose_subset, standardised_probs


class FakeCtx(Context):
    """Just enough Context: counts ctx.score calls; its logits come from `next_scores`."""

    def __init__(self, n=1000, classes=3, epochs=5, batch_size=100):
        self.n_train, self.num_classes, self.epochs, self.batch_size = n, classes, epochs, batch_size
        self.generator = torch.Generator().manual_seed(0)
        self.device = torch.device("cpu")
        self.labels = torch.zeros(n, dtype=torch.long)
        self.scored = 0
        self.next_scores = None

    def score(self, indices):
        self.scored += len(indices)
        logits = self.next_scores[indices]
        return Scores(logits, torch.zeros(len(indices)))


def warm_up(m: SwiftLearn, ctx: FakeCtx, logits_by_epoch):
    """Run the warm-up epochs through the hooks, feeding constructed training logits."""
    for epoch, logits in enumerate(logits_by_epoch):
        m.start_epoch(epoch)
        assert m.epoch_size(epoch) == ctx.n_train
        order = m.epoch_indices(epoch)
        assert sorted(order.indices.tolist()) == list(range(ctx.n_train))
        for s in range(0, ctx.n_train, ctx.batch_size):
            b = order.take(torch.arange(s, min(ctx.n_train, s + ctx.batch_size)))
            m.observe(b, logits[b.indices], torch.zeros(len(b)))


def begin(m: SwiftLearn, epoch: int):
    """What the engine does at an epoch's start: start_epoch, then the epoch's order (where the subset is chosen)."""
    m.start_epoch(epoch)
    return m.epoch_indices(epoch)


def constructed(ctx, hot):
    """Epoch-0/1 logits where samples in `hot` move a lot and the rest barely move."""
    g = torch.Generator().manual_seed(1)
    e0 = torch.randn(ctx.n_train, ctx.num_classes, generator=g)
    e1 = e0 + 0.01 * torch.randn(ctx.n_train, ctx.num_classes, generator=g)
    e1[hot] += 3.0 * torch.randn(len(hot), ctx.num_classes, generator=g)
    return e0, e1


@pytest.mark.parametrize("selection", ["topk", "sample"])
def test_keeps_round_keep_n_and_prefers_high_mse(selection):
    ctx = FakeCtx()
    hot = torch.arange(0, 1000, 10)  # 100 samples whose logits change between the warm-up epochs
    m = SwiftLearn(drop=0.9, selection=selection)
    m.setup(ctx)
    e0, e1 = constructed(ctx, hot)
    warm_up(m, ctx, [e0, e1])
    assert torch.allclose(m.importance, ((e1 - e0) ** 2).mean(1))
    begin(m, 2)
    k = round(0.1 * 1000)
    assert len(m.subset) == k == m.epoch_size(2) and len(set(m.subset.tolist())) == k
    assert m.steps_in_epoch(2) == num_batches(k, ctx.batch_size)
    share_hot = torch.isin(m.subset, hot).float().mean().item()
    if selection == "topk":
        assert share_hot == 1.0
    else:  # sampled (softmax at temperature 1 gives ~47% here): far above the 10% of a uniform draw
        assert share_hot > 0.3
    for epoch in (2, 3):  # later epochs visit the kept subset only, reshuffled
        order = m.epoch_indices(epoch).indices
        assert sorted(order.tolist()) == m.subset.tolist()
    assert ctx.scored == 0  # no re-evaluation by default


def test_probabilities_are_a_scale_free_softmax():
    s = torch.tensor([1.0, 2.0, 3.0, 10.0])
    p = standardised_probs(s, 1.0)
    assert p.sum().item() == pytest.approx(1.0) and (p.diff() > 0).all()
    assert torch.allclose(p, standardised_probs(1000 * s + 7, 1.0))  # standardised first
    assert standardised_probs(s, 0.1).max() > p.max()  # lower temperature: sharper
    g = torch.Generator().manual_seed(0)
    assert len(choose_subset(torch.rand(50), 50, 1.0, "sample", g)) == 50


def test_reevaluation_scores_all_data_and_lets_dropped_samples_return():
    ctx = FakeCtx(epochs=6)
    m = SwiftLearn(drop=0.9, selection="topk", reevaluate_every=2)
    m.setup(ctx)
    e0, e1 = constructed(ctx, torch.arange(100))
    warm_up(m, ctx, [e0, e1])
    begin(m, 2)
    assert m.subset.tolist() == list(range(100)) and ctx.scored == 0
    for b in range(0, 100, 50):  # training forwards of kept samples update their last logits
        batch = Batch(m.subset[b : b + 50])
        m.observe(batch, e1[batch.indices] + 0.5, torch.zeros(50))
    assert torch.allclose(m.last_logits[:100], e1[:100] + 0.5)
    begin(m, 3)
    assert ctx.scored == 0  # not a re-evaluation epoch
    fresh = m.last_logits.clone()
    fresh[500:600] += 5.0  # samples that were dropped now change most
    ctx.next_scores = fresh
    begin(m, 4)
    assert ctx.scored == ctx.n_train and m.reevaluations == 1
    assert m.subset.tolist() == list(range(500, 600))
    assert torch.equal(m.last_logits, fresh)


def test_a_cell_that_is_only_warm_up_is_refused():
    m = SwiftLearn(drop=0.9)
    assert m.refuse(2) == "swiftlearn needs epochs > warmup_epochs (2); this cell has 2: raise epochs or lower warmup_epochs"
    assert m.refuse(3) is None
    assert SwiftLearn(drop=0.0).refuse(5) is not None  # drop 0: keeps everything
    with pytest.raises(ValueError):
        SwiftLearn(drop=0.5, warmup_epochs=1)


def test_eval_scoring_compares_end_of_epoch_eval_logits_and_counts_them():
    ctx = FakeCtx()
    hot = torch.arange(0, 1000, 10)
    m = SwiftLearn(drop=0.9, selection="topk", scoring="eval")
    m.setup(ctx)
    e0, e1 = constructed(ctx, hot)
    noise = torch.randn(1000, 3, generator=torch.Generator().manual_seed(9))  # training-pass logits: ignored
    for epoch, after in enumerate([e0, e1]):
        order = begin(m, epoch)
        m.observe(order, noise[order.indices] * (epoch + 1), torch.zeros(len(order)))
        ctx.next_scores = after  # the model's eval logits once this epoch is over
    order = begin(m, 2)
    assert ctx.scored == 2 * 1000  # one counted eval pass after each of the two warm-up epochs
    assert torch.allclose(m.importance, ((e1 - e0) ** 2).mean(1))
    assert sorted(m.subset.tolist()) == hot.tolist() and len(order) == 100
    m.epoch_indices(2)  # a second draw of the same epoch does not score or choose again
    assert ctx.scored == 2 * 1000


def test_real_cell_counts(store):
    n, keep = 256, round(0.1 * 256)
    res = run_cell(tiny_cell(method="swiftlearn", drop=0.9, epochs=3), log=lambda *_: None)
    m = res.metrics
    assert m["total_backwards"] == m["total_forwards"] == 2 * n + 1 * keep
    assert m["total_steps"] == 2 * num_batches(n, 64) + num_batches(keep, 64)
    assert m["total_selection_forwards"] == 0
    res = run_cell(tiny_cell(method="swiftlearn", drop=0.9, epochs=4, params={"reevaluate_every": 1}),
                   log=lambda *_: None)
    m = res.metrics
    assert m["total_backwards"] == 2 * n + 2 * keep
    assert m["total_selection_forwards"] == n  # one re-evaluation pass (epoch 3), counted
