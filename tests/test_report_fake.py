"""The report on a store of hand-logged fake runs (synthetic numbers, never committed under results/):
registries, intervals, flags, diverged cells, controls, time to target at probes, and the plots."""
import math
from types import SimpleNamespace

import pandas as pd
import pytest

from bench import report, tracking
from bench.errors import BenchError
from bench.method import Method
from bench.registry import METHODS
from bench.report import Metric, register_metric, register_plot
from bench.report.metrics import METRICS
from bench.report.plots import PLOTS
from bench.suite import Block, MethodSpec, Suite

HW = "fake-hw"
EPOCHS, N = 3, 100
# method -> per-seed train-time factor vs uniform, accuracy shift, extra final metrics
PLAN = {
    "uniform": (1.0, 0.0, {}),
    "random_subset": (1.0, -0.01, {}),  # identical time to uniform, per seed: its interval holds 1
    "sift": (0.5, 0.0, {"total_partial_forwards": 50.0, "total_exit1": 50.0, "active_share": 0.0}),
    "infobatch": (0.8, 0.0, {"forward_slow": 3.0}),  # forwards 3x slower per sample: contention
    "fake_unfaithful": (0.9, 0.0, {}),
}


class Unfaithful(Method):
    name = "fake_unfaithful"
    faithful = False
    caveat = "a made-up shortcut"


def _suite(paper=None):
    blocks = (Block(("tiny_cnn",), ("fashion_mnist",), tuple(MethodSpec(m) for m in PLAN), (0.5, 0.8), (0, 1, 2)),)
    return Suite(name="fake", blocks=blocks, defaults={"epochs": EPOCHS, "train_limit": N}, target_offset=0.5,
                 paper=paper or {})


def log_run(cfg, metrics_by_step, final, status="finished", tags=None):
    run = tracking.CellRun(cfg.key(HW), name="fake")
    run.params({"model": cfg.model, "dataset": cfg.dataset, "method": cfg.method, "drop": cfg.drop, "n_train": N})
    if tags and tags.get("batch_plan") is None:
        tags = {k: v for k, v in tags.items() if k != "batch_plan"}
    run.tags({"config_key": cfg.config_key(), "hardware": HW, "faithful": True, "git_commit": "fake", **(tags or {})})
    for step, m in metrics_by_step.items():
        run.metrics(m, step)
    run.metrics(final, cfg.epochs)
    if status == "finished":
        run.finish()
    else:
        run.tags({"cell_status": status})
        run.client.set_terminated(run.run_id, "FAILED")
    return run.run_id


def fake_metrics(cfg):
    """Epoch-end metrics, probes and final metrics of a made-up run of this cell."""
    factor, shift, extra = PLAN.get(cfg.method, (0.7, 0.0, {}))
    keep = 1.0 if cfg.method == "uniform" else 1.0 - cfg.drop
    sec_per_epoch = 10.0 * (1 + cfg.seed) * factor * (1.0 if cfg.method in ("uniform", "random_subset") else 1.0)
    accs = [0.5 + 0.1 * e + shift - 0.01 * cfg.seed for e in range(EPOCHS)]
    by_step = {e: {"val_acc": accs[e], "test_acc": accs[e], "train_seconds": sec_per_epoch * (e + 1),
                   "search_seconds": 0.0, "e2e_seconds": sec_per_epoch * (e + 1) + 1.0} for e in range(EPOCHS)}
    probes = {}
    if cfg.method in ("uniform", "sift"):  # four probes an epoch, 2 steps apart
        for p in range(4 * EPOCHS):
            frac = (p + 1) / 4
            probes[100 + p] = {"probe_val_acc": 0.45 + 0.1 * frac + shift - 0.01 * cfg.seed,
                               "probe_train_seconds": sec_per_epoch * frac}
    bwd = N * EPOCHS * keep
    fwd_seconds = 0.01 * bwd * extra.get("forward_slow", 1.0)
    final = {"final_val_acc": accs[-1], "final_test_acc": accs[-1], "best_val_acc": max(accs),
             "train_seconds": sec_per_epoch * EPOCHS, "e2e_seconds": sec_per_epoch * EPOCHS + 1.0,
             "search_seconds": 0.0, "eval_seconds": 1.0, "backward_fraction": keep, "forward_fraction": keep,
             "realized_drop": 1 - keep, "train_work_fraction": keep, "total_forwards": bwd, "total_backwards": bwd,
             "stage_forward_seconds": fwd_seconds, "stage_backward_seconds": 0.02 * bwd,
             "stage_optimizer_seconds": 0.001 * bwd, "stage_data_seconds": 0.5,
             **{k: v for k, v in extra.items() if k != "forward_slow"}}
    final.update(cost_forward_s=0.01, cost_backward_s=0.02, cost_score_s=0.005, cost_partial1_s=0.004,
                 work_fraction=(bwd * 0.03 + 0.004 * extra.get("total_exit1", 0.0)) / (0.03 * N * EPOCHS))
    return {**by_step, **probes}, final


