"""How good is the guard on this machine? `python -m bench.regress.calibrate`

Runs the whole guard against the committed baseline, unchanged `--false-alarm` times
(each should pass) and with CPU work injected into one method `--sensitivity` times (each
should fail; the method rotates through the suite, the work is `--share` of its training
cost per step, measured just before, as a busy loop). By default a child process keeps one core busy throughout,
the condition the guard is meant for. Writes results/regress/calibration-<cpu model>.json
and .md, naming the machine, after every guard run (a stopped calibration keeps what it did). Takes about (runs x the guard's time): ~75 minutes for 10 + 20.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.errors import BenchError
from bench.regress.baseline import baselines_dir, cpu_model, cpu_slug, find_baseline, load_baseline
from bench.regress.guard import main as guard
from bench.regress.inject import inject_cpu_work, per_step_seconds_now
from bench.suite import load_suite


def _one(baseline_file: Path, suite: str, method: str | None = None) -> dict:
    lines: list[str] = []
    t0 = time.perf_counter()
    rc = guard(suite_name=suite, baseline_file=baseline_file, log=lambda *a: lines.extend(" ".join(map(str, a)).splitlines()))
    verdict = next((ln for ln in reversed(lines) if ln.startswith("regress: ")), "")
    return {"failed": rc != 0, "wall_seconds": round(time.perf_counter() - t0, 1), "verdict": verdict,
            "detectable": next((ln for ln in lines if ln.startswith("detectable slowdown")), ""),
            # the injected method's timing rows, as printed (its own change against its tolerance)
            "rows": [ln for ln in lines if method and ln.startswith(method + " ")
                     and (" train_cost " in ln or " speedup " in ln)]}


def calibrate(sensitivity: int, false_alarm: int, share: float, busy: bool, suite: str, out: Path,
              baseline_file: Path | None = None, resume: bool = False) -> dict:
    """`sensitivity` and `false_alarm` are totals; with `resume`, the runs already in this CPU
    model's record (same baseline and settings) count, and the injected method's rotation goes on."""
    path = baseline_file or find_baseline()
    base = load_baseline(path)
    methods = sorted(m for m in base["methods"] if m not in base.get("reference", {}))
    unchanged, injected = _done(out, base, path, busy, share) if resume else ([], [])
    planned = {"false_alarm": false_alarm, "sensitivity": sensitivity}
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        for i in range(len(unchanged), false_alarm):
            unchanged.append(_one(path, suite))
            print(f"unchanged {i + 1}/{false_alarm}: {'FAIL' if unchanged[-1]['failed'] else 'pass'} "
                  f"({unchanged[-1]['wall_seconds']:.0f} s) {unchanged[-1]['verdict'][:200]}", flush=True)
            _write(out, base, path, busy, share, unchanged, injected, planned)
        for i in range(len(injected), sensitivity):
            m = methods[i % len(methods)]
            with inject_cpu_work(m, per_step_seconds_now(load_suite(suite), m, share)):
                r = _one(path, suite, m)
            r["method"] = m
            r["caught_by_method"] = f"{m} train_cost" in r["verdict"] or f"{m} speedup" in r["verdict"]
            injected.append(r)
            print(f"{100 * share:.0f}% into {m} {i + 1}/{sensitivity}: {'FAIL' if r['failed'] else 'pass'} "
                  f"({r['wall_seconds']:.0f} s) {r['verdict'][:200]}", flush=True)
            _write(out, base, path, busy, share, unchanged, injected, planned)
    finally:
        if hog is not None:
            hog.terminate()
            hog.wait()
    return _write(out, base, path, busy, share, unchanged, injected, planned)


def _done(out: Path, base: dict, path: Path, busy: bool, share: float) -> tuple[list, list]:
    """The runs of an earlier calibration of this CPU model against the same baseline and settings."""
    f = _record(out).with_suffix(".json")
    if not f.exists():
        return [], []
    r = json.loads(f.read_text())
    if (r.get("baseline"), r.get("baseline_created"), r.get("one_core_kept_busy"), r.get("injected_share")) != (
            path.name, base["created"], busy, share):
        raise BenchError(f"{f} was made against another baseline or with other settings; "
                         "move it away to start afresh, or drop --resume")
    return r["false_alarms"]["details"], r["sensitivity"]["details"]


def _write(out: Path, base: dict, path: Path, busy: bool, share: float, unchanged: list, injected: list,
           planned: dict) -> dict:
    walls = [r["wall_seconds"] for r in unchanged + injected]
    result = {
        "machine": f"{platform.node()}: {cpu_model()}",
        "hardware": base["hardware"], "torch": base["torch"], "baseline": path.name, "baseline_created": base["created"],
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "one_core_kept_busy": busy, "injected_share": share, "planned_runs": planned,
        "false_alarms": {"runs": len(unchanged), "passed": sum(not r["failed"] for r in unchanged), "details": unchanged},
        "sensitivity": {"runs": len(injected), "failed": sum(r["failed"] for r in injected),
                        "failed_on_the_injected_method": sum(r["caught_by_method"] for r in injected),
                        "details": injected},
        "guard_wall_seconds": {"median": statistics.median(walls), "max": max(walls)} if walls else {},
    }
    out.mkdir(parents=True, exist_ok=True)
    _record(out).with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    _record(out).with_suffix(".md").write_text(_markdown(result))
    return result


def _record(out: Path) -> Path:
    """This CPU model's calibration record, without its suffix."""
    return out / f"calibration-{cpu_slug()}"


