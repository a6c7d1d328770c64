"""The frontier section: each method point against the random subset's curve at the point's own work."""
import pandas as pd
import pytest

from bench.report import verdicts
from bench.report.table import frontier_section

SEEDS = range(5)
# random's curve per seed: (work, accuracy); uniform at work 1
RANDOM = {0.9: (0.1, 0.60), 0.7: (0.3, 0.70), 0.5: (0.5, 0.76), 0.3: (0.7, 0.80)}


def _runs(points) -> pd.DataFrame:
    """points: (method, drop, work, accuracy per seed or a constant)"""
    rows = []
    base = dict(hardware="cpu", setting="s", model="m", dataset="d", label_noise=0.0, epochs=4, variant="",
                control_of="", chance_acc=0.10)
    for seed in SEEDS:
        jitter = 0.002 * ((seed * 7) % 5 - 2)  # seeds differ a little, the same way on every point
        rows.append({**base, "method": "uniform", "drop": 0.0, "seed": seed, "work_fraction": 1.0,
                     "final_test_acc": 0.84 + jitter})
        for drop, (work, acc) in RANDOM.items():
            rows.append({**base, "method": "random_subset", "drop": drop, "seed": seed, "work_fraction": work,
                         "final_test_acc": acc + jitter})
        for method, drop, work, acc in points:
            a = acc[seed] if isinstance(acc, (list, tuple)) else acc
            rows.append({**base, "method": method, "drop": drop, "seed": seed, "work_fraction": work,
                         "final_test_acc": a + jitter})
    return pd.DataFrame(rows)


def test_points_above_on_below_and_at_chance():
    runs = _runs([
        ("above", 0.5, 0.5, [0.80, 0.81, 0.79, 0.80, 0.805]),  # +4 pts over random's 0.76 at work 0.5
        ("on", 0.5, 0.6, [0.781, 0.779, 0.78, 0.7805, 0.7795]),  # random interpolated at 0.6: 0.78
        ("below", 0.5, 0.4, [0.70, 0.69, 0.71, 0.70, 0.695]),  # random at 0.4: 0.73
        ("chance", 0.9, 0.2, [0.11, 0.50, 0.52, 0.49, 0.51]),  # one seed at chance (10%)
        ("cheap", 0.95, 0.05, 0.5),  # below random's cheapest point: nothing to compare with
    ])
    f = verdicts.frontier_words(verdicts.frontier(runs, runs)).set_index("method")
    assert f.loc["above", "diff"] == pytest.approx(4.1, abs=0.2) and f.loc["above", "verdict"] == "above"
    assert f.loc["on", "verdict"] == "on" and f.loc["below", "verdict"] == "below"
    assert f.loc["chance", "verdict"] == "did not train in 1 of 5 seeds: no verdict"
    assert pd.isna(f.loc["chance", "p_holm"])
    assert f.loc["cheap", "verdict"] == "outside random's range" and f.loc["cheap", "outside"] == 5
    md = frontier_section(runs, None)
    assert "Holm over the 3 points" in md and "| chance | 0.9 |" in md


def test_no_section_without_two_random_points():
    runs = _runs([("x", 0.5, 0.5, 0.8)])
    assert frontier_section(runs[~((runs["method"] == "random_subset") & (runs["drop"] != 0.5))], None) == ""

