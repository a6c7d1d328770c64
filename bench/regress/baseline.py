"""The baselines (results/regress/baselines/<cpu model>.json) and the tolerances stored in them.

One baseline per CPU model: CPU-time ratios shift by a few percent between CPU models, and
even a 48-step run's accuracy, bit-identical from run to run on one model, is not across
models (IMPON moved 3.8 points between an AMD EPYC and an Intel Xeon VM, code unchanged).
The guard compares with this machine's model's baseline; where there is none, with the
newest other one, its accuracy tolerance widened to `other_cpu_points`, and says so.
Each baseline also stores `guard_rounds`: as many rounds (3 to ROUNDS) as fit the guard's
time budget on that CPU, and the tolerances are derived for that many.

Timing tolerances are per method, derived at `--update` from the spread of the rounds:
tolerance = max(floor, k x sigma), sigma being the standard error of the difference
between two medians, a guard run's (ROUNDS rounds) and the baseline's (UPDATE_ROUNDS). The
rules (k, floors, realized-work and accuracy tolerances) live in the file's "tolerances"
and are kept across updates; the per-method values are re-derived each time.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import re
import statistics
from pathlib import Path

from bench.device import cpu_model
from bench.errors import BenchError
from bench.paths import results_dir
from bench.regress.measure import ROUNDS

UPDATE_ROUNDS = 10  # rounds when writing a baseline: its median is then closer to the truth than a guard run's
MIN_GUARD_ROUNDS = 3
GUARD_BUDGET_SECONDS = 240.0  # the guard's rounds; a re-measure of one method and start-up fit in 5 minutes
TIMING = {"train_cost": "rel_rise", "speedup": "rel_drop"}  # timing metric -> its per-method tolerance key

DEFAULT_TOLERANCES: dict = {
    "backward_fraction": {"abs": 1e-9, "doc": "realized backward passes / (epochs x N); fails when |now - baseline| > abs"},
    "total_steps": {"doc": "optimizer steps taken; fails when it differs from the baseline at all"},
    "acc_delta_points": {"drop_points": 3.0, "other_cpu_points": 6.0,
                         "doc": "100 x (final test acc - uniform's); fails when now < baseline - drop_points "
                                "(other_cpu_points against another CPU model's baseline)"},
    "train_cost": {"floor": 0.04, "doc": "CPU time of steps + method + search over CPU time of steps, "
                                         "same run, median over rounds; fails when now > baseline x (1 + rel_rise)"},
    "speedup": {"floor": 0.05, "doc": "uniform's CPU cost (runs either side) over the method's, evaluation left out, "
                                      "median over rounds; fails when now < baseline x (1 - rel_drop)"},
    "k": 4.0,
    "per_method": {},  # derived at --update: {method: {"train_cost": {"rel_rise": x}, "speedup": {"rel_drop": y}}}
}


def baselines_dir() -> Path:
    return results_dir() / "regress" / "baselines"


def cpu_slug(cpu: str | None = None) -> str:
    """A file name for a CPU model: 'Intel(R) Xeon(R) Processor @ 2.80GHz (2 logical cores)' ->
    'intel-xeon-processor-2-80ghz-2-logical-cores'."""
    s = re.sub(r"\((r|tm)\)", "", (cpu or cpu_model()).lower())
    return re.sub(r"[^a-z0-9]+", "-", s).strip("-") or "unknown-cpu"


def baseline_path() -> Path:
    """This machine's CPU model's baseline (where --update writes)."""
    return baselines_dir() / f"{cpu_slug()}.json"


def find_baseline() -> Path:
    """The baseline to compare with: this CPU model's, else the newest other one."""
    own = baseline_path()
    if own.exists():
        return own
    others = []
    for p in sorted(baselines_dir().glob("*.json")):
        try:
            others.append((json.loads(p.read_text()).get("created", ""), p))
        except (OSError, ValueError):
            continue
    return max(others)[1] if others else own  # none at all: load_baseline says how to make one