def _markdown(r: dict) -> str:
    fa, se, w = r["false_alarms"], r["sensitivity"], r["guard_wall_seconds"]
    return (f"# Regression guard calibration\n\nMachine: {r['machine']} ({r['hardware']}, torch {r['torch']}), "
            f"{r['date']}; one core kept busy by another process: {'yes' if r['one_core_kept_busy'] else 'no'}.\n"
            f"Baseline: {r.get('baseline', 'baseline.json')}, {r['baseline_created']}.\n"
            + (f"Runs done: {r['false_alarms']['runs']} of {r['planned_runs']['false_alarm']} unchanged, "
               f"{r['sensitivity']['runs']} of {r['planned_runs']['sensitivity']} injected.\n" if "planned_runs" in r else "")
            + "\n"
            f"- Unchanged code passed {fa['passed']} of {fa['runs']} runs (goal: at least 19 of 20).\n"
            f"- {100 * r['injected_share']:.0f}% CPU work injected into one method failed the guard in {se['failed']} "
            f"of {se['runs']} runs, {se['failed_on_the_injected_method']} of them on that method (goal: at least 9 of 10).\n"
            + (f"- Guard wall time: median {w['median']:.0f} s, max {w['max']:.0f} s (goal: at most 300 s).\n" if w else ""))


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.regress.calibrate", description=__doc__.splitlines()[0])
    p.add_argument("--sensitivity", type=int, default=10, help="guard runs with injected CPU work (default 10)")
    p.add_argument("--false-alarm", type=int, default=20, help="guard runs on unchanged code (default 20)")
    p.add_argument("--share", type=float, default=0.10, help="injected work as a share of training cost (default 0.10)")
    p.add_argument("--no-busy", dest="busy", action="store_false", help="do not keep one core busy meanwhile")
    p.add_argument("--suite", default="regress")
    p.add_argument("--baseline", type=Path, default=None, help="baseline file (default: this CPU model's in results/regress/baselines/)")
    p.add_argument("--resume", action="store_true",
                   help="count the runs already recorded for this CPU model (same baseline and settings) and do the rest")
    p.add_argument("--out", type=Path, default=None, help="folder for calibration-<cpu model>.json/.md (default results/regress)")
    a = p.parse_args(argv)
    out = a.out or baselines_dir().parent
    r = calibrate(a.sensitivity, a.false_alarm, a.share, a.busy, a.suite, out, a.baseline, a.resume)
    print(_markdown(r))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(cli())
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
