"""Matched controls: shape read from realized work, budget matched within one batch."""
import pytest

from bench.config import CellConfig
from bench.controls import CONTROL, Shape, control_for, shape_of


def test_shape_reads_warmup_and_realized_keep():
    assert shape_of([1000, 1000, 300, 100], 1000) == Shape(2, 0.2)
    assert shape_of([500, 1000], 1000) == Shape(0, 0.75)  # a full epoch after selection began is not warm-up
    assert shape_of([1000, 1000], 1000) == Shape(2, 1.0)


@pytest.mark.parametrize("n,epochs,bs,backwards", [
    (2000, 3, 128, [2000, 1000, 1000]),
    (20000, 10, 128, [20000, 20000] + [1234] * 8),
    (300, 4, 32, [300, 61, 59, 60]),
    (60000, 8, 512, [60000] + [5999] * 7),
])
def test_control_budget_matches_within_one_batch(n, epochs, bs, backwards):
    cfg = CellConfig(model="tiny_cnn", dataset="fashion_mnist", method="swiftlearn", drop=0.9, epochs=epochs, batch_size=bs)
    shape = shape_of(backwards, n)
    ctl = control_for(cfg, shape, n)
    assert ctl.method == CONTROL and ctl.params.get("warmup_epochs", 0) == shape.full_epochs
    keep = max(1, round((1 - ctl.drop) * n))  # random_subset's keep_count
    control_total = shape.full_epochs * n + (epochs - shape.full_epochs) * keep
    assert abs(control_total - sum(backwards)) <= bs


def test_no_control_for_reference_or_a_run_that_never_dropped():
    cfg = CellConfig(model="tiny_cnn", dataset="fashion_mnist", method="infobatch", drop=0.5, epochs=2)
    assert control_for(cfg, shape_of([1000, 1000], 1000), 1000) is None
    assert control_for(cfg.replace(method="uniform", drop=0.0), Shape(0, 0.5), 1000) is None


def test_equal_budgets_share_one_control():
    a = CellConfig(model="tiny_cnn", dataset="fashion_mnist", method="selective_backprop", drop=0.5, epochs=3, batch_size=128)
    b = a.replace(method="sift")
    ca, cb = control_for(a, shape_of([2000, 1000, 1000], 2000), 2000), control_for(b, shape_of([2000, 1001, 999], 2000), 2000)
    assert ca.config_key() == cb.config_key()