SIFT_PLAN = "25x2;25x2;25x2"  # sift at 0.5 logs a plan: its selection control replays it; at 0.8 it logs none


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    root = tmp_path_factory.mktemp("fake_report")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.setenv("BENCH_RESULTS", str(root / "results"))
        mp.setitem(METHODS._entries, "fake_unfaithful", Unfaithful)
        suite = _suite()
        for cfg in suite.cells():
            by_step, final = fake_metrics(cfg)
            if cfg.method == "infobatch" and cfg.drop == 0.8 and cfg.seed == 2:
                log_run(cfg, {0: {"val_acc": 0.1}}, {}, status="diverged",
                        tags={"diverged_epoch": 1, "diverged_step": 17})
                continue
            plan = SIFT_PLAN if cfg.method == "sift" and cfg.drop == 0.5 else None
            log_run(cfg, by_step, final, tags={"batch_plan": plan} if plan else None)
            if plan:  # its selection control, as the runner would have run it: random_subset's numbers
                ctl = cfg.replace(method="random_subset", drop=0.0, params={"plan": plan})
                by_step, final = fake_metrics(cfg.replace(method="random_subset"))
                log_run(ctl, by_step, final)
            if cfg.method == "sift" and cfg.drop == 0.5:  # and its cost control (its early exits cost work)
                from bench.controls import cost_control

                m = {**final, "total_selection_forwards": 0, "total_exit1": 50.0, "total_partial_forwards": 50.0}
                cost = cost_control(cfg, m, N)
                by_step, final = fake_metrics(cfg.replace(method="random_subset"))
                backwards = cost.epochs * round((1 - cost.drop) * N)
                log_run(cost, by_step, {**final, "final_test_acc": final["final_test_acc"] + 0.02,
                                        "total_backwards": backwards})
        runs = report.collect(suite)
        yield SimpleNamespace(suite=suite, root=root, runs=runs, s=report.summary(runs, suite))


def _row(s, method, drop, control_of="", kind=""):
    r = s[(s["method"] == method) & (s["drop"] == drop) & (s["control_of"] == control_of) & (s["control_kind"] == kind)]
    assert len(r) == 1, (method, drop, control_of)
    return r.iloc[0]


def _md_row(md, name, drop):
    hits = [ln for ln in md.splitlines() if ln.startswith(f"| tiny_cnn | fashion_mnist | {name} | {drop} |")]
    assert len(hits) == 1, (name, drop, hits)
    return [c.strip() for c in hits[0].strip("|").split("|")]


def _column(md, header):
    head = next(ln for ln in md.splitlines() if ln.startswith("| model"))
    return [c.strip() for c in head.strip("|").split("|")].index(header)


