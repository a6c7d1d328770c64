"""Work accounting and the two random controls: the batch plan, measured pass costs, the selection
control's copied per-epoch shape and step structure, the cost control's budget."""
import pytest
import torch

from bench import tracking
from bench.cell import run_cell
from bench.config import CellConfig
from bench.controls import CONTROL, control_drop, controls_of_run, cost_control, selection_control, uniform_plan
from bench.models import InputSpec, create_model
from bench.work import Counts, PassCosts, decode_plan, encode_plan, measure_costs, work_metrics
from conftest import tiny_cell


def test_plan_round_trips_and_run_length_codes():
    epochs = [[128] * 140 + [80], [64] * 3 + [16], []]
    plan = encode_plan(epochs)
    assert plan == "128x140,80x1;64x3,16x1;"
    assert decode_plan(plan) == epochs


def test_measured_costs_are_positive_and_leave_the_model_untouched():
    torch.manual_seed(0)
    m = create_model("tiny_cnn", InputSpec("image", 10, 1, 28))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    rng = torch.get_rng_state()
    c = measure_costs(m, x, None, y, exits=(1, 3))
    assert c.forward > 0 and c.backward > 0 and c.score > 0 and set(c.partial) == {1, 3}
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert all(p.grad is None for p in m.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    assert PassCosts.from_metrics(c.metrics()) == c


def test_work_fractions_weight_each_pass_by_its_cost():
    costs = PassCosts(forward=1.0, backward=2.0, score=0.5, partial={1: 0.25})
    c = Counts(forwards=500, backwards=500, selection_forwards=1000, partial_forwards=400, exits={1: 400})
    w = work_metrics(c, costs, budget=1000)
    assert w["backward_fraction"] == 0.5
    assert w["train_work_fraction"] == pytest.approx((500 * 1 + 500 * 2 + 1000 * 0.5 + 400 * 0.25) / 3000)
    assert w["ideal_speedup"] == pytest.approx(1 / w["train_work_fraction"])


def test_selection_control_replays_the_plan_and_skips_uniform_shaped_runs():
    cfg = CellConfig(model="tiny_cnn", dataset="fashion_mnist", method="sift", drop=0.5, epochs=2, batch_size=64)
    plan = "64x4;32x4"
    ctl = selection_control(cfg, plan, 256)
    assert ctl.method == CONTROL and ctl.params == {"plan": plan} and ctl.epochs == 2
    assert selection_control(cfg, uniform_plan(256, 64, 2), 256) is None  # never dropped: uniform is its control
    assert selection_control(cfg.replace(method="uniform"), plan, 256) is None
    assert selection_control(cfg.replace(method="psgd"), plan, 256).config_key() == ctl.config_key()  # shared


def _metrics(counts: Counts, costs: PassCosts) -> dict:
    m = {f"total_{k}": v for k, v in counts.as_dict().items()}
    m.update({f"total_exit{k}": v for k, v in counts.exits.items()})
    return {**m, **costs.metrics()}


@pytest.mark.parametrize("name,counts", [
    # Selective Backprop: every candidate scored, about 62% backpropagated
    ("selective_backprop", Counts(forwards=22000, backwards=22000, selection_forwards=24000, steps=172)),
    # upper-bound IS: half the backwards, a presample of 3 batches scored per step
    ("ub_importance", Counts(forwards=18000, backwards=18000, selection_forwards=54000, steps=141)),
    # Swift Sampler: half the backwards plus a search that cost about 1.5 uniform epochs
    ("swift_sampler", Counts(forwards=18000, backwards=18000, search_forwards=54000, search_backwards=45000)),
])
def test_cost_control_buys_the_same_work_within_3_percent(name, counts):
    n, epochs, bs = 9000, 4, 128
    costs = PassCosts(forward=1e-3, backward=2.1e-3, score=0.6e-3)
    cfg = CellConfig(model="tiny_cnn", dataset="fashion_mnist", method=name, drop=0.5, epochs=epochs, batch_size=bs)
    ctl = cost_control(cfg, _metrics(counts, costs), n)
    own = (counts.forwards * costs.forward + counts.backwards * costs.backward + counts.selection_forwards * costs.score
           + counts.search_forwards * costs.forward + counts.search_backwards * costs.backward)
    backwards = ctl.epochs * max(1, round((1 - ctl.drop) * n)) if ctl.method == CONTROL else ctl.epochs * n
    assert backwards * (costs.forward + costs.backward) == pytest.approx(own, rel=0.03)
    assert ctl.epochs >= epochs and ctl.method in (CONTROL, "uniform")


def test_a_run_with_no_extra_passes_has_no_separate_cost_control():
    cfg = CellConfig(model="tiny_cnn", dataset="fashion_mnist", method="psgd", drop=0.5, epochs=3)
    counts = Counts(forwards=5000, backwards=5000, steps=40)
    assert cost_control(cfg, _metrics(counts, PassCosts(1e-3, 2e-3, 5e-4)), 2000) is None


def test_control_drop_rounds_so_equal_budgets_share_a_cell():
    assert control_drop(0.5001, 2000, 3, 128) == control_drop(0.4999, 2000, 3, 128) == 0.5
    assert 0 <= control_drop(1.2, 100, 1, 10) == 0.0


def test_selection_control_copies_per_epoch_backwards_and_step_sizes(store, fixed_costs):
    """Trained for real: a method's selection control takes the same steps of the same sizes in every epoch."""
    for method, params in (("selective_backprop", {}), ("sift", {"corr_threshold": -1.0})):
        cfg = tiny_cell(method=method, drop=0.5, epochs=3, params=params)
        res = run_cell(cfg, log=lambda *_: None)
        run = tracking.client().get_run(res.run_id)
        controls = controls_of_run(cfg, run)
        ctl = controls["selection"]
        cres = run_cell(ctl, log=lambda *_: None)
        crun = tracking.client().get_run(cres.run_id)
        assert crun.data.tags["batch_plan"] == run.data.tags["batch_plan"]
        hist = {m: {h.step: h.value for h in tracking.client().get_metric_history(r, "epoch_backwards")}
                for m, r in (("own", res.run_id), ("ctl", cres.run_id))}
        assert hist["own"] == hist["ctl"]
        sizes = decode_plan(run.data.tags["batch_plan"])
        if method == "sift":  # it selected in epochs 1 and 2: ceil(keep * B) of each drawn batch
            assert set(sizes[1]) == {32} and set(sizes[2]) == {32}
        # both have cost controls: their extra passes (scoring, early exits) cost work
        assert "cost" in controls and controls["cost"].drop < 0.5


def test_a_plan_a_plain_random_subset_realizes_gets_that_random_subset():
    from bench.controls import subset_plan

    cfg = CellConfig(model="tiny_cnn", dataset="fashion_mnist", method="swiftlearn", drop=0.5, epochs=4, batch_size=64)
    plan = subset_plan(1000, 64, 4, 500, 2)
    assert plan == "64x15,40x1;64x15,40x1;64x7,52x1;64x7,52x1"
    ctl = selection_control(cfg, plan, 1000)
    assert ctl.method == CONTROL and ctl.params == {"warmup_epochs": 2} and ctl.drop == 0.5
    assert selection_control(cfg.replace(method="swift_sampler"), subset_plan(1000, 64, 4, 500, 0), 1000) == \
        cfg.replace(method=CONTROL, params={})  # the suite's own random subset at that drop
