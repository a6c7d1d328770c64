"""The regression guard (bench/regress.py): the pure comparison on hand-made numbers, every
verdict, and one cheap end-to-end run: a baseline from a tiny two-method suite, the
unchanged tree passes against it, and a slowdown injected into random_subset's selection
step makes the guard fail with a table naming the method and the metric."""
import json
import time

import pytest

from bench import regress
from bench.regress import DEFAULT_TOLERANCES, NEW, check_metric, compare, failed, table

TOL = json.loads(json.dumps(DEFAULT_TOLERANCES))  # abs 1e-9, speedup rel_drop 0.30, 3 points


def row(bf=0.5, sp=2.0, acc=-1.0):
    return {"backward_fraction": bf, "speedup": sp, "acc_delta_points": acc, "config_key": "k"}


def verdicts(checks):
    return {(c.method, c.metric): c for c in checks}


def test_unchanged_numbers_pass():
    base = {"methods": {"uniform": row(1.0, 1.0, 0.0), "a": row()}, "tolerances": TOL}
    now = {"methods": {"uniform": row(1.0, 1.0, 0.0), "a": row()}, "errors": {}, "reference": {"uniform": {}}}
    checks = compare(base, now)
    assert not failed(checks)
    # the reference gets only the realized-work check: its speedup and delta are 1 and 0 by definition
    assert {c.metric for c in checks if c.method == "uniform"} == {"backward_fraction"}
    assert {c.metric for c in checks if c.method == "a"} == {"backward_fraction", "speedup", "acc_delta_points"}


@pytest.mark.parametrize("metric,base,now,ok", [
    ("backward_fraction", 0.5, 0.5, True),
    ("backward_fraction", 0.5, 0.5 + 5e-10, True),
    ("backward_fraction", 0.5, 0.5 + 1e-6, False),  # realized work changed: fails in either direction
    ("backward_fraction", 0.5, 0.49, False),
    ("speedup", 2.0, 1.41, True),  # -29.5%: inside 30%
    ("speedup", 2.0, 1.39, False),  # -30.5%
    ("speedup", 2.0, 5.0, True),  # faster passes
    ("speedup", 2.0, float("nan"), False),
    ("acc_delta_points", -1.0, -3.9, True),  # -2.9 points
    ("acc_delta_points", -1.0, -4.1, False),  # -3.1 points
    ("acc_delta_points", -1.0, 10.0, True),
])
def test_each_metric_boundary(metric, base, now, ok):
    c = check_metric("a", metric, base, now, TOL)
    assert c.failed is (not ok)
    assert c.verdict.startswith("ok" if ok else "FAIL")


def test_verdicts_new_missing_crashed_faster():
    base = {"methods": {"a": row(), "gone": row(), "broken": row(), "quick": row(sp=2.0)}, "tolerances": TOL}
    now = {"methods": {"a": row(sp=1.0, acc=-5.0), "quick": row(sp=3.0), "fresh": row()},
           "errors": {"broken": "RuntimeError: boom"}, "reference": {}}
    v = verdicts(compare(base, now))
    assert v[("a", "speedup")].verdict == "FAIL: slower" and v[("a", "speedup")].change == "-50.0%"
    assert v[("a", "acc_delta_points")].verdict == "FAIL: less accurate" and v[("a", "acc_delta_points")].change == "-4.00 pt"
    assert v[("a", "backward_fraction")].verdict == "ok"
    assert v[("gone", "-")].failed and "missing" in v[("gone", "-")].verdict
    assert v[("broken", "-")].failed and "RuntimeError: boom" in v[("broken", "-")].verdict
    assert not v[("fresh", "-")].failed and v[("fresh", "-")].verdict == NEW == "new (not in baseline; run --update)"
    assert not v[("quick", "speedup")].failed and "faster" in v[("quick", "speedup")].verdict
    assert {(c.method, c.metric) for c in failed(v.values())} == {
        ("a", "speedup"), ("a", "acc_delta_points"), ("gone", "-"), ("broken", "-")}


def test_only_new_methods_do_not_fail():
    base = {"methods": {"a": row()}, "tolerances": TOL}
    now = {"methods": {"a": row(), "b": row()}, "errors": {}, "reference": {}}
    assert not failed(compare(base, now))


def test_tolerances_come_from_the_baseline_file_with_per_method_overrides():
    tol = json.loads(json.dumps(TOL))
    tol["speedup"]["rel_drop"] = 0.6
    tol["per_method"] = {"b": {"speedup": {"rel_drop": 0.1}, "acc_delta_points": {"drop_points": 0.5}}}
    base = {"methods": {"a": row(sp=2.0), "b": row(sp=2.0)}, "tolerances": tol}
    now = {"methods": {"a": row(sp=1.0), "b": row(sp=1.7, acc=-1.6)}, "errors": {}, "reference": {}}
    v = verdicts(compare(base, now))
    assert not v[("a", "speedup")].failed  # -50% inside the file's 60%
    assert v[("b", "speedup")].failed and v[("b", "speedup")].tolerance == ">= -10%"
    assert v[("b", "acc_delta_points")].failed and v[("b", "acc_delta_points")].tolerance == ">= -0.5 pt"


