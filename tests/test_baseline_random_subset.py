"""Random subset: keep * N fresh samples per epoch; with warm-up epochs, those are full (the matched control)."""
import torch

from bench.registry import METHODS


class FakeCtx:
    def __init__(self, n=1000, batch_size=50, drop=0.5):
        self.n_train, self.num_classes, self.epochs, self.batch_size, self.drop = n, 10, 4, batch_size, drop
        self.generator = torch.Generator().manual_seed(0)
        self.device = torch.device("cpu")


def make(drop=0.5, **params):
    m = METHODS.get("random_subset").build(drop, params)
    m.setup(FakeCtx(drop=drop))
    return m


def test_warmup_epochs_are_full_then_keep_n():
    m = make(0.8, warmup_epochs=2)
    for e in (0, 1):
        b = m.epoch_indices(e)
        assert sorted(b.indices.tolist()) == list(range(1000)) and m.epoch_size(e) == 1000
    b = m.epoch_indices(2)
    assert len(b) == 200 == m.epoch_size(2) and len(set(b.indices.tolist())) == 200
    assert m.steps_in_epoch(0) == 20 and m.steps_in_epoch(2) == 4


def test_default_has_no_warmup():
    assert len(make(0.8).epoch_indices(0)) == 200


def test_no_op_cells_are_refused():
    assert "uniform" in make(0.0).refuse(3)
    assert "warmup_epochs (2)" in make(0.5, warmup_epochs=2).refuse(2)
    assert make(0.5, warmup_epochs=2).refuse(3) is None


def test_uniform_has_no_drop_knob():
    cls = METHODS.get("uniform")
    assert cls.uses_drop is False
    assert cls.build(0.5, {}).refuse(3) is not None and cls.build(0.0, {}).refuse(3) is None
