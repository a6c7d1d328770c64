import math

import pytest
import torch

from bench import tracking
from bench.cell import run_cell
from bench.optim import OPTIMIZERS, Schedule
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
    assert m["ideal_speedup"] == pytest.approx(1.0) and m["backward_cost_ratio"] > 0
    assert m["cost_forward_s"] > 0 and m["cost_backward_s"] > 0 and m["cost_score_s"] > 0
    assert "cost_partial1_s" not in m and "active_share" not in m
    assert m["e2e_seconds"] >= m["setup_seconds"] + m["train_seconds"] and m["setup_seconds"] > 0


def test_early_exit_passes_are_charged_at_their_measured_cost(store):
    m = run_cell(tiny_cell(method="sift", drop=0.5, epochs=3, params={"exit_layer": 2}), log=lambda *_: None).metrics
    assert m["cost_partial2_s"] > 0 and m["total_partial_forwards"] > 0 and m["total_exit2"] == m["total_partial_forwards"]
    f, b, p, s = m["cost_forward_s"], m["cost_backward_s"], m["cost_partial2_s"], m["cost_score_s"]
    budget = 3 * 256
    assert m["forward_fraction"] == pytest.approx(
        (m["total_forwards"] * f + m["total_partial_forwards"] * p + m["total_selection_forwards"] * s) / (f * budget))
    assert m["train_work_fraction"] == pytest.approx(
        (m["total_forwards"] * f + m["total_backwards"] * b + m["total_partial_forwards"] * p
         + m["total_selection_forwards"] * s) / ((f + b) * budget))
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
        with t.stage("method"):
            sum(range(20000))
    with t.exclusive("search"):
        with t.stage("forward"):
            sum(range(200000))
        with t.untimed():  # the harness's own work, even inside search
            sum(range(200000))
    assert t.totals["method"] > 0 and t.totals["search"] > t.totals["forward"] and t.totals["harness"] > 0
    assert math.isclose(sum(t.totals.values()) - t.totals["harness"], t.total_seconds())
    assert t.train_seconds() == pytest.approx(t.total_seconds() - t.totals["search"] - t.totals["evaluation"])


# -- no shape is first run on the clock; no host sync per step


def _train(cfg, hook=None):
    """A Trainer of `cfg` (its method built), trained through all its epochs; `hook(trainer)` first."""
    from bench.cell import load_cell
    from bench.engine import Trainer

    method = cfg.build_method()
    data, model = load_cell(cfg)
    tr = Trainer(cfg, data, model, torch.device("cpu"), method=method)
    if hook:
        hook(tr)
    tr.start()
    tr.records = [tr.train_epoch(e) for e in range(cfg.epochs)]
    return tr


def _cell(method):
    from bench.registry import METHODS
    from bench.suite import load_suite

    drop = 0.5 if METHODS.get(method).uses_drop else 0.0
    params = dict(load_suite("quick").method_params.get(method, {}))
    if method == "sift":
        params["corr_threshold"] = -1.0  # select from the second epoch, whatever the exit's correlation
    # 250 samples in batches of 64: a tail batch, and other tails as methods drop samples
    return tiny_cell(method=method, drop=drop, epochs=3, train_limit=250, eval_limit=150, params=params)


def _methods():
    from bench.registry import list_methods

    return list_methods()


@pytest.mark.parametrize("method", _methods())
def test_no_input_shape_is_first_run_on_the_clock(method, store):
    """Every (train or eval mode, batch size) that reaches the model while the clock runs was run before
    untimed (a training step, an evaluation, a scoring pass or an early exit)."""
    seen_untimed, first_timed = set(), []

    def hook(tr):
        def pre(module, args):
            key = (module.training, args[0].shape[0])
            if not tr.timer.running:
                seen_untimed.add(key)
            elif key not in seen_untimed:
                first_timed.append(key)
        tr.model.stages[0].register_forward_pre_hook(pre)

    tr = _train(_cell(method), hook)
    assert tr.counts.steps > 0 and not first_timed, f"shapes first run on the clock: {sorted(set(first_timed))}"
    assert ("train", 64) in tr.warmed


# host syncs in a method's hooks over the cell of `_cell` (3 epochs, 250 samples, batch 64), as its docstring
# names them; the engine's own step path makes none
HOST_SYNCS = {
    "uniform": 0, "random_subset": 0, "psgd": 0, "csgd": 0, "swiftlearn": 0, "impon": 0,
    "infobatch": 4,  # two per pruning epoch (epochs 0 and 1 of 3): the samples below and above the mean are listed
    "selective_backprop": 8,  # one per chunk of candidates in the 2 selective epochs (4 chunks each)
    "ub_importance": 0,  # with tau_th 0 (quick's setting) none; the switch would read one per step
    "swift_sampler": 3,  # one per sampled epoch (a draw without replacement checks its support); search uncounted
    "sift": 17,  # none per step; the epoch-end probe reads its ranks and the head's accuracy (5), and the kept
    # samples' class mix once it selects (1): 5 + 6 + 6
}


@pytest.mark.parametrize("method", _methods())
def test_host_syncs_per_method(method, store, monkeypatch):
    monkeypatch.setenv("BENCH_COUNT_SYNCS", "1")
    tr = _train(_cell(method))
    host = sum(r.syncs["host_syncs"] for r in tr.records)
    harness = sum(r.syncs["harness_syncs"] for r in tr.records)
    assert (method, host, harness) == (method, HOST_SYNCS[method], 0)


def test_cpu_bf16_trains_in_bf16_and_is_its_own_cell(store):
    """`cpu_bf16` is what a cell computes: its own key (cells without it keep theirs), bf16 matmuls in
    the step, and run to run the same numbers on one CPU."""
    from bench.cell import load_cell
    from bench.engine import Trainer
    from conftest import tiny_text_cell

    plain, bf16 = tiny_text_cell(), tiny_text_cell(cpu_bf16=True)
    assert "cpu_bf16" not in plain.identity() and plain.key("cpu") != bf16.key("cpu")
    seen = []
    for cfg in (plain, bf16):
        data, model = load_cell(cfg)
        trainer = Trainer(cfg, data, model, torch.device("cpu"))
        lin = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Linear))
        hook = lin.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
        trainer.evaluate(trainer.val)
        hook.remove()
    assert seen[0] == torch.float32 and seen[-1] == torch.bfloat16
    a, b = (run_cell(bf16, log=lambda *_: None) for _ in range(2))
    assert b.status == "skipped"
    c = run_cell(tiny_text_cell(cpu_bf16=True, seed=0, session="again"), log=lambda *_: None)
    for k in ("final_val_acc", "final_test_acc"):
        assert a.metrics[k] == c.metrics[k]
