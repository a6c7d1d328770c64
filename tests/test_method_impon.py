"""IMPON: the online linear loss model learns, is reset every epoch, and picks the b highest of each bank."""
import pytest
import torch

from bench.cell import prepare, run_cell
from bench.engine import HarnessContext, Trainer
from bench.method import num_batches
from bench.timing import StageTimer
from conftest import tiny_cell, tiny_text_cell
from methods.impon import IMPON, LinearLossModel, draw_bank


def harness_ctx(cfg):
    _, data, model = prepare(cfg)
    dev = torch.device("cpu")
    trainer = Trainer(cfg, data, model, dev, StageTimer(dev))
    return trainer, HarnessContext(trainer, cfg.drop, cfg.epochs, cfg.seed)


def test_linear_model_reduces_squared_error_on_a_stationary_stream():
    g = torch.Generator().manual_seed(0)
    w_true = torch.randn(9, generator=g)
    lin = LinearLossModel(9, lr=0.02, device="cpu")
    errs = []
    for _ in range(300):
        x = torch.randn(32, 9, generator=g)
        y = x @ w_true + 2.0 + 0.1 * torch.randn(32, generator=g)
        errs.append(lin.update(x, y))
    first, last = sum(errs[:10]) / 10, sum(errs[-10:]) / 10
    assert last < 0.05 * first and last < 0.1
    lin.reset()
    assert lin.w.abs().sum() == 0 and lin.b == 0 and lin.updates == 0


def test_draw_bank_is_distinct_and_covers_range():
    g = torch.Generator().manual_seed(0)
    for n, size in [(10, 10), (100, 30), (100000, 200)]:
        b = draw_bank(n, size, g)
        assert len(b) == size and len(set(b.tolist())) == size and 0 <= b.min() and b.max() < n


@pytest.mark.parametrize("variant", ["highest", "lowest"])
def test_batches_are_the_b_best_predicted_of_each_bank_and_model_resets(variant):
    cfg = tiny_cell(method="impon")
    trainer, ctx = harness_ctx(cfg)
    m = IMPON(drop=0.5, variant=variant, lr=1e-2)  # drop is ignored
    m.setup(ctx)
    assert m.bank == 200 and m.b == 64 and m.feat_dim == 64  # paper bank; 64-d projection
    m.start_epoch(0)
    n = ctx.n_train
    sizes = []
    for step, batch in enumerate(m.batches(0)):
        bank = m.last_bank
        assert len(bank) == 200 and len(set(bank.tolist())) == 200
        assert len(set(batch.indices.tolist())) == len(batch) and torch.isin(batch.indices, bank).all()
        with torch.no_grad():
            pred = m.linear.predict(m.context(bank))
        order = torch.argsort(pred, descending=variant == "highest")
        chosen = pred[torch.isin(bank, batch.indices)]
        rest = pred[~torch.isin(bank, batch.indices)]
        if step > 0:  # step 0 of an epoch: zero model, all predictions tie
            worst_kept = chosen.min() if variant == "highest" else chosen.max()
            best_left = rest.max() if variant == "highest" else rest.min()
            assert (worst_kept >= best_left) if variant == "highest" else (worst_kept <= best_left)
            assert set(bank[order[: len(batch)]].tolist()) == set(batch.indices.tolist())
        sizes.append(len(batch))
        # the observed loss grows with feature 0: the model must learn that
        losses = m.features(batch.indices)[:, 0] + 3.0
        m.observe(batch, None, losses)
    assert len(sizes) == num_batches(n, 64) == m.steps_in_epoch(0) and sum(sizes) == n
    assert m.linear.updates == len(sizes) and m.linear.w.abs().sum() > 0
    with torch.no_grad():  # the predictions follow the observed loss over the whole training set
        everyone = torch.arange(n)
        pred, target = m.linear.predict(m.context(everyone)), m.features(everyone)[:, 0]
    assert torch.corrcoef(torch.stack([pred, target]))[0, 1] > 0.5
    m.start_epoch(1)
    assert m.linear.w.abs().sum() == 0 and m.linear.b == 0 and m.linear.updates == 0


def test_context_has_weight_norm_and_text_uses_frozen_mean_embeddings():
    cfg = tiny_text_cell(method="impon")
    trainer, ctx = harness_ctx(cfg)
    m = IMPON()
    m.setup(ctx)
    emb = ctx.model.base.embeddings.word_embeddings.weight
    assert m.text and m.feat_dim == emb.shape[1]
    idx = torch.tensor([3, 5])
    x, mask = ctx.inputs(idx)
    want = (emb[x[0]][mask[0].bool()]).mean(0)
    assert torch.allclose(m._raw_features(idx)[0], want.detach(), atol=1e-5)
    with torch.no_grad():  # the embeddings are frozen at setup: training the model does not move the feature
        emb.add_(1.0)
    assert torch.allclose(m._raw_features(idx)[0], want.detach(), atol=1e-5)
    c = m.context(idx)
    assert c.shape == (2, m.feat_dim + 1) and c[0, -1] > 1.0  # weight norm grew relative to setup


def test_real_cell_counts(store):
    res = run_cell(tiny_cell(method="impon", drop=0.0, epochs=2), log=lambda *_: None)
    m = res.metrics
    assert m["total_backwards"] == m["total_forwards"] == 2 * 256  # no drop knob: N per epoch
    assert m["total_steps"] == 2 * num_batches(256, 64)
    assert m["total_selection_forwards"] == m["total_partial_forwards"] == 0


def test_paper_preset_is_plain_sgd_on_the_papers_bank_and_says_so():
    cfg = tiny_cell(method="impon", drop=0.0)
    trainer, ctx = harness_ctx(cfg)
    m = IMPON(preset="paper")
    m.setup(ctx)
    assert m.bank == 200 and m.center is False and m.lr == 1e-6 and m.faithful is True and "0.001" in m.caveat
    harness = IMPON()
    assert harness.center is True and harness.faithful is False and "preset=paper" in harness.caveat
    assert IMPON.faithful is False  # the class flag describes the default (harness) preset
    with pytest.raises(ValueError):
        IMPON(preset="paper", center=True)
    big = tiny_cell(method="impon", drop=0.0, batch_size=200)
    from bench.errors import BenchError

    with pytest.raises(BenchError, match="smaller than the bank"):
        IMPON(preset="paper").setup(harness_ctx(big)[1])


def test_impon_has_no_drop_knob():
    assert IMPON.uses_drop is False
    assert IMPON(drop=0.5).refuse(3) is not None and IMPON(drop=0.0).refuse(3) is None
