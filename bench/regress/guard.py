"""The guard's entry point: measure, compare with the baseline, re-measure what failed on
time alone, print, and say pass or fail (or write the baseline with --update)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from bench.regress import measure as measuring
from bench.regress.baseline import (UPDATE_ROUNDS, baseline_path, cpu_model, find_baseline, load_baseline, make_baseline,
                                    rules_of, write_baseline)
from bench.regress.compare import NEW, compare, failed, failed_timing
from bench.regress.report import detectable_summary, table, warnings
from bench.suite import load_suite


def main(update: bool = False, suite_name: str = "regress", baseline_file: str | Path | None = None,
         log: Callable[..., None] = print, rounds: int | None = None) -> int:
    """0: every check inside tolerance (or baseline written); 1: a regression (the table says which)."""
    suite = load_suite(suite_name)
    path = Path(baseline_file) if baseline_file else baseline_path() if update else find_baseline()
    old = None
    if path.exists():
        old = load_baseline(path) if not update else _load_quietly(path)
    elif not update:
        load_baseline(path)  # raises the one-line "run --update" error before anything trains
    rules = rules_of(old)
    other_cpu = not update and old.get("cpu") not in (None, cpu_model())
    if other_cpu:
        log(f"note: no baseline for this CPU ({cpu_model()}); comparing with {path.name} ({old.get('cpu')}): "
            "CPU-time ratios shift by a few percent between CPU models, and accuracy is checked at "
            f"other_cpu_points; add this machine's with `python -m bench regress --update`")

    t0 = time.perf_counter()
    n = rounds or (UPDATE_ROUNDS if update else int(old.get("guard_rounds", measuring.ROUNDS)))
    now = measuring.measure(suite, rounds=n, log=log)

    if update:
        if now["errors"]:
            log(table(compare({"methods": {}}, now, rules)))
            log(f"regress: NOT writing the baseline: {len(now['errors'])} method(s) crashed: "
                f"{', '.join(now['errors'])}; fix them (or leave them out of the suite) and run --update again")
            return 1
        base = make_baseline(now, rules)
        checks = compare(base, now)
        log(table(checks))
        log(detectable_summary(checks))
        write_baseline(path, base)
        log(f"regress: baseline written to {path} ({len(now['methods'])} methods, {now['rounds']} rounds, "
            f"guard runs {base['guard_rounds']} rounds, {base['cpu']}, {base['hardware']}, torch {base['torch']}, commit {base['git_commit']}) in {time.perf_counter() - t0:.0f} s")
        return 0

    checks = compare(old, now, other_cpu=other_cpu)
    again = failed_timing(checks)
    if again:
        log(f"regress: re-measuring {', '.join(sorted(again))} (a timing check failed; the better measurement counts)")
        measuring.merge_better(now, measuring.measure(suite, rounds=now["rounds"], log=log, only=again))
        checks = compare(old, now, other_cpu=other_cpu)
    elapsed = time.perf_counter() - t0
    log("")
    log(table(checks))
    log(detectable_summary(checks))
    for w in warnings(old, now):
        log(f"note: {w}")
    bad = failed(checks)
    if bad:
        log(f"regress: FAIL in {elapsed:.0f} s: {len(bad)} check(s) outside tolerance: "
            + ", ".join(f"{c.method} {c.metric}" if c.metric != "-" else c.method for c in bad)
            + f". Baseline: {path} (commit {old.get('git_commit')}, {old.get('created')}). If the change is "
            "intended, rewrite it with `python -m bench regress --update`.")
        return 1
    new = [c.method for c in checks if c.verdict == NEW]
    log(f"regress: PASS in {elapsed:.0f} s: {len({c.method for c in checks}) - len(new)} method(s) inside tolerance"
        + (f"; new, not in the baseline: {', '.join(new)} (run --update to add them)" if new else ""))
    return 0


def _load_quietly(path: Path) -> dict | None:
    """An existing baseline when updating: only its rules are kept, so an old format is fine."""
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
