"""Swift Sampler: valid sampler, monotone transforms onto [0, 1], a BO loop that improves, counted search."""
import json

import pytest
import torch

from bench import tracking
from bench.cell import run_cell
from bench.method import Context, num_batches
from conftest import tiny_cell
from methods.swift_sampler import (
    KNOTS,
    _SamplerTrial,
    bayes_opt,
    cumulative_transform,
    piecewise_linear,
    sample_features,
    sampler_probs,
    transform_features,
)


@pytest.fixture
def one_thread():
    """GP fitting on a loaded 2-core machine is several times faster on one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_sampler_always_gives_a_valid_distribution():
    g = torch.Generator().manual_seed(0)
    t = torch.rand(500, 2, generator=g).double()
    t[:5] = 0.0
    t[5:10] = 1.0
    cases = [torch.rand(10, generator=g) for _ in range(20)]
    cases += [torch.zeros(10), torch.ones(10), torch.tensor([0, 0, 0, 0, 1.0] + [1.0] * 5)]
    for knots in cases:
        for combine in ("product", "mean"):
            p = sampler_probs(t, knots, combine)
            assert p.shape == (500,) and torch.isfinite(p).all() and (p >= 0).all()
            assert p.sum().item() == pytest.approx(1.0)
    assert torch.allclose(sampler_probs(t, torch.zeros(10)), torch.full((500,), 1 / 500, dtype=torch.float64))
    # knots rising in feature 0, flat in feature 1: probability rises with feature 0
    p = sampler_probs(t, torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 1, 1, 1, 1, 1.0]))
    order = torch.argsort(t[:, 0])
    assert (p[order].diff() >= -1e-15).all()


def test_piecewise_linear_interpolates_its_five_knots():
    knots = torch.tensor([0.0, 1.0, 0.0, 0.5, 0.25], dtype=torch.float64)
    t = torch.tensor([0.0, 0.125, 0.25, 0.5, 0.625, 0.75, 1.0], dtype=torch.float64)
    assert piecewise_linear(t, knots).tolist() == pytest.approx([0.0, 0.5, 1.0, 0.0, 0.25, 0.5, 0.25])


def test_cgf_transform_is_monotone_onto_unit_interval():
    assert cumulative_transform(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.0])).tolist() == \
        pytest.approx([0.0, 1 / 3, 1.0])  # share held by smaller values: 0, 1, 1+2 of 3 (normalised)
    assert cumulative_transform(torch.tensor([3.0, 1.0, 2.0])).tolist() == pytest.approx([1.0, 0.0, 0.5])  # cdf
    g = torch.Generator().manual_seed(0)
    v = torch.randint(0, 50, (400,), generator=g).float()  # with ties
    w = torch.rand(400, generator=g) + 0.01
    for weights in (w, None):
        t = cumulative_transform(v, weights)
        assert t.min() == 0.0 and t.max() == 1.0
        order = torch.argsort(v)
        assert (t[order].diff() >= 0).all()
        ties = v == v[0]
        assert (t[ties] == t[0]).all()
        strict = v.unsqueeze(0) < v.unsqueeze(1)  # v_j < v_i  =>  t_j < t_i (positive weights)
        assert (t.unsqueeze(0) < t.unsqueeze(1))[strict].all()
    assert cumulative_transform(torch.ones(5)).tolist() == [0.5] * 5
    # cgf: heavy gradient mass in the middle stretches the middle of the axis
    cgf = cumulative_transform(torch.arange(10.0), torch.tensor([1.0] * 4 + [50.0, 50.0] + [1.0] * 4))
    cdf = cumulative_transform(torch.arange(10.0))
    assert cgf[5] - cgf[4] > cdf[5] - cdf[4]


def test_features_are_loss_and_renormed_entropy():
    logits = torch.tensor([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]])
    losses = torch.tensor([1.0986, 20.0])
    feats, gn = sample_features(logits, losses, torch.tensor([0, 1]))
    assert feats[:, 0].tolist() == losses.tolist()
    assert feats[0, 1].item() == pytest.approx(1.0) and feats[1, 1].item() < 0.01
    assert gn[0].item() == pytest.approx(((2 / 3) ** 2 + 2 / 9) ** 0.5, rel=1e-5) and gn[1].item() > 1.4
    t = transform_features(feats, gn, "cgf")
    assert t.shape == (2, 2) and ((t >= 0) & (t <= 1)).all()


def test_bo_loop_beats_its_first_random_candidates(one_thread):
    g = torch.Generator().manual_seed(0)
    target = torch.rand(10, generator=g).double()
    calls = []

    def objective(x):
        calls.append(x)
        return -float(((x - target) ** 2).sum())

    best_x, best_y, hist = bayes_opt(objective, 10, steps=16, init_random=4, generator=g,
                                     num_restarts=2, raw_samples=64)
    assert len(hist) == len(calls) == 16
    assert all(((x >= 0) & (x <= 1)).all() for x in calls)
    first = max(y for _, y in hist[:4])
    assert best_y == max(y for _, y in hist) and best_y > first + 0.1
    assert objective(best_x) == pytest.approx(best_y)


class FakeCtx(Context):
    def __init__(self, n):
        self.n_train, self.batch_size = n, 16
        self.generator = torch.Generator().manual_seed(0)


@pytest.mark.parametrize("drop", [0.0, 0.5])
def test_trial_method_draws_keep_n_by_the_sampler(drop):
    probs = torch.zeros(100, dtype=torch.float64)
    probs[:60] = 1 / 60
    m = _SamplerTrial(drop, probs)
    m.setup(FakeCtx(100))
    idx = m.epoch_indices(0).indices
    assert len(idx) == m.epoch_size(0) == round((1 - drop) * 100)
    assert (idx < 60).all()
    if drop > 0:  # without replacement
        assert len(set(idx.tolist())) == len(idx)
    else:  # with replacement: 100 draws from 60 samples must repeat
        assert len(set(idx.tolist())) < len(idx)


def test_real_cell_search_is_counted_and_the_sampler_transfers(store, tmp_path, one_thread):
    n, keep = 256, round(0.1 * 256)
    params = {"warmup_epochs": 1, "bo_steps": 3, "init_random": 2, "fine_tune_epochs": 1, "final": "continue"}
    res = run_cell(tiny_cell(method="swift_sampler", drop=0.9, epochs=2, params=params), log=lambda *_: None)
    m = res.metrics
    assert m["total_backwards"] == n + keep and m["total_steps"] == num_batches(n, 64) + num_batches(keep, 64)
    assert m["total_selection_forwards"] == 0  # the feature pass on w0 is part of the search:
    assert m["total_search_forwards"] >= n + 3 * keep  # it and the trials' forwards are search work
    assert m["total_search_backwards"] == 3 * keep  # 3 candidates x 1 fine-tune epoch of keep samples
    assert m["search_seconds"] > 0
    path = tracking.client().download_artifacts(res.run_id, "swift_sampler.json", str(tmp_path))
    saved = json.loads(open(path).read())
    assert len(saved["history"]) == 3 and saved["best_val_acc"] == max(h["val_acc"] for h in saved["history"])
    assert torch.tensor(saved["knots"]).shape == (2, KNOTS) and saved["transform"] == "cgf"
    # transfer: a saved sampler skips the search
    res = run_cell(tiny_cell(method="swift_sampler", drop=0.9, epochs=2, seed=1,
                             params={"warmup_epochs": 1, "sampler_path": path, "final": "continue"}), log=lambda *_: None)
    m = res.metrics
    assert m["total_search_backwards"] == 0 and m["total_backwards"] == n + keep
    assert m["total_selection_forwards"] == 0 and m["total_search_forwards"] == n  # only the feature pass


def test_final_training_from_scratch_counts_the_shared_start_as_search(store, one_thread):
    n, keep = 256, round(0.5 * 256)
    params = {"warmup_epochs": 1, "bo_steps": 2, "init_random": 2, "fine_tune_epochs": 1}
    res = run_cell(tiny_cell(method="swift_sampler", drop=0.5, epochs=2, params=params), log=lambda *_: None)
    m = res.metrics
    assert m["total_backwards"] == 2 * keep  # every epoch of the main run draws by the sampler
    assert m["total_search_backwards"] == n + 2 * keep  # shared start (1 uniform epoch) + 2 trials
    assert m["total_selection_forwards"] == 0  # the feature pass on w0 happens inside the search
    assert m["total_search_forwards"] >= 2 * n + 2 * keep
    assert m["search_seconds"] > 0


def test_scratch_mode_restores_the_initial_weights_and_acts_at_drop_zero(one_thread):
    from bench.cell import prepare
    from bench.engine import HarnessContext, Trainer
    from bench.timing import StageTimer

    cfg = tiny_cell(method="swift_sampler", drop=0.0, params={"warmup_epochs": 1, "bo_steps": 1, "init_random": 1,
                                                               "fine_tune_epochs": 1})
    m, data, model = prepare(cfg)
    dev = torch.device("cpu")
    trainer = Trainer(cfg, data, model, dev, StageTimer(dev))
    ctx = HarnessContext(trainer, cfg.drop, cfg.epochs, cfg.seed)
    m.setup(ctx)
    initial = {k: v.clone() for k, v in ctx.model.state_dict().items()}
    trainer.timer.start()
    m.start_epoch(0)
    assert all(torch.equal(v, initial[k]) for k, v in ctx.model.state_dict().items())
    assert ctx.counts.search_backwards > 0 and m.probs is not None
    idx = m.epoch_indices(0).indices
    assert len(idx) == ctx.n_train and len(set(idx.tolist())) < ctx.n_train  # drop 0: draws with replacement
    assert m.refuse(1) is None
    assert "final=scratch" in type(m).build(0.5, {"final": "continue"}).refuse(2)
