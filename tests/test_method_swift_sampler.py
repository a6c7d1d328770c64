"""Swift Sampler: valid sampler, monotone transforms onto [0, 1], a BO loop that improves, counted search."""
import json

import pytest
import torch

from bench.errors import BenchError
from bench.method import num_batches
from fakes import drive, make, cell
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


N, B = 256, 64


def search_params(**kw):
    return {"warmup_epochs": 1, "bo_steps": 3, "init_random": 2, "fine_tune_epochs": 1, **kw}


def accuracies(*values):
    """A trial accuracy per candidate, in turn."""
    it = iter(values)
    return lambda method: next(it)


@pytest.mark.parametrize("drop", [0.0, 0.5])
def test_trial_method_draws_keep_n_by_the_sampler(drop):
    probs = torch.zeros(100, dtype=torch.float64)
    probs[:60] = 1 / 60
    rec = drive(_SamplerTrial(drop, probs), epochs=2, n=100, batch_size=16)
    for ep in rec.epochs:
        idx = ep.indices
        assert ep.samples == ep.planned == round((1 - drop) * 100) and (idx < 60).all()
        if drop > 0:  # without replacement
            assert len(torch.unique(idx)) == len(idx)
        else:  # with replacement: 100 draws from 60 samples must repeat
            assert len(torch.unique(idx)) < len(idx)


def test_search_is_counted_and_the_best_candidate_is_logged(one_thread):
    keep = round(0.1 * N)
    rec = drive("swift_sampler", epochs=2, drop=0.9, params=search_params(final="continue"), n=N, batch_size=B,
                trial_accuracy=accuracies(0.3, 0.7, 0.5))
    c = rec.counts
    assert [ep.samples for ep in rec.epochs] == [N, keep]  # final=continue: the shared start is the main run's
    assert c.backwards == N + keep and c.steps == num_batches(N, B) + num_batches(keep, B)
    assert c.selection_forwards == 0  # the feature pass on w0 is part of the search:
    assert c.search_forwards == N + 3 * keep  # it and the trials' forwards are search work
    assert c.search_backwards == 3 * keep  # 3 candidates x 1 fine-tune epoch of keep samples
    assert rec.epochs[1].counts.search_backwards == c.search_backwards  # searched when epoch 1 drew its samples
    saved = rec.ctx.artifacts["swift_sampler.json"]
    hist = saved["history"]
    assert [h["val_acc"] for h in hist] == [0.3, 0.7, 0.5] and saved["best_val_acc"] == 0.7
    assert saved["knots"] == [hist[1]["knots"][i * KNOTS:(i + 1) * KNOTS] for i in range(2)]  # the best candidate's
    assert torch.tensor(saved["knots"]).shape == (2, KNOTS) and saved["transform"] == "cgf"
    assert all(0 <= v <= 1 for h in hist for v in h["knots"])


def test_a_saved_sampler_skips_the_search_and_drives_the_final_draws(tmp_path):
    # a sampler that only weights the top quarter of the loss (cdf), whatever the entropy
    path = tmp_path / "swift_sampler.json"
    path.write_text(json.dumps({"knots": [[0, 0, 0, 0, 1], [1, 1, 1, 1, 1]], "transform": "cdf", "combine": "product"}))
    losses = torch.rand(N, generator=torch.Generator().manual_seed(3))
    keep = round(0.1 * N)
    rec = drive("swift_sampler", epochs=3, drop=0.9, params={"warmup_epochs": 1, "sampler_path": str(path),
                                                             "final": "continue"}, n=N, batch_size=B, losses=losses)
    c = rec.counts
    assert c.search_backwards == 0 and c.search_forwards == N  # only the feature pass
    assert c.backwards == N + 2 * keep and c.selection_forwards == 0
    for ep in rec.epochs[1:]:
        assert ep.samples == keep and len(torch.unique(ep.indices)) == keep  # drop > 0: without replacement
        assert (losses[ep.indices] > losses.quantile(0.75)).all()
    with pytest.raises(BenchError, match="not a file"):
        make("swift_sampler", 0.5, sampler_path=str(tmp_path / "missing.json"))


def test_final_training_from_scratch_counts_the_shared_start_as_search(one_thread):
    keep = round(0.5 * N)
    rec = drive("swift_sampler", epochs=2, drop=0.5, params=search_params(bo_steps=2), n=N, batch_size=B)
    c = rec.counts
    assert [ep.samples for ep in rec.epochs] == [keep, keep]  # every epoch of the main run draws by the sampler
    assert c.search_backwards == N + 2 * keep  # shared start (1 uniform epoch) + 2 trials
    assert c.selection_forwards == 0  # the feature pass on w0 happens inside the search
    assert c.search_forwards == 2 * N + 2 * keep
    assert rec.epochs[0].counts.search_backwards == c.search_backwards  # all of it before the first step


def test_scratch_mode_searches_from_w0_then_restores_the_initial_weights(one_thread):
    model = torch.nn.Linear(4, 10)
    initial = float(model.weight.detach().sum())
    seen = []

    def step(m, batch):  # a training step moves every weight by 1
        seen.append((m is model, float(m.weight.detach().sum())))
        m.weight.data += 1.0

    feature_pass = []

    def losses(idx, epoch):
        if len(idx) == N:  # the feature pass scores all data at once
            feature_pass.append(float(model.weight.detach().sum()))
        return torch.rand(len(idx), generator=torch.Generator().manual_seed(len(seen)))

    params = {"warmup_epochs": 1, "bo_steps": 1, "init_random": 1, "fine_tune_epochs": 1}
    rec = drive("swift_sampler", epochs=1, drop=0.0, params=params, n=N, batch_size=B, model=model, step=step,
                losses=losses)
    steps_w0 = num_batches(N, B)  # the shared start's uniform epoch, on a copy
    assert feature_pass == [pytest.approx(initial + steps_w0 * model.weight.numel())]  # features of w0
    main = [w for is_main, w in seen if is_main]
    assert main[0] == pytest.approx(initial)  # the main run starts from the initial weights
    assert rec.counts.search_backwards > 0
    idx = rec.epochs[0].indices
    assert len(idx) == N and len(torch.unique(idx)) < N  # drop 0: N draws with replacement


def test_only_continue_mode_needs_epochs_after_the_shared_start():
    assert make("swift_sampler", 0.0).refuse(cell(1)) is None
    assert "final=scratch" in make("swift_sampler", 0.5, final="continue").refuse(cell(2))
    assert make("swift_sampler", 0.5, final="continue").refuse(cell(3)) is None