def test_identical_runs_interval_contains_one(fake):
    r = _row(fake.s, "random_subset", 0.5)
    assert r["train_speedup"] == pytest.approx(1.0) and r["train_speedup_n"] == 3
    assert r["train_speedup_ci_low"] <= 1.0 <= r["train_speedup_ci_high"]
    md = report.render(fake.s)
    cells = _md_row(md, "random_subset", "0.5")
    assert cells[_column(md, "train speedup")] == "1.00× (1.00–1.00, ~1)"
    faster = _md_row(md, "sift", "0.5")[_column(md, "train speedup")]
    assert faster.startswith("2.00× (") and "~1" not in faster
    assert _md_row(md, "uniform", "0")[_column(md, "train speedup")] == "ref"


def test_delta_acc_paired_with_interval(fake):
    r = _row(fake.s, "random_subset", 0.8)
    assert r["acc_change_pts"] == pytest.approx(-1.0) and r["acc_change_pts_n"] == 3
    assert r["acc_change_pts_ci_low"] == pytest.approx(-1.0) == r["acc_change_pts_ci_high"]
    md = report.render(fake.s)
    assert _md_row(md, "random_subset", "0.8")[_column(md, "Δ acc vs uniform (pts)")] == "-1.00 (-1.00 to -1.00) 0/3"


def test_flags_never_on_and_contention(fake):
    md = report.render(fake.s)
    notes = _column(md, "notes")
    assert "mechanism never on" in _md_row(md, "sift", "0.5")[notes]
    assert "measured under contention (forward time per sample 3.00× uniform's)" in _md_row(md, "infobatch", "0.5")[notes]
    rs = _md_row(md, "random_subset", "0.5")[notes]
    assert "never on" not in rs and "contention" not in rs
    assert _row(fake.s, "infobatch", 0.5)["forward_time_vs_uniform"] == pytest.approx(3.0)


def test_efficiency_is_speedup_over_ideal(fake):
    r = _row(fake.s, "sift", 0.8)  # speedup 2, train work fraction 0.2: ideal 5x, efficiency 0.4
    assert r["speedup_efficiency"] == pytest.approx(2.0 * 0.2)
    assert _row(fake.s, "uniform", 0.0)["speedup_efficiency"] == pytest.approx(1.0)


def test_time_to_target_reads_probes(fake):
    u, sift = _row(fake.s, "uniform", 0.0), _row(fake.s, "sift", 0.5)
    finals = fake.runs.loc[fake.runs["method"] == "uniform", "final_val_acc"]
    assert u["ttt_near_target"] == pytest.approx(finals.median() - 0.005)
    assert u["ttt_far_target"] == pytest.approx(finals.median() - 0.02)
    assert math.isnan(u["ttt_paper_target"])
    seeds = fake.runs[fake.runs["method"] == "sift"]
    assert set(seeds["curve_kind"]) == {"probes"}
    assert set(fake.runs.loc[fake.runs["method"] == "infobatch", "curve_kind"]) == {"epochs"}
    # seed 0: probes climb 0.025 a quarter epoch from 0.475 at 2.5 s; the far target 0.68 is first reached at
    # probe 9 (0.675 < 0.68 at probe 8): 9/4 epochs of 5 s = 11.25 s for sift, 22.5 s for uniform
    assert sift["ttt_far_speedup"] == pytest.approx(2.0)


def test_diverged_listed_never_a_row(fake, tmp_path):
    out = report.write(fake.suite, tmp_path)
    md = (out / "summary.md").read_text()
    assert "diverged (no result, not in the table): tiny_cnn/fashion_mnist/infobatch drop=0.8 seed=2 [fake-hw] " \
           "at epoch 1, step 17" in md
    assert _row(fake.s, "infobatch", 0.8)["n_seeds"] == 2
    assert 2 not in set(fake.runs.loc[(fake.runs["method"] == "infobatch") & (fake.runs["drop"] == 0.8), "seed"])


def test_not_faithful_lists_every_row(fake, tmp_path, monkeypatch):
    monkeypatch.setitem(METHODS._entries, "fake_unfaithful", Unfaithful)
    md = (report.write(fake.suite, tmp_path) / "summary.md").read_text()
    line = next(ln for ln in md.splitlines() if ln.startswith("- not faithful"))
    assert line == ("- not faithful to their papers: fake_unfaithful (tiny_cnn/fashion_mnist drop 0.5, "
                    "tiny_cnn/fashion_mnist drop 0.8): a made-up shortcut")
    assert _md_row(md, "fake_unfaithful", "0.5")[_column(md, "faithful")] == "**no**"