def guard_rounds(wall_seconds: float, rounds: int) -> int:
    """Rounds a guard run makes on the CPU a baseline was measured on: as many as fit the budget."""
    per_round = wall_seconds / max(1, rounds)
    return max(MIN_GUARD_ROUNDS, min(ROUNDS, int(GUARD_BUDGET_SECONDS // max(per_round, 1e-9))))


def spread(samples: list[float]) -> float:
    """Relative standard deviation of one round's value: the larger of two robust estimates, from
    the median absolute deviation and from the interquartile range (0 for fewer than two samples).
    Robust, like the medians compared: one run slowed by a burst of load widens no tolerance. The
    MAD alone is blind to a second mode that holds a quarter to a half of the rounds; the IQR is
    not (swift_sampler's speedup: 3 of 10 baseline rounds at 0.58-0.63, the rest at 0.64-0.66; MAD
    2.0%, IQR 3.0%; guard runs on the same VM model then read 0.604, 0.613 and 0.699)."""
    if len(samples) < 2:
        return 0.0
    mid = statistics.median(samples)
    if not mid:
        return 0.0
    mad = 1.4826 * statistics.median(abs(x - mid) for x in samples)
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return max(mad, (q3 - q1) / 1.349) / mid


def sigma_of_median(single: float, rounds: int) -> float:
    return 1.2533 * single / math.sqrt(max(1, rounds))  # standard error of a median of normal samples


def derive_tolerances(now: dict, rules: dict, rounds: int = ROUNDS) -> dict:
    """Per-method timing tolerances from the spread of `now`'s rounds (see the module docstring)."""
    k = float(rules.get("k", DEFAULT_TOLERANCES["k"]))
    out: dict = {}
    for lab, row in now["methods"].items():
        for metric, key in TIMING.items():
            xs = row["samples"][metric]
            if len(xs) < 2:
                continue  # the reference's speedup is 1 by definition
            single = spread(xs)
            sigma = math.hypot(sigma_of_median(single, rounds), sigma_of_median(single, len(xs)))
            floor = float(rules.get(metric, {}).get("floor", DEFAULT_TOLERANCES[metric]["floor"]))
            out.setdefault(lab, {})[metric] = {key: math.ceil(1000 * max(floor, k * sigma)) / 1000}
    return out


def tolerance(tolerances: dict, method: str, metric: str, key: str) -> float:
    over = tolerances.get("per_method", {}).get(method, {}).get(metric, {})
    if key in over:
        return float(over[key])
    if key in tolerances.get(metric, {}):
        return float(tolerances[metric][key])
    if metric in TIMING:  # a method without a derived tolerance: the floor
        return float(tolerances.get(metric, {}).get("floor", DEFAULT_TOLERANCES[metric]["floor"]))
    return float(DEFAULT_TOLERANCES[metric][key])


def load_baseline(path: Path) -> dict:
    if not path.exists():
        raise BenchError(f"no regression baseline at {path}; create it on purpose with `python -m bench regress --update`")
    try:
        base = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BenchError(f"regression baseline {path} is not valid JSON (line {e.lineno}): {e.msg}") from None
    if "train_cost" not in next(iter(base.get("methods", {}).values()), {"train_cost": 0}):
        raise BenchError(f"regression baseline {path} is of an older format (no train_cost); "
                         "rewrite it with `python -m bench regress --update`")
    return base


def make_baseline(now: dict, rules: dict) -> dict:
    from bench.cell import git_commit

    n = guard_rounds(now["wall_seconds"], now["rounds"])
    tolerances = {**json.loads(json.dumps(rules)), "per_method": derive_tolerances(now, rules, rounds=n)}
    return {
        "about": ("Regression baseline of `python -m bench regress` (bench/regress/): per method, realized work, "
                  "CPU-time train cost and speedup over uniform (medians over rounds, with their samples) and the "
                  "accuracy change over uniform, on one CPU model. Rewrite only on purpose, on a machine of that "
                  "model: `python -m bench regress --update`. Rules in tolerances are kept across updates; per_method "
                  "tolerances are re-derived from the rounds' spread."),
        "suite": now["suite"],
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "git_commit": git_commit(),
        "hardware": now["hardware"],
        "cpu": cpu_model(),
        "torch": now["torch"],
        "python": platform.python_version(),
        "rounds": now["rounds"],
        "measurement_wall_seconds": round(now["wall_seconds"], 1),
        "guard_rounds": n,
        "tolerances": tolerances,
        "reference": now["reference"],
        "methods": now["methods"],
    }


def rules_of(baseline: dict | None) -> dict:
    """The tolerance rules to keep: the file's, without its derived per-method values."""
    rules = json.loads(json.dumps((baseline or {}).get("tolerances") or DEFAULT_TOLERANCES))
    if "k" not in rules or "floor" not in rules.get("train_cost", {}):  # an older file: start from the defaults
        rules = json.loads(json.dumps(DEFAULT_TOLERANCES))
    for metric, keys in DEFAULT_TOLERANCES.items():  # rules added since the file was written
        if isinstance(keys, dict) and metric != "per_method":
            rules.setdefault(metric, {})
            for key, value in keys.items():
                rules[metric].setdefault(key, value)
    rules["per_method"] = {}
    return rules


def write_baseline(path: Path, baseline: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(baseline, indent=1) + "\n")
    os.replace(tmp, path)
