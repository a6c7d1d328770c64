"""One cell per registered method, on tiny real data: a new method file is tested here with no new test code."""
import re

import pytest

from bench import tracking
from bench.cell import run_cell
from bench.errors import BenchError
from bench.registry import METHODS, list_methods
from bench.suite import load_suite
from conftest import tiny_cell, tiny_text_cell


def _check(res, cfg):
    m = res.metrics
    assert res.status == "finished"
    assert 0.0 <= m["final_test_acc"] <= 1.0
    assert 0.0 < m["backward_fraction"] <= 1.0 + 1e-9 or cfg.method == "swift_sampler"
    assert m["e2e_seconds"] >= m["train_seconds"] > 0
    assert m["total_backwards"] <= m["total_forwards"]
    run = tracking.client().get_run(res.run_id)
    assert run.info.status == "FINISHED" and run.data.params["method"] == cfg.method
    hist = tracking.client().get_metric_history(res.run_id, "val_acc")
    assert sorted(h.step for h in hist) == list(range(cfg.epochs))


def _cell(make, method):
    """3 epochs (every method gets past its warm-up), the quick suite's shrunk method parameters,
    drop 0.5 where the method has a drop knob (those without refuse drop > 0)."""
    drop = 0.5 if METHODS.get(method).uses_drop else 0.0
    return make(method=method, drop=drop, epochs=3, params=dict(load_suite("quick").method_params.get(method, {})))


@pytest.mark.parametrize("method", list_methods())
def test_image_cell(method, store):
    cfg = _cell(tiny_cell, method)
    _check(run_cell(cfg, log=lambda *_: None), cfg)


@pytest.mark.parametrize("method", list_methods())
def test_text_cell(method, store):
    from bench.suite import refusal

    cfg = _cell(tiny_text_cell, method)
    why = refusal(cfg)
    if why:  # refused in one line, before any run opens (IMPON on text)
        with pytest.raises(BenchError, match=re.escape(why[:40])):
            run_cell(cfg, log=lambda *_: None)
        assert not tracking.client().search_runs([tracking.experiment_id()])
        return
    _check(run_cell(cfg, log=lambda *_: None), cfg)