def test_both_control_rows_follow_their_method(fake):
    md = report.render(fake.s)
    sel = _row(fake.s, "random_subset", 0.5, control_of="sift", kind="selection")
    assert len(fake.s[(fake.s["control_of"] == "sift")]) == 2
    names = [ln.split("|")[3].strip() for ln in md.splitlines()[2:]]
    i = names.index("sift")
    assert names[i + 1:i + 3] == ["cost control [sift]", "selection control [sift]"] or \
        names[i + 2:i + 4] == ["cost control [sift]", "selection control [sift]"]
    sift = _row(fake.s, "sift", 0.5)
    assert sift["acc_vs_selection_pts"] == pytest.approx(1.0) and sift["acc_vs_selection_pts_n"] == 3
    assert sift["acc_vs_cost_pts"] == pytest.approx(-1.0)  # the cost control was logged 2 points above the subset
    assert 0.97 <= sift["cost_work_ratio"] <= 1.03
    assert math.isnan(_row(fake.s, "sift", 0.8)["acc_vs_selection_pts"])  # no plan logged at 0.8: no control
    assert sel["n_seeds"] == 3
    # a control row shows its own realized drop, not its owner's
    ctl_line = next(ln for ln in md.splitlines() if "selection control [sift]" in ln)
    assert "0.50 realized" in ctl_line


@pytest.fixture
def registries():
    """METRICS and PLOTS as they were, after the test."""
    metrics, plots = list(METRICS), dict(PLOTS)
    yield
    METRICS[:] = metrics
    PLOTS.clear()
    PLOTS.update(plots)


def test_a_metric_registered_on_the_fly_is_a_column_with_its_legend(fake, tmp_path, registries):
    register_metric(Metric("steps_per_seed", "steps/seed", "optimizer steps, mean over seeds, made up for a test",
                           lambda g: g.mean("total_backwards") / 10, lambda r: f"{r['steps_per_seed']:.0f} st",
                           reads=("total_backwards",)))
    assert "steps_per_seed" in report.summary_columns() and "total_backwards" in report.run_metric_names()
    s = report.summary(fake.runs, fake.suite)
    assert _row(s, "sift", 0.5)["steps_per_seed"] == pytest.approx(15.0)
    md = (report.write(fake.suite, tmp_path) / "summary.md").read_text()
    assert "- **steps/seed**: optimizer steps, mean over seeds, made up for a test" in md
    assert _md_row(md, "sift", "0.5")[_column(md, "steps/seed")] == "15 st"
    assert "steps_per_seed" in pd.read_csv(tmp_path / "summary.csv").columns
    with pytest.raises(ValueError, match="registered twice"):
        register_metric(METRICS[0])


def test_a_plot_registered_on_the_fly_is_written(fake, tmp_path, registries):
    seen = {}

    @register_plot
    def seeds_per_method(runs, s, path):
        seen["rows"] = len(s)
        path.write_bytes(b"\x89PNG\r\n\x1a\nfake")
        return path

    out = report.write(fake.suite, tmp_path)
    assert (out / "seeds_per_method.png").exists() and seen["rows"] == len(fake.s)


def test_plots_are_pngs(fake, tmp_path):
    out = report.write(fake.suite, tmp_path)
    for name in PLOTS:
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_paper_target_column(fake):
    suite = _suite(paper={"targets": [{"val_acc": 60.0, "model": "tiny_cnn"}]})
    s = report.summary(fake.runs, suite)
    assert _row(s, "uniform", 0.0)["ttt_paper_target"] == pytest.approx(0.60)
    md = report.render(s)
    assert "time to paper target (s)" in md and "time to paper target (s)" not in report.render(fake.s)
    bad = _suite(paper={"targets": [{"note": "no value"}]})
    with pytest.raises(BenchError, match="paper targets must be a list"):
        report.summary(fake.runs, bad)