def test_table_has_every_column_and_row():
    base = {"methods": {"a": row()}, "tolerances": TOL}
    now = {"methods": {"a": row(sp=1.0)}, "errors": {}, "reference": {}}
    text = table(compare(base, now))
    header = text.splitlines()[0].split()
    assert header == ["method", "metric", "baseline", "now", "change", "tolerance", "verdict"]
    line = next(ln for ln in text.splitlines() if "speedup" in ln)
    assert line.split()[:6] == ["a", "speedup", "2.000x", "1.000x", "-50.0%", ">="] and "FAIL: slower" in line


def test_missing_baseline_is_one_clear_line_and_trains_nothing(tmp_path, monkeypatch, capsys):
    from bench import cli

    monkeypatch.setenv("BENCH_RESULTS", str(tmp_path))
    monkeypatch.setattr(regress, "measure", lambda *a, **k: pytest.fail("must not train without a baseline"))
    suite = _tiny_suite(tmp_path)
    assert cli.main(["regress", "--suite", str(suite)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no regression baseline" in err and "--update" in err and "\n" not in err


def _tiny_suite(tmp_path):
    p = tmp_path / "regress_tiny.yaml"
    p.write_text(
        "name: regress_tiny\n"
        "expected_runtime: under a minute\n"
        "defaults: {epochs: 2, batch_size: 64, train_limit: 256, eval_limit: 128, device: cpu, progress: false}\n"
        "blocks:\n"
        "  - {models: [tiny_cnn], datasets: [fashion_mnist], methods: [uniform, random_subset], drops: [0.5], seeds: [0]}\n"
    )
    return p


def test_guard_end_to_end_passes_unchanged_and_catches_an_injected_slowdown(tmp_path, monkeypatch, store, capsys):
    from baselines.random_subset import RandomSubset
    from bench import cli
    from bench.method import Method

    monkeypatch.setenv("BENCH_RESULTS", str(tmp_path / "results"))
    suite = str(_tiny_suite(tmp_path))
    path = tmp_path / "results" / "regress" / "baseline.json"

    # 1. --update writes the baseline, with its provenance
    assert cli.main(["regress", "--update", "--suite", suite]) == 0
    base = json.loads(path.read_text())
    assert set(base["methods"]) == {"uniform", "random_subset"}
    assert base["methods"]["random_subset"]["backward_fraction"] == pytest.approx(0.5, abs=0.01)
    assert base["methods"]["uniform"]["backward_fraction"] == 1.0
    assert len(base["reference"]["uniform"]["e2e_seconds"]) == regress.REFERENCE_RUNS
    for k in ("hardware", "torch", "created", "git_commit", "tolerances"):
        assert base[k]
    # the guard trains into its own temporary store: the user's store (here the test's) stays empty
    assert not (store / "mlflow.db").exists()

    # 2. the measurement passes against the baseline derived from it
    assert not failed(compare(base, {**base, "errors": {}}))

    # 3. the unchanged tree passes on a fresh measurement (speedup tolerance widened in the file: tiny cells on a
    #    shared 2-core machine are noisy; the file is where tolerances live)
    base["tolerances"]["speedup"]["rel_drop"] = 0.6
    path.write_text(json.dumps(base))
    capsys.readouterr()
    assert cli.main(["regress", "--suite", suite]) == 0, capsys.readouterr().out
    assert "regress: PASS" in capsys.readouterr().out

    # 4. slow random_subset's selection step: sleep per batch so its end-to-end time grows to ~7x its baseline
    #    (speedup down ~85%), far beyond the 60% allowed whatever the noise (it must fail on the re-run too)
    rs = base["methods"]["random_subset"]
    delay = 6 * rs["e2e_seconds"] / max(1, rs["total_steps"])

    def slow_select(self, batch):
        time.sleep(delay)
        return Method.select(self, batch)

    monkeypatch.setattr(RandomSubset, "select", slow_select)
    assert cli.main(["regress", "--suite", suite]) == 1
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("random_subset") and " speedup " in ln)
    assert "FAIL: slower" in line
    assert "regress: FAIL" in out and "random_subset speedup" in out
    assert "re-measured" in out  # a failing speedup is measured twice before it counts
    ok = [ln for ln in out.splitlines() if ln.startswith(("uniform", "random_subset")) and " speedup " not in ln
          and ("backward_fraction" in ln or "acc_delta_points" in ln)]
    assert ok and all(" ok" in ln for ln in ok)  # same work, same accuracy: only the speed check fails
