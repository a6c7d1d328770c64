"""Tables from MLflow: a tiny real store (4 cells on CPU), plus hand-made frames for the statistics."""
import math
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from bench import report, tracking
from bench.cell import run_cell
from bench.device import hardware_name, pick_device
from bench.errors import BenchError
from bench.suite import load_suite

SUITE = {
    "name": "tiny_report",
    "description": "tiny_cnn on a slice of Fashion-MNIST, for the report tests",
    "defaults": {"epochs": 2, "batch_size": 64, "train_limit": 256, "eval_limit": 128, "device": "cpu", "progress": False},
    "target_offset": 0.5,
    "paper": "paper/tiny.yaml",
    "blocks": [{"models": ["tiny_cnn"], "datasets": ["fashion_mnist"], "methods": ["uniform", "random_subset"],
                "drops": [0.5], "seeds": [0, 1]}],
}
PAPER = {"source": "a made-up paper", "figures": [
    {"method": "random_subset", "drop": 0.5, "metric": "e2e_speedup", "value": 2.0, "note": "made up"},
    {"method": "random_subset", "drop": 0.9, "metric": "e2e_speedup", "value": 9.0},
]}


def _fake_run(cfg, hardware, metrics=None, finish=True, fail=False):
    """A run logged by hand with a cell's tags: finished, failed, or left running."""
    run = tracking.CellRun(cfg.key(hardware), name="fake")
    run.params({"model": cfg.model, "dataset": cfg.dataset, "method": cfg.method, "drop": cfg.drop, "seed": cfg.seed,
                "epochs": cfg.epochs, "label_noise": cfg.label_noise})
    run.tags({"config_key": cfg.config_key(), "hardware": hardware, "faithful": True, "git_commit": "fake"})
    if metrics:
        run.metrics(metrics, cfg.epochs)
    if fail:
        run.fail("FAILED", "boom")
    elif finish:
        run.finish()
    return run.run_id


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The `store` fixture of conftest at module scope: the four real cells train once for all tests here."""
    root = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.setenv("BENCH_CHECKPOINTS", str(root / "ckpt"))
        mp.setenv("BENCH_RESULTS", str(root / "results"))
        (root / "results" / "paper").mkdir(parents=True)
        (root / "results" / "paper" / "tiny.yaml").write_text(yaml.safe_dump(PAPER))
        path = root / "tiny_report.yaml"
        path.write_text(yaml.safe_dump(SUITE))
        suite = load_suite(str(path))
        real = {}
        for cfg in suite.cells():
            res = run_cell(cfg, log=lambda *_: None)
            assert res.status == "finished"
            real[res.run_id] = cfg
        hw = hardware_name(pick_device("cpu"))
        cfg = suite.cells()[-1]
        bad = [
            _fake_run(cfg, hw, {"final_test_acc": 0.0}, finish=False),  # still running
            _fake_run(cfg, hw, {"final_test_acc": 0.0}, fail=True),  # failed
        ]
        rid = _fake_run(cfg, hw, {"final_test_acc": 0.0}, finish=False)  # FINISHED status, but the cell never said so
        tracking.client().set_terminated(rid, "FINISHED")
        bad.append(rid)
        yield SimpleNamespace(suite=suite, root=root, real=real, bad=bad, hardware=hw)


def test_collect_one_row_per_finished_cell(built):
    df = report.collect(built.suite)
    assert len(df) == len(built.suite.cells()) == 4
    assert set(df["run_id"]) == set(built.real)  # the newer unfinished / failed runs are ignored
    assert not set(df["run_id"]) & set(built.bad)
    assert set(df["config_key"]) == {c.config_key() for c in built.suite.cells()}
    for r in df.itertuples():
        cfg = built.real[r.run_id]
        assert (r.model, r.dataset, r.method, r.drop, r.seed, r.label_noise) == \
            (cfg.model, cfg.dataset, cfg.method, cfg.drop, cfg.seed, cfg.label_noise)
        assert r.hardware == built.hardware and bool(r.faithful)
        assert r.hist_epoch == [0, 1]
        assert len(r.hist_val_acc) == 2 and r.hist_val_acc[-1] == pytest.approx(r.final_val_acc)
        assert 0 < r.hist_work_seconds[0] < r.hist_work_seconds[1] <= r.e2e_seconds + 1e-9
        assert r.stage_backward_seconds > 0 and r.total_backwards > 0


def test_summary_on_real_runs(built):
    s = report.summary(report.collect(built.suite), built.suite)
    assert list(s["method"]) == ["uniform", "random_subset"]
    u, rs = s.iloc[0], s.iloc[1]
    assert u["drop"] == 0.0 and rs["drop"] == 0.5
    assert u["n_seeds"] == rs["n_seeds"] == 2 and rs["train_speedup_n"] == 2
    assert u["train_speedup"] == 1.0 and u["e2e_speedup"] == 1.0 and u["acc_change_pts"] == 0.0
    assert rs["backward_fraction"] == pytest.approx(0.5, abs=0.01)
    assert u["backward_fraction"] == pytest.approx(1.0)
    assert rs["train_speedup"] > 0 and rs["e2e_speedup"] > 0
    for r in (u, rs):
        assert r["test_acc_ci_low"] - 1e-12 <= r["test_acc_mean"] <= r["test_acc_ci_high"] + 1e-12
    runs = report.collect(built.suite)
    target = runs.loc[runs["method"] == "uniform", "final_val_acc"].median() - 0.005
    assert u["ttt_near_target"] == pytest.approx(target)
    reached = (runs.loc[runs["method"] == "uniform", "hist_val_acc"].map(max) >= target - 1e-12).sum()
    assert u["ttt_near_reached"] == reached >= 1  # at least the uniform run at or above the median
    assert rs["paper"] == "e2e_speedup 2 (made up)" and u["paper"] == ""


def test_speedup_pairs_by_seed():
    from bench.report import stats

    ref = pd.DataFrame({"seed": [0, 1], "train_seconds": [10.0, 100.0]})
    m = pd.DataFrame({"seed": [0, 1, 2], "train_seconds": [5.0, 100.0, 1.0]})  # seed 2 has no uniform partner
    e = stats.speedup_estimate(ref, m, "train_seconds")
    assert e.n == 2 and e.value == pytest.approx(math.sqrt(10 / 5 * 100 / 100))  # geometric mean of 2 and 1
    unpaired = ref["train_seconds"].mean() / m["train_seconds"].mean()
    assert abs(e.value - unpaired) > 0.05
    same = stats.speedup_estimate(ref, ref, "train_seconds")
    assert (same.value, same.low, same.high, same.n) == (1.0, 1.0, 1.0, 2)
    assert math.isnan(stats.speedup_estimate(ref, m[m.seed == 2], "train_seconds").value)


def test_time_to_target_hand_made():
    acc, sec = [0.30, 0.60, 0.55, 0.80], [1.0, 2.0, 3.0, 4.0]
    assert report.time_to_target(acc, sec, 0.6) == 2.0
    assert report.time_to_target(acc, sec, 0.7) == 4.0
    assert report.time_to_target(acc, sec, 0.25) == 1.0
    assert math.isnan(report.time_to_target(acc, sec, 0.81))


def _row(method, drop, seed, val, test, secs, hist_acc, hist_sec):
    return {"hardware": "cpu", "model": "m", "dataset": "d", "label_noise": 0.0, "epochs": len(hist_acc),
            "setting": "s", "method": method, "variant": "", "drop": drop, "seed": seed, "faithful": method != "x",
            "git_commit": "c", "config_key": f"{method}{seed}", "run_id": f"{method}{seed}", "start_time": 0,
            "final_val_acc": val, "final_test_acc": test, "best_val_acc": max(hist_acc), "train_seconds": secs,
            "e2e_seconds": secs + 1, "search_seconds": 0.0, "eval_seconds": 1.0, "backward_fraction": 1 - drop,
            "forward_fraction": 1 - drop, "realized_drop": drop, "hist_epoch": list(range(len(hist_acc))),
            "hist_val_acc": hist_acc, "hist_work_seconds": hist_sec, "control_of": "", "params": "{}",
            "curve_val_acc": hist_acc, "curve_seconds": hist_sec, "curve_kind": "epochs"}


def test_summary_hand_made():
    df = pd.DataFrame([
        _row("uniform", 0.0, 0, 0.80, 0.79, 10.0, [0.5, 0.80], [5.0, 10.0]),
        _row("uniform", 0.0, 1, 0.82, 0.81, 20.0, [0.6, 0.82], [10.0, 20.0]),
        _row("x", 0.5, 0, 0.81, 0.80, 5.0, [0.81, 0.81], [2.5, 5.0]),  # reaches 0.805 at 2.5 s
        _row("x", 0.5, 1, 0.70, 0.70, 10.0, [0.6, 0.70], [5.0, 10.0]),  # never does
    ])
    suite = SimpleNamespace(name="hand", paper={}, target_offset=0.5)
    s = report.summary(df, suite)
    u, x = s.iloc[0], s.iloc[1]
    assert u["ttt_near_target"] == pytest.approx(0.805) and u["ttt_far_target"] == pytest.approx(0.79)
    assert u["ttt_near_s"] == 20.0 and u["ttt_near_reached"] == 1  # seed 1 only (epoch 1); seed 0 ends at 0.80 < 0.805
    assert x["ttt_near_s"] == 2.5 and x["ttt_near_reached"] == 1
    assert math.isnan(x["ttt_near_speedup"]) and x["ttt_near_speedup_n"] == 0  # no seed where both reach it
    # far target 0.79: seed 0 pairs (uniform 10 s, x 2.5 s); seed 1's x never reaches it
    assert x["ttt_far_s"] == 2.5 and x["ttt_far_speedup"] == pytest.approx(10.0 / 2.5) and x["ttt_far_speedup_n"] == 1
    assert x["train_speedup"] == pytest.approx(2.0) and x["e2e_speedup"] == pytest.approx(math.sqrt(11 / 6 * 21 / 11))
    assert x["acc_change_pts"] == pytest.approx(((0.80 - 0.79) + (0.70 - 0.81)) / 2 * 100)
    assert x["faithful"] == False  # noqa: E712
    md = report.render(s)
    assert "2.5 (1/2 seeds)" in md and "**no**" in md
    never = report.summary(df[df.seed == 1].assign(curve_val_acc=[[0.1, 0.2], [0.1, 0.2]]), suite)
    assert "not reached" in report.render(never)


def test_render_highlights_one_method(built):
    s = report.summary(report.collect(built.suite), built.suite)
    md = report.render(s, highlight="random_subset")
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")][1:]
    assert len(lines) == 2
    assert "▶ **random_subset**" in lines[1] and "▶" not in lines[0]
    assert "▶" not in report.render(s)


def test_write_files_and_is_deterministic(built, tmp_path):
    out = report.write(built.suite, tmp_path / "a")
    names = {p.name for p in out.iterdir()}
    assert {"summary.md", "summary.csv", "runs.csv", "accuracy_vs_time.png", "speedup_vs_realized_drop.png",
            "stage_breakdown.png", "accuracy_vs_work.png"} <= names
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "summary.md").read_text()
    assert "# Suite tiny_report" in md and "near = uniform's median final minus 0.5 points" in md
    assert "git commits:" in md and "- diverged: none" in md and "- not faithful to their papers: none" in md
    assert "runs: 4 of the suite's 4 cells finished" in md and "a made-up paper" in md
    csv = pd.read_csv(out / "summary.csv")
    assert len(csv) == 2 and {"train_speedup", "e2e_speedup", "ttt_near_s", "ttt_near_speedup", "paper"} <= set(csv.columns)
    again = report.write(built.suite, tmp_path / "b")
    for name in ("summary.md", "summary.csv", "runs.csv"):
        assert (out / name).read_bytes() == (again / name).read_bytes()
    default = report.write(built.suite)
    assert default == built.root / "results" / "tiny_report"
    assert (default / "summary.md").read_bytes() == (out / "summary.md").read_bytes()


def test_no_finished_runs_is_an_error(built, store):
    with pytest.raises(BenchError, match=r"no finished runs for suite tiny_report; run `nox -s reproduce -- tiny_report`"):
        report.write(built.suite, store / "out")


def test_newest_finished_run_per_hardware_wins(built, store):
    cfg = built.suite.cells()[0]
    _fake_run(cfg, "gpu-a", {"final_test_acc": 0.1})
    time.sleep(0.02)
    newest = _fake_run(cfg, "gpu-a", {"final_test_acc": 0.2})
    time.sleep(0.02)
    _fake_run(cfg, "gpu-a", {"final_test_acc": 0.3}, finish=False)
    other = _fake_run(cfg, "gpu-b", {"final_test_acc": 0.4})
    df = report.collect(built.suite)
    assert sorted(df["run_id"]) == sorted([newest, other])
    assert dict(zip(df["hardware"], df["final_test_acc"])) == {"gpu-a": 0.2, "gpu-b": 0.4}
    s = report.summary(df, built.suite)  # runs without histories or a uniform partner still summarise
    assert len(s) == 2 and s["train_speedup"].isna().all()


def test_early_leads_pair_by_seed_and_show_each_epoch():
    from bench.report.table import early_leads

    df = pd.DataFrame([
        _row("uniform", 0.0, 0, 0.80, 0.79, 10.0, [0.50, 0.70, 0.80], [1, 2, 3]),
        _row("uniform", 0.0, 1, 0.82, 0.81, 10.0, [0.60, 0.72, 0.82], [1, 2, 3]),
        _row("x", 0.0, 0, 0.80, 0.79, 10.0, [0.55, 0.70, 0.79], [1, 2, 3]),
        _row("x", 0.0, 1, 0.82, 0.81, 10.0, [0.63, 0.74, 0.82], [1, 2, 3]),
    ])
    assert early_leads(SimpleNamespace(early_epochs=0), df) == ""
    md = early_leads(SimpleNamespace(early_epochs=2), df)
    assert "after epoch 1 | after epoch 2 |" in md and "after epoch 3" not in md
    row = next(ln for ln in md.splitlines() if ln.startswith("| x"))
    # (5, 3) and (0, 2) points: mean 4 and 1, t interval of two values: mean +- 12.71 x 1
    assert "+4.00 (-8.71 to +16.71)" in row and "+1.00 (-11.71 to +13.71)" in row
    assert "| uniform (accuracy) | 55.00 | 71.00 |" in md


def test_artifacts_command_copies_a_logged_artifact_per_cell(built, tmp_path, capsys):
    import json

    from bench.cli import main

    for rid, cfg in built.real.items():
        if cfg.method == "random_subset":
            src = tmp_path / "src" / str(cfg.seed) / "picked.json"
            src.parent.mkdir(parents=True)
            src.write_text(json.dumps({"seed": cfg.seed}))
            tracking.client().log_artifact(rid, str(src))
    out = tmp_path / "out"
    assert main(["artifacts", built.suite.path, "random_subset", "picked.json", "--out", str(out)]) == 0
    got = sorted(out.iterdir())
    assert [json.loads(p.read_text())["seed"] for p in got] == [0, 1]
    assert all("seed" in p.name and p.name.endswith("picked.json") for p in got)
    assert main(["artifacts", built.suite.path, "uniform", "picked.json", "--out", str(out)]) == 2
    assert "has no artifact picked.json" in capsys.readouterr().err


def test_low_speedup_efficiency_names_the_stage_that_eats_it():
    rows = []
    for seed in (0, 1):
        u = _row("uniform", 0.0, seed, 0.8, 0.8, 10.0, [0.8], [10.0])
        x = _row("x", 0.5, seed, 0.8, 0.8, 10.0, [0.8], [10.0])  # half the work, no faster: efficiency 0.5
        u.update(train_work_fraction=1.0, stage_method_seconds=0.1, stage_forward_seconds=3.0)
        x.update(train_work_fraction=0.5, stage_method_seconds=4.0, stage_forward_seconds=1.5)
        rows += [u, x]
    s = report.summary(pd.DataFrame(rows), SimpleNamespace(name="hand", paper={}, target_offset=0.5))
    x = s[s["method"] == "x"].iloc[0]
    assert x["speedup_efficiency"] == pytest.approx(0.5)
    assert "speedup efficiency 0.50 < 0.85: its method stage takes 40% of its train time (uniform's: 1%)" in x["notes"]
    assert "efficiency" not in s[s["method"] == "uniform"].iloc[0]["notes"]


def test_the_metered_clock_is_read_only_where_uniform_was_metered_often_enough():
    """Under 500 reference steps of uniform train time a cell gets a reading or two: the raw clock is read
    (no metered columns, and the efficiency flag judges raw); at 500 or more the metered one is."""
    def table(ref_steps):
        rows = []
        for seed in (0, 1):
            u = _row("uniform", 0.0, seed, 0.8, 0.8, 10.0, [0.8], [10.0])
            x = _row("x", 0.5, seed, 0.8, 0.8, 4.0, [0.8], [4.0])  # raw: 2.5x at half the work, efficiency 1.25
            u.update(train_work_fraction=1.0, train_metered_steps=ref_steps)
            x.update(train_work_fraction=0.5, train_metered_steps=ref_steps / 2)  # metered: 2x, efficiency 1.0
            rows += [u, x]
        s = report.summary(pd.DataFrame(rows), SimpleNamespace(name="hand", paper={}, target_offset=0.5))
        return s[s["method"] == "x"].iloc[0]

    few = table(110.0)
    assert math.isnan(few["metered_speedup"]) and math.isnan(few["metered_efficiency"])
    assert "speedup efficiency 1.25 > 1.05" in few["notes"] and "metered" not in few["notes"]
    many = table(1000.0)
    assert many["metered_speedup"] == pytest.approx(2.0) and many["metered_efficiency"] == pytest.approx(1.0)
    assert "> 1.05" not in many["notes"]


def test_two_variants_of_one_method_keep_their_own_controls():
    """Each variant's control is its own row (3 seeds, not 6 merged), compared with its own variant only."""
    rows = [_row("uniform", 0.0, s, 0.80, 0.80, 10.0, [0.8, 0.8], [5.0, 10.0]) for s in range(3)]
    for variant, acc, ctl_acc in (("", 0.70, 0.78), ("exit_layer=2", 0.75, 0.76)):
        for s in range(3):
            rows.append({**_row("x", 0.5, s, acc, acc, 5.0, [acc, acc], [2.5, 5.0]), "variant": variant})
            rows.append({**_row("random_subset", 0.5, s, ctl_acc, ctl_acc, 5.0, [ctl_acc] * 2, [2.5, 5.0]),
                         "control_of": "x", "control_of_variant": variant, "control_kind": "selection"})
    s = report.summary(pd.DataFrame(rows), SimpleNamespace(name="hand", paper={}, target_offset=0.5))
    ctl = s[s["control_of"] == "x"]
    assert sorted(ctl["control_of_variant"]) == ["", "exit_layer=2"] and list(ctl["n_seeds"]) == [3, 3]
    x = s[(s["method"] == "x") & (s["control_of"] == "")].set_index("variant")
    assert x.loc["", "acc_vs_selection_pts"] == pytest.approx(-8.0)
    assert x.loc["exit_layer=2", "acc_vs_selection_pts"] == pytest.approx(-1.0)
    assert "selection control [x (exit_layer=2)]" in report.render(s)


