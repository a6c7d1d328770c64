"""The runner schedules each method's two random controls itself, as soon as the method's run is
done; cells of a seed run in a seeded shuffle; probes give time to target between epoch ends."""
import pytest

from bench import report, tracking
from bench.runner import ordered, run_suite
from bench.suite import Block, MethodSpec, Suite

DEFAULTS = {"epochs": 3, "batch_size": 64, "train_limit": 512, "eval_limit": 256, "device": "cpu", "progress": False}


def _suite(methods, seeds=(0,)):
    block = Block(("tiny_cnn",), ("fashion_mnist",), tuple(MethodSpec(m, p) for m, p in methods), (0.5,), seeds)
    return Suite(name="ctl", blocks=(block,), defaults=DEFAULTS)


def test_cells_run_seed_by_seed_in_a_seeded_shuffle_that_favours_no_method():
    names = ["uniform", "random_subset", "infobatch", "psgd", "csgd", "swiftlearn"]
    suite = _suite([(m, {}) for m in names], seeds=tuple(range(12)))
    order = ordered(suite.cells())
    assert [c.seed for c in order] == sorted(c.seed for c in order)  # seed by seed
    assert order == ordered(suite.cells())  # reproducible
    first = [next(c.method for c in order if c.seed == s) for s in range(12)]
    last = [[c.method for c in order if c.seed == s][-1] for s in range(12)]
    assert len(set(first)) >= 3 and len(set(last)) >= 3  # no method is always first or always last
    assert first.count("uniform") < 12 and last.count("uniform") < 12


def test_each_method_gets_its_selection_and_cost_controls(store, fixed_costs, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_RESULTS", str(tmp_path / "results"))
    suite = _suite([("uniform", {}), ("selective_backprop", {}), ("swiftlearn", {"warmup_epochs": 2})])
    lines = []
    out = run_suite(suite, log=lines.append)
    # SB has both controls (its scoring passes cost work); SwiftLearn only a selection control (no extra passes)
    assert not out.failed and out.ran == 3 and out.controls == 3, lines
    runs = tracking.client().search_runs([tracking.experiment_id()])
    roles = sorted(r.data.tags.get("role", "") for r in runs)
    assert roles.count("selection control") == 2 and roles.count("cost control") == 1
    sb = next(r for r in runs if r.data.params["method"] == "selective_backprop")
    sel = next(r for r in runs if r.data.tags.get("role") == "selection control"
               and r.data.tags["batch_plan"] == sb.data.tags["batch_plan"])
    assert sel.data.metrics["total_backwards"] == sb.data.metrics["total_backwards"]
    # a second run finds everything finished, the controls included
    assert run_suite(suite, log=lambda *_: None).ran == 0
    s = report.summary(report.collect(suite), suite)
    row = s[(s["method"] == "selective_backprop") & (s["control_of"] == "")].iloc[0]
    assert not pytest.approx(0) == row["acc_vs_selection_pts_n"] and row["acc_vs_cost_pts_n"] == 1
    assert 0.97 <= row["cost_work_ratio"] <= 1.03
    ctl_rows = s[s["control_of"] == "selective_backprop"]
    assert sorted(ctl_rows["control_kind"]) == ["cost", "selection"]


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