def test_verdict_lines_name_both_controls_and_the_rule(fake):
    md = report.table.markdown(fake.suite, fake.runs, fake.s, report.diverged(fake.suite))
    lines = [ln for ln in md.splitlines() if ln.startswith("- sift drop")]
    assert lines and all("switch never turned on" in ln for ln in lines), lines  # the fake sift's active share is 0
    assert "## Headline" in md and md.index("## Headline") < md.index("## Full table")
    assert "Holm-adjusted p < 0.05" in md and "95% Student-t interval over seeds" in md
    head = md[md.index("## Headline"):md.index("## Verdicts")]
    assert max(len(ln) for ln in head.splitlines() if ln.startswith("|")) <= 100
    from bench.report.table import verdict

    r = {"method": "sift", "control_of": "", "acc_vs_selection_pts": 1.0, "acc_vs_selection_pts_ci_low": 0.5,
         "acc_vs_selection_pts_ci_high": 1.5, "acc_vs_selection_pts_n": 5, "acc_vs_selection_pts_ahead": 5,
         "p_holm_selection": 0.01, "verdict_selection": "beat", "acc_vs_cost_pts": float("nan"),
         "train_speedup": 1.5, "train_speedup_ci_low": 1.4, "train_speedup_ci_high": 1.6, "notes": ""}
    line = verdict(r)
    assert line.startswith("selection control: **beat** +1.00 pts (+0.50 to +1.50; 5/5 seeds ahead; Holm p=0.01)")
    assert "cost control: the selection control (no passes beyond training)" in line and "1.50× (1.40–1.60)" in line
    assert "no control run" in verdict({"method": "sift", "backward_fraction": 0.2, "notes": ""})
    assert verdict({"notes": "did not train in 2 of 5 seeds"}).startswith("did not train")


def test_clock_check_flags_a_random_subset_off_its_ideal(fake):
    from bench.report.table import _clock_lines
    from bench.report.summary import panel_labels

    s = fake.s.copy()
    i = s[(s["method"] == "random_subset") & (s["control_of"] == "") & (s["drop"] == 0.5)].index[0]
    labels = panel_labels(fake.runs)
    s.at[i, "speedup_efficiency"] = 1.02
    assert any(ln.startswith("clock check:") for ln in _clock_lines(s, labels))
    s.at[i, "speedup_efficiency"] = 1.10
    bad = [ln for ln in _clock_lines(s, labels) if "clock disturbed" in ln and "drop 0.5" in ln]
    assert len(bad) == 1 and "+10%" in bad[0]


def test_a_metered_clock_is_the_one_judged_and_shown(fake):
    """Where the runs were metered (bench/meter.py), the clock check judges the metered speedup and the
    headline shows it; the raw one stays beside it."""
    from bench.report.table import _clock_lines, headline
    from bench.report.summary import panel_labels

    s = fake.s.copy()
    i = s[(s["method"] == "random_subset") & (s["control_of"] == "") & (s["drop"] == 0.5)].index[0]
    labels = panel_labels(fake.runs)
    s.at[i, "speedup_efficiency"], s["metered_efficiency"] = 0.90, float("nan")
    s.at[i, "metered_efficiency"] = 1.01
    line = [ln for ln in _clock_lines(s, labels) if "drop 0.5" in ln]
    assert len(line) == 1 and line[0].startswith("clock check:") and "metered" in line[0] and "raw: 0.90×" in line[0]
    s.at[i, "metered_efficiency"] = 0.93
    assert "clock disturbed" in [ln for ln in _clock_lines(s, labels) if "drop 0.5" in ln][0]
    assert "| train speedup |" in headline(s)
    s["metered_speedup"], s["metered_speedup_ci_low"], s["metered_speedup_ci_high"] = 1.234, 1.2, 1.3
    head = headline(s)
    assert "| metered speedup |" in head and "1.23× (1.20–1.30)" in head
