"""The regression guard's pure parts (bench/regress/): every verdict on hand-made numbers,
tolerances derived from spread, the re-measurement merge, the table, the CPU-time clock.
The end-to-end run with injected CPU work is in test_regress_guard.py."""
import json
import math
import statistics
import time

import pytest
import torch

from bench.regress.baseline import DEFAULT_TOLERANCES, derive_tolerances, load_baseline, rules_of, sigma_of_median
from bench.regress.compare import NEW, check_metric, compare, detectable, failed, failed_timing
from bench.regress.inject import burn
from bench.regress.measure import merge_better
from bench.regress.report import detectable_summary, table
from bench.timing import StageTimer, thread_cpu_time

TOL = json.loads(json.dumps(DEFAULT_TOLERANCES))  # floors: train_cost 4%, speedup 5%; 3 points


def row(bf=0.5, steps=24, cost=1.2, sp=2.0, acc=-1.0, samples=None):
    return {"backward_fraction": bf, "total_steps": steps, "train_cost": cost, "speedup": sp, "acc_delta_points": acc,
            "config_key": "k", "samples": samples or {"train_cost": [cost] * 3, "speedup": [sp] * 3}}


def verdicts(checks):
    return {(c.method, c.metric): c for c in checks}


def test_unchanged_numbers_pass_and_the_reference_gets_work_and_cost_checks():
    base = {"methods": {"uniform": row(1.0, 48, 1.0, 1.0, 0.0), "a": row()}, "tolerances": TOL}
    now = {"methods": {"uniform": row(1.0, 48, 1.0, 1.0, 0.0), "a": row()}, "errors": {}, "reference": {"uniform": {}},
           "rounds": 3}
    checks = compare(base, now)
    assert not failed(checks)
    assert {c.metric for c in checks if c.method == "uniform"} == {"backward_fraction", "total_steps", "train_cost"}
    assert {c.metric for c in checks if c.method == "a"} == {
        "backward_fraction", "total_steps", "train_cost", "speedup", "acc_delta_points"}


@pytest.mark.parametrize("metric,base,now,ok", [
    ("backward_fraction", 0.5, 0.5 + 5e-10, True),
    ("backward_fraction", 0.5, 0.5 + 1e-6, False),  # realized work changed: fails in either direction
    ("backward_fraction", 0.5, 0.49, False),
    ("total_steps", 24, 24, True),
    ("total_steps", 24, 25, False),
    ("total_steps", 24, 23, False),
    ("train_cost", 1.5, 1.5 * 1.039, True),  # +3.9%: inside the 4% floor
    ("train_cost", 1.5, 1.5 * 1.041, False),
    ("train_cost", 1.5, 1.0, True),  # cheaper passes
    ("train_cost", 1.5, float("nan"), False),
    ("speedup", 2.0, 1.91, True),  # -4.5%: inside 5%
    ("speedup", 2.0, 1.89, False),  # -5.5%
    ("speedup", 2.0, 5.0, True),
    ("speedup", 2.0, float("nan"), False),
    ("acc_delta_points", -1.0, -3.9, True),
    ("acc_delta_points", -1.0, -4.1, False),
])
def test_each_metric_boundary(metric, base, now, ok):
    c = check_metric("a", metric, base, now, TOL)
    assert c.failed is (not ok)
    assert c.verdict.startswith("ok" if ok else "FAIL")


