"""Random subset: keep * N fresh samples per epoch, full warm-up epochs first, or a replayed batch plan."""
import pytest
import torch

from bench.errors import BenchError
from bench.work import decode_plan, encode_plan
from fakes import drive, make, cell


def distinct(t: torch.Tensor) -> bool:
    return len(torch.unique(t)) == len(t)


def test_warmup_epochs_are_full_then_keep_n():
    rec = drive("random_subset", epochs=4, drop=0.8, params={"warmup_epochs": 2}, n=1000, batch_size=50)
    for e in (0, 1):
        ep = rec.epochs[e]
        assert sorted(ep.indices.tolist()) == list(range(1000)) and ep.planned == 1000 and len(ep.batches) == 20
    for e in (2, 3):
        ep = rec.epochs[e]
        assert ep.samples == ep.planned == 200 and distinct(ep.indices) and len(ep.batches) == 4
    assert not torch.equal(rec.epochs[2].indices.sort().values, rec.epochs[3].indices.sort().values)  # fresh subsets
    assert all(b.weights is None for ep in rec.epochs for b in ep.batches)
    assert rec.counts.backwards == 2 * 1000 + 2 * 200 and rec.counts.selection_forwards == 0


def test_default_has_no_warmup():
    rec = drive("random_subset", epochs=1, drop=0.8, n=1000, batch_size=50)
    assert rec.epochs[0].samples == rec.epochs[0].planned == 200 and distinct(rec.epochs[0].indices)


def test_no_op_cells_are_refused():
    assert "uniform" in make("random_subset", 0.0).refuse(cell(3))
    assert "warmup_epochs (2)" in make("random_subset", 0.5, warmup_epochs=2).refuse(cell(2))
    assert make("random_subset", 0.5, warmup_epochs=2).refuse(cell(3)) is None


PLAN = "64x10,16x1;64x10;8x1,64x3,8x1"


def test_plan_replays_the_batch_sizes_of_every_epoch_in_order():
    rec = drive("random_subset", epochs=3, drop=0.5, params={"plan": PLAN}, n=1000, batch_size=64)  # drop unused
    want = decode_plan(PLAN)
    assert [ep.sizes for ep in rec.epochs] == want
    assert encode_plan([ep.sizes for ep in rec.epochs]) == PLAN
    assert [ep.planned for ep in rec.epochs] == [sum(s) for s in want] == [656, 640, 208]
    for ep in rec.epochs:  # each epoch trains at most N: distinct random samples
        assert distinct(ep.indices) and ep.indices.min() >= 0 and ep.indices.max() < 1000
    assert not torch.equal(rec.epochs[0].indices[:640].sort().values, rec.epochs[1].indices.sort().values)
    assert rec.counts.backwards == 656 + 640 + 208 and rec.counts.steps == 11 + 10 + 5


def test_plan_epoch_longer_than_the_data_wraps_into_a_new_permutation():
    rec = drive("random_subset", epochs=1, params={"plan": "64x3"}, n=100, batch_size=64)
    idx = rec.epochs[0].indices
    assert rec.epochs[0].sizes == [64, 64, 64]
    assert sorted(idx[:100].tolist()) == list(range(100))  # the first 100: one permutation
    assert distinct(idx[100:]) and torch.bincount(idx, minlength=100).max() == 2


def test_plan_is_refused_when_its_epochs_do_not_match_the_cell():
    m = make("random_subset", 0.0, plan=PLAN)
    assert m.refuse(cell(3)) is None  # a plan acts at drop 0 too
    assert "3 epochs" in m.refuse(cell(4))
    with pytest.raises(BenchError, match="not of the form"):
        make("random_subset", 0.0, plan="64 by 10")
    with pytest.raises(BenchError, match="below 1"):
        make("random_subset", 0.0, plan="0x3")


def test_same_seed_same_plan_replay():
    a = drive("random_subset", epochs=3, params={"plan": PLAN}, n=1000, batch_size=64, seed=3)
    b = drive("random_subset", epochs=3, params={"plan": PLAN}, n=1000, batch_size=64, seed=3)
    c = drive("random_subset", epochs=3, params={"plan": PLAN}, n=1000, batch_size=64, seed=4)
    assert all(torch.equal(x.indices, y.indices) for x, y in zip(a.epochs, b.epochs))
    assert not torch.equal(a.epochs[0].indices, c.epochs[0].indices)


def test_plan_epoch_without_steps_trains_nothing():
    rec = drive("random_subset", epochs=3, params={"plan": "64x2;;64x1"}, n=1000, batch_size=64)
    assert [ep.sizes for ep in rec.epochs] == [[64, 64], [], [64]]
