import math

import pytest
import torch

from bench import tracking
from bench.cell import run_cell
from bench.workload import OPTIMIZERS, Schedule
from bench.timing import StageTimer
from conftest import tiny_cell


def test_same_seed_same_result_on_cpu(store, monkeypatch, tmp_path):
    a = run_cell(tiny_cell(), log=lambda *_: None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'other.db'}")
    b = run_cell(tiny_cell(), log=lambda *_: None)
    assert a.run_id != b.run_id
    for k in ("final_val_acc", "final_test_acc", "total_backwards"):
        assert a.metrics[k] == b.metrics[k]
    c = run_cell(tiny_cell(seed=1), log=lambda *_: None)
    assert c.key != a.key


def test_mlflow_round_trip_and_no_second_run(store):
    cfg = tiny_cell(method="random_subset", drop=0.5)
    first = run_cell(cfg, log=lambda *_: None)
    run = tracking.client().get_run(first.run_id)
    p, t, m = run.data.params, run.data.tags, run.data.metrics
    assert p["model"] == "tiny_cnn" and p["dataset"] == "fashion_mnist" and float(p["drop"]) == 0.5
    assert p["seed"] == "0" and p["epochs"] == "2" and p["batch_size"] == "64"
    assert {"git_commit", "hardware", "torch", "cell_key"} <= set(t)
    for k in ("final_test_acc", "train_seconds", "e2e_seconds", "backward_fraction", "stage_forward_seconds",
              "stage_backward_seconds", "stage_evaluation_seconds", "total_selection_forwards"):
        assert k in m
    # random subset at drop 0.5 backpropagates half the budget
    assert m["backward_fraction"] == pytest.approx(0.5, abs=0.01)
    again = run_cell(cfg, log=lambda *_: None)
    assert again.status == "skipped" and again.run_id == first.run_id
    assert len(tracking.runs_for(first.key)) == 1


def test_uniform_backpropagates_every_sample(store):
    res = run_cell(tiny_cell(), log=lambda *_: None)
    assert res.metrics["backward_fraction"] == 1.0
    assert res.metrics["total_backwards"] == 2 * 256
    m = res.metrics
    assert m["train_work_fraction"] == pytest.approx(1.0) and m["work_fraction"] == pytest.approx(1.0)
    assert m["ideal_speedup"] == pytest.approx(1.0) and m["backward_cost_ratio"] > 1
    assert "partial_forward_cost" not in m and "active_share" not in m


def test_early_exit_passes_are_charged_at_their_cost(store):
    m = run_cell(tiny_cell(method="sift", drop=0.5), log=lambda *_: None).metrics
    assert 0 < m["partial_forward_cost"] < 1 and m["total_partial_forwards"] > 0
    assert m["forward_fraction"] == pytest.approx(
        (m["total_forwards"] + m["partial_forward_cost"] * m["total_partial_forwards"]) / (2 * 256))
    assert m["forward_fraction"] > m["backward_fraction"]
    b = m["backward_cost_ratio"]
    assert m["train_work_fraction"] == pytest.approx((m["forward_fraction"] + b * m["backward_fraction"]) / (1 + b))
    assert m["ideal_speedup"] == pytest.approx(1 / m["train_work_fraction"])


def test_schedule_fully_decays_over_planned_steps_and_never_raises():
    for kind in ("sgd", "adamw"):
        f = Schedule(OPTIMIZERS[kind], 100)
        assert f(100) == 0.0 and f(150) == 0.0
        assert max(f(s) for s in range(100)) == pytest.approx(1.0)


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
@pytest.mark.parametrize("total", [1, 2, 5, 100])
def test_warmup_never_starts_at_zero_and_rises(kind, total):
    f = Schedule(OPTIMIZERS[kind], total)
    assert f(0) > 0
    warm = f.warmup_steps
    if total > warm:  # a cell planned for fewer steps is refused (test_failures)
        assert all(f(s) < f(s + 1) for s in range(warm)) and f(warm) == 1.0


def test_replan_moves_the_end_of_the_schedule():
    f = Schedule(OPTIMIZERS["sgd"], 10)
    f.replan(20)
    assert f(10) > 0 and f(20) == 0.0


def test_timer_is_exclusive_and_search_swallows_inner_stages():
    t = StageTimer(torch.device("cpu"))
    with t.stage("forward"):
        with t.stage("selection"):
            sum(range(20000))
    with t.exclusive("search"):
        with t.stage("forward"):
            sum(range(200000))
    assert t.totals["selection"] > 0 and t.totals["search"] > t.totals["forward"]
    assert math.isclose(sum(t.totals.values()), t.total_seconds())
    assert t.train_seconds() == pytest.approx(t.total_seconds() - t.totals["search"] - t.totals["evaluation"])
