"""The pace meter (bench/meter.py): the arithmetic of metered steps, and that a reading leaves no trace."""
import itertools
import math

import pytest

from bench import tracking
from bench.cell import run_cell
from bench.meter import PaceMeter
from conftest import tiny_cell, tiny_text_cell


def _meter(pairs):
    m = PaceMeter(clock=lambda: 0.0)
    m.load_state_dict(pairs)
    return m


def test_a_neighbour_that_slows_everything_cancels_out():
    # 100 steps of 10 ms, then 100 steps with a neighbour that slows every step (and the meter) by half
    calm = _meter([(0.0, 0.010), (1.0, 0.010)])
    busy = _meter([(0.0, 0.010), (1.0, 0.010), (1.0, 0.015), (2.5, 0.015)])
    assert calm.metered_steps(1.0) == pytest.approx(100)
    assert busy.metered_steps(2.5) == pytest.approx(200)  # train seconds 2.5, yet the work of 200 steps
    # after the last reading its pace holds: 50 more steps at 15 ms
    assert busy.metered_steps(3.25) == pytest.approx(250)
    assert math.isnan(_meter([]).metered_steps(1.0))


def test_a_reading_is_the_faster_of_two_and_comes_when_due():
    ticks = itertools.chain([0.0, 0.5, 0.5, 0.52], itertools.repeat(1.0))  # an interrupted step, then a clean one
    m = PaceMeter(clock=lambda: next(ticks), every=100)
    assert m.due(0.0)
    m.read(0.0, lambda: None)
    assert m.readings == [(0.0, pytest.approx(0.02))]
    assert not m.due(1.9) and m.due(2.01)  # 100 readings' worth of train time later


@pytest.mark.parametrize("cell", [tiny_cell(method="random_subset", drop=0.5), tiny_text_cell(epochs=2)],
                         ids=["cnn", "text"])
def test_the_meter_leaves_no_trace(cell, store, monkeypatch, tmp_path):
    """Batch-norm statistics, gradients, dropout and augmentation streams: a run with the meter ends
    bit for bit where one without it ends."""
    metered = run_cell(cell, log=lambda *_: None)
    assert metered.metrics["train_metered_steps"] > 0 and metered.metrics["meter_step_seconds"] > 0
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'plain.db'}")
    monkeypatch.setattr("bench.engine.PaceMeter", lambda clock, every=None: None)
    plain = run_cell(cell, log=lambda *_: None)
    assert "train_metered_steps" not in plain.metrics
    for k in ("final_val_acc", "final_test_acc", "total_backwards"):
        assert metered.metrics[k] == plain.metrics[k]
    loss = [tracking.client().get_metric_history(r.run_id, "val_loss") for r in (plain,)]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    loss.append(tracking.client().get_metric_history(metered.run_id, "val_loss"))
    assert [m.value for m in loss[0]] == [m.value for m in loss[1]]


def test_each_workload_meters_at_its_own_cadence():
    """Text cells are read twice as often as images (bench/workload.py): the engine passes it on."""
    import torch

    from bench.cell import load_cell
    from bench.engine import Trainer
    from bench.workload import IMAGE, TEXT

    assert TEXT.meter_every < IMAGE.meter_every
    for cfg, w in ((tiny_cell(), IMAGE), (tiny_text_cell(), TEXT)):
        data, model = load_cell(cfg)
        trainer = Trainer(cfg, data, model, torch.device("cpu"), method=cfg.build_method())
        assert trainer.meter.every == w.meter_every