def test_headline_names_carry_only_the_parameters_that_tell_variants_apart():
    from bench.report.table import _names

    rows = pd.DataFrame([
        {"method": "impon", "drop": 0.0, "variant": "preset=paper", "control_of": ""},
        {"method": "impon", "drop": 0.0, "variant": "center=True,preset=paper", "control_of": ""},
        {"method": "sift", "drop": 0.5, "variant": "exit_layer=2", "control_of": ""},
    ])
    assert _names(rows) == {0: "impon", 1: "impon (center=True)", 2: "sift"}


def test_a_run_that_kept_uniforms_plan_has_uniform_as_its_selection_control():
    from bench.report.summary import with_uniform_selection

    runs = pd.DataFrame({"method": ["sift", "sift"], "seed": [0, 1], "plan_is_uniform": [True, False]})
    sel = pd.DataFrame({"method": ["random_subset"], "seed": [1], "control_kind": ["selection"]})
    ref = pd.DataFrame({"method": ["uniform", "uniform"], "seed": [0, 1], "control_kind": ["", ""]})
    out = with_uniform_selection(runs, sel, ref)
    assert sorted(zip(out["seed"], out["method"])) == [(0, "uniform"), (1, "random_subset")]
    assert set(out["control_kind"]) == {"selection"}
    assert with_uniform_selection(runs.assign(plan_is_uniform=False), sel, ref).equals(sel)