def test_verdicts_new_missing_crashed_faster():
    base = {"methods": {"a": row(), "gone": row(), "broken": row(), "quick": row(sp=2.0)}, "tolerances": TOL}
    now = {"methods": {"a": row(cost=1.5, sp=1.0, acc=-5.0), "quick": row(sp=3.0), "fresh": row()},
           "errors": {"broken": "RuntimeError: boom"}, "reference": {}, "rounds": 3}
    v = verdicts(compare(base, now))
    assert v[("a", "speedup")].verdict == "FAIL: slower" and v[("a", "speedup")].change == "-50.0%"
    assert v[("a", "train_cost")].verdict == "FAIL: slower" and v[("a", "train_cost")].change == "+25.0%"
    assert v[("a", "acc_delta_points")].change == "-4.00 pt" and v[("a", "acc_delta_points")].failed
    assert v[("gone", "-")].failed and "missing" in v[("gone", "-")].verdict
    assert v[("broken", "-")].failed and "RuntimeError: boom" in v[("broken", "-")].verdict
    assert not v[("fresh", "-")].failed and v[("fresh", "-")].verdict == NEW
    assert not v[("quick", "speedup")].failed and "faster" in v[("quick", "speedup")].verdict
    # only a method failing on time alone is worth measuring again
    assert failed_timing(v.values()) == set()  # "a" also failed its accuracy: a re-measurement cannot save it
    now["methods"]["a"]["acc_delta_points"] = -1.0
    assert failed_timing(compare(base, now)) == {"a"}


def test_tolerances_are_derived_per_method_from_the_spread_of_rounds():
    quiet = [1.50, 1.50, 1.50, 1.50]
    noisy = [1.40, 1.50, 1.60, 1.50, 1.45, 1.55]  # deviations 0.1 0 0.1 0 0.05 0.05
    now = {"methods": {"q": row(samples={"train_cost": quiet, "speedup": [2.0] * 4}),
                       "n": row(samples={"train_cost": noisy, "speedup": [2.0, 2.2, 1.8, 2.0, 1.9, 2.1]}),
                       "uniform": row(samples={"train_cost": [1.0] * 4, "speedup": []})}}
    tol = derive_tolerances(now, TOL, rounds=5)
    assert tol["q"]["train_cost"]["rel_rise"] == 0.04  # no spread: the floor
    single = 1.4826 * 0.05 / 1.5  # median absolute deviation 0.05
    expect = 4 * math.hypot(sigma_of_median(single, 5), sigma_of_median(single, 6))
    assert tol["n"]["train_cost"]["rel_rise"] == pytest.approx(expect, abs=1e-3)
    assert tol["n"]["speedup"]["rel_drop"] > tol["n"]["train_cost"]["rel_rise"]  # speedup is the noisier here
    assert "speedup" not in tol["uniform"]  # 1 by definition
    # the derived values are what compare uses
    base = {"methods": {"n": row(cost=1.5)}, "tolerances": {**TOL, "per_method": tol}}
    c = verdicts(compare(base, {"methods": {"n": row(cost=1.5 * (1 + expect + 0.01))}, "errors": {}, "rounds": 5}))
    assert c[("n", "train_cost")].failed
    c = verdicts(compare(base, {"methods": {"n": row(cost=1.5 * (1 + expect - 0.01))}, "errors": {}, "rounds": 5}))
    assert not c[("n", "train_cost")].failed


def test_detectable_slowdown_grows_with_noise_and_speedup_is_converted_to_a_slowdown():
    assert detectable("train_cost", 0.02, [1.0] * 5, [1.0] * 5, 5) == pytest.approx(0.02)
    noisy = detectable("train_cost", 0.02, [0.9, 1.0, 1.1, 1.1, 0.9], [1.0] * 5, 5)
    assert noisy > 0.02 + 0.05
    # a speedup falling by 20% is a slowdown of 25%
    assert detectable("speedup", 0.2, [2.0] * 5, [2.0] * 5, 5) == pytest.approx(0.25)


def test_merge_keeps_the_better_of_two_measurements():
    first = {"methods": {"a": row(cost=1.3, sp=1.5), "uniform": row(1.0, 48, 1.0, 1.0, 0.0)}, "errors": {},
             "reference": {"uniform": {}}, "wall_seconds": 10.0}
    again = {"methods": {"a": row(cost=1.2, sp=1.4), "uniform": row(1.0, 48, 1.1, 1.0, 0.0)}, "errors": {},
             "wall_seconds": 5.0}
    assert merge_better(first, again) == ["a", "uniform"]
    a = first["methods"]["a"]
    assert (a["train_cost"], a["speedup"]) == (1.2, 1.5)
    assert a["remeasured"] == {"train_cost": [1.3, 1.2], "speedup": [1.5, 1.4]}
    assert first["methods"]["uniform"]["train_cost"] == 1.0  # the first was better
    assert first["wall_seconds"] == 15.0


