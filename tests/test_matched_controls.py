"""The runner schedules each method's matched control itself, seed by seed after the
reference; probes give time to target between epoch ends."""
import pytest

from bench import report, tracking
from bench.runner import interleaved, run_suite
from bench.suite import Block, MethodSpec, Suite

DEFAULTS = {"epochs": 3, "batch_size": 64, "train_limit": 512, "eval_limit": 256, "device": "cpu", "progress": False}


def _suite(methods, seeds=(0,)):
    block = Block(("tiny_cnn",), ("fashion_mnist",), tuple(MethodSpec(m, p) for m, p in methods), (0.5,), seeds)
    return Suite(name="ctl", blocks=(block,), defaults=DEFAULTS)


def test_cells_run_seed_by_seed_reference_first():
    suite = _suite([("random_subset", {}), ("uniform", {})], seeds=(0, 1))
    order = [(c.seed, c.method) for c in interleaved(suite.cells())]
    assert order == [(0, "uniform"), (0, "random_subset"), (1, "uniform"), (1, "random_subset")]


def test_warmup_method_gets_a_control_with_its_realized_budget(store, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_RESULTS", str(tmp_path / "results"))
    suite = _suite([("uniform", {}), ("swiftlearn", {"warmup_epochs": 2})])
    lines = []
    out = run_suite(suite, log=lines.append)
    assert not out.failed and out.ran == 3, lines  # uniform, swiftlearn, then its control
    assert any(ln.startswith("[control]") for ln in lines)
    runs = {r.data.params["method"]: r for r in tracking.client().search_runs([tracking.experiment_id()])}
    sl, ctl = runs["swiftlearn"], runs["random_subset"]
    assert ctl.data.params["method.warmup_epochs"] == "2" and ctl.data.tags["role"] == "control"
    assert abs(sl.data.metrics["total_backwards"] - ctl.data.metrics["total_backwards"]) <= DEFAULTS["batch_size"]
    # a second run finds everything finished, the control included
    again = []
    assert run_suite(suite, log=again.append).ran == 0
    s = report.summary(report.collect(suite), suite)
    row = s[(s["method"] == "random_subset") & (s["control_of"] == "swiftlearn")]
    assert len(row) == 1 and row.iloc[0]["realized_drop"] == pytest.approx(1 - sl.data.metrics["backward_fraction"], abs=0.05)


def test_probes_are_logged_between_epoch_ends(store):
    from bench.cell import run_cell
    from conftest import tiny_cell

    res = run_cell(tiny_cell(epochs=2, batch_size=32, train_limit=256))  # 8 steps an epoch: a probe every 2
    hist = tracking.client().get_metric_history(res.run_id, "probe_val_acc")
    assert sorted(m.step for m in hist) == [2, 4, 6, 8, 10, 12, 14, 16]
    secs = [m.value for m in sorted(tracking.client().get_metric_history(res.run_id, "probe_train_seconds"),
                                    key=lambda m: m.step)]
    assert secs == sorted(secs) and secs[-1] <= res.metrics["train_seconds"] + 1e-9


def test_compare_measures_its_references_afresh_in_one_session(store, tmp_path, monkeypatch):
    from bench.cli import main

    monkeypatch.setenv("BENCH_RESULTS", str(tmp_path / "results"))
    path = tmp_path / "cmp.yaml"
    path.write_text("name: cmp\ndefaults: {epochs: 2, batch_size: 64, train_limit: 256, eval_limit: 128, "
                    "device: cpu, progress: false}\nblocks:\n  - {models: [tiny_cnn], datasets: [fashion_mnist], "
                    "methods: [uniform, random_subset], drops: [0.5], seeds: [0]}\n")

    def runs_of(method):
        return [r for r in tracking.client().search_runs([tracking.experiment_id()])
                if r.data.params.get("method") == method and r.info.status == "FINISHED"]

    assert main(["suite", str(path)]) == 0
    assert main(["compare", "random_subset", str(path), "--session", "s1"]) == 0
    assert len(runs_of("uniform")) == 2 and len(runs_of("random_subset")) == 2  # measured again, side by side
    assert main(["compare", "random_subset", str(path), "--session", "s1"]) == 0  # the same session resumes
    assert len(runs_of("uniform")) == 2
    assert (tmp_path / "results" / "cmp" / "s1" / "summary.md").exists()
