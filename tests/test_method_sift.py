"""SIFT: top-k by early-exit loss, an exit head that never touches the trunk, counted partial passes."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from bench.cell import prepare, run_cell
from bench.engine import HarnessContext, Trainer
from bench.method import Batch, Context, static_k
from bench.models import Exit
from bench.timing import StageTimer
from conftest import tiny_cell
from methods.sift import SIFT


def harness_ctx(cfg):
    _, data, model = prepare(cfg)
    dev = torch.device("cpu")
    trainer = Trainer(cfg, data, model, dev, StageTimer(dev))
    return trainer, HarnessContext(trainer, cfg.drop, cfg.epochs, cfg.seed)


def trunk_grads(model, trainer, idx):
    x, mask, y = trainer.inputs(trainer.train, idx)
    model.train()
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x, mask), y).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_backpropagates_top_k_by_early_exit_loss_and_head_never_touches_trunk():
    cfg = tiny_cell(method="sift", drop=0.5)
    trainer, ctx = harness_ctx(cfg)
    m = SIFT(drop=0.5, exit_layer=1)
    m.setup(ctx)
    m.start_epoch(0)
    first = Batch(torch.arange(64))
    assert m.select(first) is first  # epoch 0 fits the new CNN exit head on the full batch: no selection yet
    assert m.head is not None and ctx.counts.partial_forwards == 64
    m.start_epoch(1)
    head_before = copy.deepcopy(m.head)
    model_before = copy.deepcopy(trainer.model)

    batch = Batch(torch.arange(64, 128))
    chosen = m.select(batch)
    assert ctx.counts.partial_forwards == 128  # the early pass is counted as partial forwards
    assert len(chosen) == static_k(0.5, 64) == 32

    with torch.no_grad():  # expected: top 32 by CE of the head (as it was) on stage-1 features
        x, mask, y = trainer.inputs(trainer.train, batch.indices)
        feats = model_before.early_exit(x.clone(), mask, 1).features
        approx = F.cross_entropy(head_before(feats), y, reduction="none")
    expected = batch.indices[torch.topk(approx, 32).indices].sort().values
    assert chosen.indices.tolist() == expected.tolist()
    assert not torch.equal(m.head.weight, head_before.weight)  # the head did learn

    # the trunk is untouched: no grads left behind, same weights and BN statistics
    assert all(p.grad is None for p in trainer.model.parameters())
    for (k, a), b in zip(trainer.model.state_dict().items(), model_before.state_dict().values()):
        assert torch.equal(a, b), k
    # a step on the chosen samples has exactly the gradients of a plain step on them
    g_sift = trunk_grads(trainer.model, trainer, chosen.indices)
    g_plain = trunk_grads(model_before, trainer, chosen.indices)
    for k in g_plain:
        assert torch.equal(g_sift[k], g_plain[k]), k


class OwnHeadCtx(Context):
    """A model with its own head at layer k (like ViT / BERT): early_exit gives logits."""

    def __init__(self, logits):
        self.logits, self.partial = logits, 0
        self.n_train, self.num_classes, self.batch_size = len(logits), logits.shape[1], 8
        self.labels = torch.zeros(len(logits), dtype=torch.long)
        self.device = torch.device("cpu")
        self.model = torch.nn.Identity()
        self.generator = torch.Generator().manual_seed(0)

    def early_exit(self, indices, k):
        self.partial += len(indices)
        return Exit(torch.zeros(len(indices), 4), self.logits[indices])


def test_entropy_variant_uses_the_models_own_head_and_no_labels():
    sharp = torch.tensor([[9.0, 0, 0], [0, 9.0, 0]])
    flat = torch.tensor([[0.0, 0, 0], [0.1, 0, 0]])
    logits = torch.cat([sharp, flat, sharp, flat])  # high entropy at 2, 3, 6, 7
    ctx = OwnHeadCtx(logits)
    m = SIFT(drop=0.5, variant="entropy")
    m.setup(ctx)
    chosen = m.select(Batch(torch.arange(8)))
    assert chosen.indices.tolist() == [2, 3, 6, 7] and m.head is None
    # loss variant on the same logits: the labels decide (label 0 everywhere)
    m = SIFT(drop=0.75, variant="loss")
    m.setup(ctx)
    assert m.select(Batch(torch.arange(8))).indices.tolist() == [1, 5]


def test_full_data_keeps_everything_without_an_early_pass():
    ctx = OwnHeadCtx(torch.randn(8, 3))
    m = SIFT(drop=0.0)
    m.setup(ctx)
    b = Batch(torch.arange(8))
    assert m.select(b) is b and ctx.partial == 0
    with pytest.raises(ValueError):
        SIFT(variant="gradnorm")


def test_real_cell_counts(store):
    res = run_cell(tiny_cell(method="sift", drop=0.9, epochs=2, params={"probe_size": 32}), log=lambda *_: None)
    m = res.metrics
    per_batch = math.ceil(0.1 * 64)
    assert m["total_backwards"] == m["total_forwards"] == 256 + 4 * per_batch  # epoch 0 fits the exit head
    assert m["total_partial_forwards"] == 2 * 256  # every batch's early pass
    assert m["total_selection_forwards"] == 0 and m["total_steps"] == 8
    assert m["total_search_forwards"] == 2 * (32 + 32)  # the probe's early and full passes, a diagnostic: search


def test_no_op_cells_are_refused():
    assert "drop 0" in SIFT(drop=0.0).refuse(3)
    assert "head_warmup_epochs (1)" in SIFT(drop=0.5).refuse(1)
    assert SIFT(drop=0.5).refuse(2) is None and SIFT(drop=0.5, head_warmup_epochs=0).refuse(1) is None


def test_rank_correlation_on_the_probe_is_logged_and_returned():
    cfg = tiny_cell(method="sift", drop=0.5)
    trainer, ctx = harness_ctx(cfg)
    logged = {}
    ctx.artifact_sink = lambda name, obj: logged.update({name: obj})
    m = SIFT(drop=0.5, probe_size=64)
    m.setup(ctx)
    trainer.timer.start()
    for epoch in range(cfg.epochs):
        m.start_epoch(epoch)
        for b in m.batches(epoch):
            pass
        m.end_epoch(epoch)
    assert [r["epoch"] for r in m.rank_corr] == [0, 1]
    assert all(-1.0 <= r["spearman"] <= 1.0 for r in m.rank_corr)
    assert logged["sift_rank_corr.json"]["per_epoch"] == m.rank_corr
    fm = m.final_metrics()
    assert fm["exit_rank_corr"] == m.rank_corr[-1]["spearman"] and fm["exit_rank_corr_first"] == m.rank_corr[0]["spearman"]


def test_spearman():
    from methods.sift import spearman

    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert spearman(a, a * 10) == pytest.approx(1.0) and spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(a, torch.ones(4)) == 0.0  # constant: ties share one rank
    assert spearman(torch.tensor([1.0, 1.0, 2.0]), torch.tensor([0.0, 0.0, 5.0])) == pytest.approx(1.0)