def test_table_has_every_column_and_says_what_each_check_detects():
    base = {"methods": {"a": row()}, "tolerances": TOL}
    checks = compare(base, {"methods": {"a": row(sp=1.0)}, "errors": {}, "reference": {}, "rounds": 5})
    text = table(checks)
    assert text.splitlines()[0].split() == ["method", "metric", "baseline", "now", "change", "tolerance", "detects",
                                            "verdict"]
    line = next(ln for ln in text.splitlines() if " speedup " in ln)
    assert line.split()[:7] == ["a", "speedup", "2.000x", "1.000x", "-50.0%", ">=", "-5.0%"] and "FAIL: slower" in line
    assert line.split()[7] == "+5%"  # 5% drop of speedup = 5.3% slowdown, with no spread
    cost = next(ln for ln in text.splitlines() if " train_cost " in ln)
    assert cost.split()[7] == "+4%"
    assert detectable_summary(checks) == "detectable slowdown: a 4%"


def test_old_baseline_format_is_one_clear_line(tmp_path):
    from bench.errors import BenchError

    p = tmp_path / "baseline.json"
    p.write_text(json.dumps({"methods": {"a": {"speedup": 1.0, "backward_fraction": 0.5}}}))
    with pytest.raises(BenchError, match="older format.*--update"):
        load_baseline(p)
    assert rules_of(json.loads(p.read_text()))["k"] == DEFAULT_TOLERANCES["k"]  # --update starts from the defaults


def test_thread_clock_counts_cpu_work_not_sleep():
    with thread_cpu_time():
        timer = StageTimer(torch.device("cpu"))
    timer.start()
    with timer.stage("method"):
        time.sleep(0.2)
    with timer.stage("data"):
        burn(0.1)
    assert timer.totals["method"] < 0.05
    assert 0.09 <= timer.totals["data"] < 0.2
    wall = StageTimer(torch.device("cpu"))  # outside the context: wall time, as before
    wall.start()
    with wall.stage("method"):
        time.sleep(0.05)
    assert wall.totals["method"] >= 0.045


def test_missing_baseline_is_one_clear_line_and_trains_nothing(tmp_path, monkeypatch, capsys):
    from bench import cli
    from bench.regress import measure

    monkeypatch.setenv("BENCH_RESULTS", str(tmp_path))
    monkeypatch.setattr(measure, "measure", lambda *a, **k: pytest.fail("must not train without a baseline"))
    p = tmp_path / "regress_tiny.yaml"
    p.write_text("name: regress_tiny\nblocks:\n  - {models: [tiny_cnn], datasets: [fashion_mnist], "
                 "methods: [uniform], drops: [0.5], seeds: [0]}\n")
    assert cli.main(["regress", "--suite", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no regression baseline" in err and "--update" in err and "\n" not in err


def test_calibration_counts_passes_and_failures_and_injects_only_during_sensitivity_runs(tmp_path, monkeypatch):
    from bench.regress import calibrate
    from bench.registry import METHODS

    base = {"methods": {"uniform": row(1.0, 48, 1.0, 1.0, 0.0), "random_subset": row(), "sift": row()},
            "reference": {"uniform": {}}, "hardware": "cpu", "torch": "t", "created": "now", "tolerances": TOL}
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(base))
    own = {m: METHODS.get(m).__dict__.get("observe") for m in ("random_subset", "sift")}
    seen = []

    def fake_guard(suite_name, baseline_file, log):  # fails exactly when a method's hook is patched
        patched = [m for m in own if METHODS.get(m).__dict__.get("observe") is not own[m]]
        seen.append(patched)
        log(f"regress: {'FAIL' if patched else 'PASS'}: " + ", ".join(f"{m} train_cost" for m in patched))
        return 1 if patched else 0

    monkeypatch.setattr(calibrate, "guard", fake_guard)
    monkeypatch.setattr(calibrate, "per_step_seconds_now", lambda suite, m, share: 0.001)
    r = calibrate.calibrate(sensitivity=2, false_alarm=3, share=0.1, busy=False, suite="regress", out=tmp_path,
                            baseline_file=path)
    assert seen == [[], [], [], ["random_subset"], ["sift"]]  # the injected method rotates; nothing leaks
    assert r["false_alarms"]["passed"] == 3 and r["sensitivity"]["failed"] == 2
    assert r["sensitivity"]["failed_on_the_injected_method"] == 2
    assert {m: METHODS.get(m).__dict__.get("observe") for m in own} == own
    from bench.regress.baseline import cpu_slug

    md = (tmp_path / f"calibration-{cpu_slug()}.md").read_text()
    assert "passed 3 of 3" in md and "in 2 of 2 runs" in md and "Machine:" in md and "Runs done: 3 of 3" in md
    saved = []  # written after every guard run: a calibration stopped midway keeps what it did
    monkeypatch.setattr(calibrate, "guard", lambda **k: saved.append(
        json.loads((tmp_path / f"calibration-{cpu_slug()}.json").read_text())["false_alarms"]["runs"]) or 0)
    calibrate.calibrate(sensitivity=0, false_alarm=3, share=0.1, busy=False, suite="regress", out=tmp_path,
                        baseline_file=path)
    assert saved == [3, 1, 2]  # the file from the first call, then after each run of this one
    seen.clear()
    monkeypatch.setattr(calibrate, "guard", fake_guard)
    r = calibrate.calibrate(sensitivity=3, false_alarm=4, share=0.1, busy=False, suite="regress", out=tmp_path,
                            baseline_file=path, resume=True)  # 3 unchanged and 0 injected are on record
    assert seen == [[], ["random_subset"], ["sift"], ["random_subset"]]  # 1 more unchanged, then 3 injected
    assert r["false_alarms"]["runs"] == 4 and r["sensitivity"]["runs"] == 3
    with pytest.raises(calibrate.BenchError, match="another baseline or with other settings"):
        calibrate.calibrate(sensitivity=4, false_alarm=4, share=0.3, busy=False, suite="regress", out=tmp_path,
                            baseline_file=path, resume=True)


def test_cpu_model_names_a_file():
    from bench.regress.baseline import cpu_slug

    assert cpu_slug("Intel(R) Xeon(R) Processor @ 2.80GHz (2 logical cores)") == "intel-xeon-processor-2-80ghz-2-logical-cores"
    assert cpu_slug("AMD EPYC (2 logical cores)") == "amd-epyc-2-logical-cores"


def test_baseline_of_this_cpu_model_else_the_newest_other(tmp_path, monkeypatch):
    from bench.regress import baseline

    monkeypatch.setenv("BENCH_RESULTS", str(tmp_path))
    monkeypatch.setattr(baseline, "cpu_model", lambda: "Ours (2 logical cores)")
    d = tmp_path / "regress" / "baselines"
    d.mkdir(parents=True)
    assert baseline.find_baseline() == d / "ours-2-logical-cores.json"  # none at all: where --update writes
    (d / "old-cpu.json").write_text(json.dumps({"created": "2026-01-01T00:00:00+00:00"}))
    (d / "new-cpu.json").write_text(json.dumps({"created": "2026-02-01T00:00:00+00:00"}))
    assert baseline.find_baseline() == d / "new-cpu.json"
    (d / "ours-2-logical-cores.json").write_text(json.dumps({"created": "2025-01-01T00:00:00+00:00"}))
    assert baseline.find_baseline() == baseline.baseline_path() == d / "ours-2-logical-cores.json"


def test_guard_rounds_fit_the_budget_on_the_baselines_cpu():
    from bench.regress.baseline import GUARD_BUDGET_SECONDS, MIN_GUARD_ROUNDS, guard_rounds
    from bench.regress.measure import ROUNDS

    assert guard_rounds(250.0, 10) == ROUNDS  # 25 s a round: the full count fits
    assert guard_rounds(10 * GUARD_BUDGET_SECONDS / 4, 10) == 4
    assert guard_rounds(780.0, 10) == MIN_GUARD_ROUNDS == 3  # 78 s a round
    assert guard_rounds(5000.0, 10) == MIN_GUARD_ROUNDS  # never fewer, however slow


def test_accuracy_against_another_cpu_models_baseline_is_checked_at_its_own_tolerance():
    same = check_metric("impon", "acc_delta_points", -11.0, -14.8, TOL)
    other = check_metric("impon", "acc_delta_points", -11.0, -14.8, TOL, other_cpu=True)
    assert same.failed and not other.failed and other.tolerance == ">= -6 pt"
    assert check_metric("impon", "acc_delta_points", -11.0, -17.5, TOL, other_cpu=True).failed
    old_rules = json.loads(json.dumps(DEFAULT_TOLERANCES))
    del old_rules["acc_delta_points"]["other_cpu_points"]
    assert rules_of({"tolerances": old_rules})["acc_delta_points"]["other_cpu_points"] == 6.0  # added on --update


def test_guard_runs_the_baselines_rounds_and_says_when_it_is_another_cpus(tmp_path, monkeypatch):
    from bench.regress import guard, measure

    base = {"methods": {"uniform": row(1.0, 48, 1.0, 1.0, 0.0), "a": row(acc=-11.0)}, "reference": {"uniform": {}},
            "hardware": "cpu", "torch": "t", "suite": "regress_tiny", "created": "now", "tolerances": TOL,
            "cpu": "Some Other CPU (2 logical cores)", "guard_rounds": 3, "git_commit": "x"}
    path = tmp_path / "b.json"
    path.write_text(json.dumps(base))
    asked = []

    def fake_measure(suite, rounds, log, **k):
        asked.append(rounds)
        return {"methods": {"uniform": row(1.0, 48, 1.0, 1.0, 0.0), "a": row(acc=-14.8)}, "errors": {},
                "reference": {"uniform": {}}, "rounds": rounds, "suite": "regress_tiny", "hardware": "cpu", "torch": "t"}

    monkeypatch.setattr(measure, "measure", fake_measure)
    suite = tmp_path / "regress_tiny.yaml"
    suite.write_text("name: regress_tiny\nblocks:\n  - {models: [tiny_cnn], datasets: [fashion_mnist], "
                     "methods: [uniform], drops: [0.5], seeds: [0]}\n")
    lines = []
    assert guard.main(suite_name=str(suite), baseline_file=path, log=lambda *a: lines.append(" ".join(map(str, a)))) == 0
    assert asked == [3]
    assert any("no baseline for this CPU" in ln and "Some Other CPU" in ln for ln in lines)
    base["cpu"] = guard.cpu_model()  # the same drop against this CPU model's own baseline fails
    path.write_text(json.dumps(base))
    assert guard.main(suite_name=str(suite), baseline_file=path, log=lambda *a: None) == 1


def test_a_second_mode_in_the_rounds_widens_the_spread_the_mad_misses():
    from bench.regress.baseline import spread

    one_mode = [0.65, 0.651, 0.652, 0.649, 0.648, 0.65, 0.651, 0.649, 0.65, 0.652]
    two_modes = [0.58, 0.60, 0.62] + one_mode[:7]  # three rounds low, as swift_sampler's baseline
    mid = statistics.median(two_modes)
    mad = 1.4826 * statistics.median(abs(x - mid) for x in two_modes) / mid
    assert spread(two_modes) > 2 * mad
    assert spread(one_mode) < 0.005
    assert spread(one_mode[:9] + [0.40]) < 0.005  # one burst of load still widens nothing
