"""CPU regression guard: `python -m bench regress [--update] [--suite NAME]`.

Runs a small fixed suite (results/suites/regress.yaml: tiny_cnn on a 1,000-image
Fashion-MNIST subset, 3 epochs, every registered method at drop 0.5, one seed)
and compares each method with the committed baseline, results/regress/baseline.json.

Always trains fresh: every cell runs into a temporary MLflow store and checkpoint
folder (MLFLOW_TRACKING_URI and BENCH_CHECKPOINTS point into a temporary directory
for the duration and are restored after), so finished-cell skipping can never hide
a regression and the user's store is never touched. Each run is marked
`cell_status=superseded` once measured, so the reference can train again in the
same store.

Torch runs with one intra-op thread while measuring (`THREADS`, restored after;
the hardware name then reads `cpu-<arch>-1threads`). On a 2-core machine shared
with other processes, two OpenMP threads stall at every barrier when one is
descheduled: tiny cells then vary 2-4x from run to run, where one thread varies a
few percent (measured while writing this guard). One thread is also the same on
every CI runner whatever its core count.

Per method three checks (tolerances live in the baseline file, "tolerances"):

- backward_fraction: realized backward passes / (epochs x N). Must equal the
  baseline to `backward_fraction.abs` (1e-9): a change in realized work is a change
  in behaviour, in either direction.
- speedup: uniform end-to-end seconds / the method's end-to-end seconds, both
  measured in this run. A ratio, so a faster or slower machine cancels out. Fails
  when it falls more than `speedup.rel_drop` (30%) below the baseline's. On tiny
  CPU cells it mostly reflects the method's own overhead (selection, scoring,
  search): an injected slowdown there shows. Uniform is run `REFERENCE_RUNS` (3)
  times, spread evenly through the run (first, middle and last cell), after one
  untimed warm-up cell, and their mean is the reference, so slow drift in machine
  load cancels. A method failing this check is re-measured once (with fresh
  uniform runs around it) and keeps its better speedup: a real regression fails
  twice, a burst of load from another process rarely does.
- acc_delta_points: 100 x (final test accuracy - uniform's), in points. Fails when
  it falls more than `acc_delta_points.drop_points` (3) below the baseline's. CPU
  training is deterministic for a given code and machine.

A method present now but not in the baseline is reported "new (not in baseline;
run --update)" and does not fail; one in the baseline that is gone (or crashed)
fails. `--update` rewrites the baseline on purpose (with hardware, torch version,
date and git commit), keeping the tolerances already in the file.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from bench.config import CellConfig
from bench.errors import BenchError
from bench.paths import results_dir
from bench.suite import REFERENCE, Suite, load_suite

THREADS = 1  # torch intra-op threads while measuring (restored after); see the module docstring
REFERENCE_RUNS = 3  # uniform runs per measurement, spread evenly (first, middle, last cell); their mean is the reference
RETRIES = 1  # re-measurements of a method whose speedup check failed; the best speedup counts
METRICS = ("backward_fraction", "speedup", "acc_delta_points")

DEFAULT_TOLERANCES: dict[str, Any] = {
    "backward_fraction": {
        "abs": 1e-9,
        "doc": "realized backward passes / (epochs x N); fails when |now - baseline| > abs, in either direction",
    },
    "speedup": {
        "rel_drop": 0.30,
        "doc": "uniform e2e seconds / method e2e seconds, both from the same run; fails when now < baseline x (1 - rel_drop)",
    },
    "acc_delta_points": {
        "drop_points": 3.0,
        "doc": "100 x (final test acc - uniform's final test acc); fails when now < baseline - drop_points",
    },
    "per_method": {},  # e.g. {"swift_sampler": {"speedup": {"rel_drop": 0.5}}}: overrides for one method
}

NEW = "new (not in baseline; run --update)"


def baseline_path() -> Path:
    return results_dir() / "regress" / "baseline.json"


# -- measurement ------------------------------------------------------------------------


@contextlib.contextmanager
def temporary_store(root: Path) -> Iterator[Path]:
    """Point MLflow and the checkpoints at a fresh folder under `root` for the duration."""
    root.mkdir(parents=True, exist_ok=True)
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "BENCH_CHECKPOINTS")}
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["BENCH_CHECKPOINTS"] = str(root / "checkpoints")
    try:
        yield root
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def label(cfg: CellConfig, cells: list[CellConfig]) -> str:
    """The method's name, or more where the suite has several cells of one method."""
    if sum(c.method == cfg.method for c in cells) == 1:
        return cfg.method
    return f"{cfg.method} {cfg.model}/{cfg.dataset} drop={cfg.drop:g} seed={cfg.seed}"


def _reference_of(cfg: CellConfig, suite: Suite) -> str:
    return cfg.replace(method=REFERENCE, drop=0.0, params=dict(suite.method_params.get(REFERENCE, {}))).config_key()


def _run(cfg: CellConfig, store: Path, log, repeatable: bool = False) -> dict[str, float]:
    """Train one cell fresh into `store`; its final metrics (and `wall_seconds`). A
    `repeatable` run is marked superseded after, so the same cell can train again there."""
    from bench import tracking
    from bench.cell import run_cell

    t0 = time.perf_counter()
    with temporary_store(store):
        res = run_cell(cfg, tags={"suite": "regress"}, log=lambda *_: None)
        if repeatable and res.status == "finished":
            tracking.client().set_tag(res.run_id, "cell_status", "superseded")
    if res.status != "finished":  # a fresh store: cannot happen, and must never pass silently
        raise BenchError(f"regress: cell {cfg.method} was not trained fresh ({res.status})")
    m = dict(res.metrics)
    m["wall_seconds"] = time.perf_counter() - t0
    return m


def _spread(n_refs: int, items: list) -> list:
    """Interleave `n_refs` reference slots (None) evenly with `items`: first and last for 2,
    first, middle and last for 3."""
    if n_refs <= 1:
        return [None, *items]
    out, per = [], len(items) / (n_refs - 1)
    for r in range(n_refs - 1):
        out.append(None)
        out.extend(items[round(r * per): round((r + 1) * per)])
    out.append(None)
    return out


def _run_round(cells: list[CellConfig], refs: list[CellConfig], tmp: Path, n_refs: int, log,
               warm_up: bool) -> tuple[dict[str, dict], dict[str, list[dict]], dict[str, str]]:
    """Run the reference cells `n_refs` times spread around `cells`. Returns metrics per
    config_key of the method cells, the list of reference runs per reference key, errors."""
    got: dict[str, dict] = {}
    ref_runs: dict[str, list[dict]] = {r.config_key(): [] for r in refs}
    errors: dict[str, str] = {}
    if warm_up and refs:  # lazy initialisation of torch and MLflow off the reference's clock
        w = refs[0].replace(epochs=1, train_limit=min(refs[0].train_limit or 200, 200), eval_limit=100)
        log(f"  warm-up: {w.model}/{w.dataset}/{w.method} (1 epoch, 200 images, not measured)")
        _run(w, tmp, log)
    order = _spread(n_refs, cells)
    for cfg in order:
        if cfg is None:
            for r in refs:
                t0 = time.perf_counter()
                try:
                    m = _run(r, tmp, log, repeatable=True)
                except BenchError:
                    raise
                except Exception as e:  # without the reference nothing can be compared
                    raise BenchError(f"regress: the {r.method} reference cell failed ({type(e).__name__}: "
                                     f"{str(e).splitlines()[0] if str(e) else ''}); no speedup can be measured") from e
                ref_runs[r.config_key()].append(m)
                log(f"  {r.method:20s} e2e {m['e2e_seconds']:7.2f} s  test acc {m['final_test_acc']:.4f}  "
                    f"(reference {len(ref_runs[r.config_key()])}/{n_refs}, {time.perf_counter() - t0:.0f} s wall)")
            continue
        try:
            m = _run(cfg, tmp, log, repeatable=True)
            got[cfg.config_key()] = m
            log(f"  {cfg.method:20s} e2e {m['e2e_seconds']:7.2f} s  test acc {m['final_test_acc']:.4f}  "
                f"backward fraction {m['backward_fraction']:.4f}")
        except KeyboardInterrupt:
            raise
        except Exception as e:  # a broken method is a finding, not a crash of the guard
            errors[cfg.config_key()] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            log(f"  {cfg.method:20s} FAILED: {errors[cfg.config_key()]}")
    return got, ref_runs, errors


def _row(m: dict, ref: list[dict]) -> dict[str, float]:
    ref_e2e = sum(r["e2e_seconds"] for r in ref) / len(ref)
    ref_acc = sum(r["final_test_acc"] for r in ref) / len(ref)
    return {
        "backward_fraction": float(m["backward_fraction"]),
        "speedup": ref_e2e / m["e2e_seconds"] if m["e2e_seconds"] > 0 else float("nan"),
        "acc_delta_points": 100.0 * (float(m["final_test_acc"]) - ref_acc),
        "e2e_seconds": float(m["e2e_seconds"]),
        "reference_e2e_seconds": ref_e2e,
        "final_test_acc": float(m["final_test_acc"]),
        "total_steps": int(m.get("total_steps", 0)),
    }


def measure(suite: Suite, log: Callable[..., None] = print, reference_runs: int = REFERENCE_RUNS,
            retry_below: Callable[[str, float], bool] | None = None, workdir: str | Path | None = None,
            threads: int = THREADS) -> dict:
    """Train every cell of `suite` fresh with `threads` torch threads (see `_measure`)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _measure(suite, log, reference_runs, retry_below, workdir)
    finally:
        torch.set_num_threads(before)


def _measure(suite: Suite, log, reference_runs: int, retry_below, workdir) -> dict:
    """Train every cell of `suite` fresh (CPU), the reference `reference_runs` times spread
    around them. `retry_below(label, speedup)` says which speedups to re-measure once.

    Returns {"methods": {label: {backward_fraction, speedup, acc_delta_points, e2e_seconds,
    reference_e2e_seconds, final_test_acc, total_steps, config_key}}, "errors": {label: msg},
    "reference": {label: {e2e_seconds: [...], final_test_acc: [...]}}, "hardware", "torch",
    "wall_seconds"}."""
    import torch

    from bench.engine import hardware_name, pick_device

    t_start = time.perf_counter()
    all_cells = [c.replace(progress=False) for c in suite.cells()]
    refs = [c for c in all_cells if c.method == REFERENCE]
    cells = [c for c in all_cells if c.method != REFERENCE]
    ref_by_key = {r.config_key(): r for r in refs}
    for c in cells:
        if _reference_of(c, suite) not in ref_by_key:
            raise BenchError(f"suite {suite.name}: cell {label(c, all_cells)} has no uniform reference with the same "
                             "model, dataset, seed and settings")
    devices = {c.device for c in all_cells}
    hardware = ", ".join(sorted(hardware_name(pick_device(d)) for d in devices))
    log(f"regress: suite {suite.name}, {len(cells)} method cells + uniform x {reference_runs}, trained fresh "
        f"into a temporary store on {hardware}" + (f" (expected: {suite.expected_runtime})" if suite.expected_runtime else ""))

    with tempfile.TemporaryDirectory(prefix="bench-regress-", dir=workdir) as tmp:
        tmp = Path(tmp)
        got, ref_runs, errors = _run_round(cells, refs, tmp / "round-0", reference_runs, log, warm_up=True)
        methods = {}
        for c in cells:
            if c.config_key() in got:
                methods[label(c, all_cells)] = {**_row(got[c.config_key()], ref_runs[_reference_of(c, suite)]),
                                                "config_key": c.config_key()}
        for r in refs:
            methods[label(r, all_cells)] = {**_row(ref_runs[r.config_key()][0], ref_runs[r.config_key()]),
                                            "speedup": 1.0, "config_key": r.config_key()}
        retried = []
        for attempt in range(1, RETRIES + 1 if retry_below else 1):
            again = [c for c in cells if c.config_key() in got
                     and retry_below(label(c, all_cells), methods[label(c, all_cells)]["speedup"])]
            if not again:
                break
            log(f"regress: re-measuring the speedup of {', '.join(label(c, all_cells) for c in again)} "
                "(outside tolerance on the first measurement)")
            used = {_reference_of(c, suite) for c in again}
            got2, ref2, err2 = _run_round(again, [r for r in refs if r.config_key() in used],
                                          tmp / f"round-{attempt}", 2, log, warm_up=False)
            for c in again:
                lab = label(c, all_cells)
                if c.config_key() not in got2:
                    log(f"  {lab}: re-measurement failed ({err2.get(c.config_key(), 'unknown error')}); keeping the first")
                    continue
                row2 = _row(got2[c.config_key()], ref2[_reference_of(c, suite)])
                first = methods[lab]["speedup"]
                if row2["speedup"] > first:
                    methods[lab].update({k: row2[k] for k in ("speedup", "e2e_seconds", "reference_e2e_seconds")})
                methods[lab]["speedup_measurements"] = [first, row2["speedup"]]
                retried.append(lab)

    reference = {label(r, all_cells): {"e2e_seconds": [x["e2e_seconds"] for x in ref_runs[r.config_key()]],
                                       "final_test_acc": [x["final_test_acc"] for x in ref_runs[r.config_key()]]}
                 for r in refs}
    return {
        "suite": suite.name,
        "hardware": hardware,
        "torch": torch.__version__,
        "methods": methods,
        "errors": {label(c, all_cells): errors[c.config_key()] for c in cells if c.config_key() in errors},
        "reference": reference,
        "retried": retried,
        "wall_seconds": time.perf_counter() - t_start,
    }


# -- comparison (pure) ------------------------------------------------------------------


@dataclass
class Check:
    method: str
    metric: str
    baseline: float | None
    now: float | None
    change: str
    tolerance: str
    verdict: str
    failed: bool


def tolerance(tolerances: dict, method: str, metric: str, key: str) -> float:
    over = tolerances.get("per_method", {}).get(method, {}).get(metric, {})
    if key in over:
        return float(over[key])
    if key in tolerances.get(metric, {}):
        return float(tolerances[metric][key])
    return float(DEFAULT_TOLERANCES[metric][key])


def speedup_floor(tolerances: dict, method: str, baseline_speedup: float) -> float:
    return baseline_speedup * (1.0 - tolerance(tolerances, method, "speedup", "rel_drop"))


def _finite(*xs) -> bool:
    return all(isinstance(x, (int, float)) and math.isfinite(x) for x in xs)


def check_metric(method: str, metric: str, base: float, now: float, tolerances: dict) -> Check:
    """One metric of one method against the baseline."""
    if metric == "backward_fraction":
        tol = tolerance(tolerances, method, metric, "abs")
        ok = _finite(base, now) and abs(now - base) <= tol
        return Check(method, metric, base, now, f"{now - base:+.3g}" if _finite(base, now) else "?",
                     f"|change| <= {tol:g}", "ok" if ok else "FAIL: realized work changed", not ok)
    if metric == "speedup":
        rel = tolerance(tolerances, method, metric, "rel_drop")
        ok = _finite(base, now) and now >= base * (1.0 - rel)
        change = f"{100 * (now / base - 1):+.1f}%" if _finite(base, now) and base else "?"
        verdict = "ok" if ok else "FAIL: slower"
        if ok and now > base * (1.0 + rel):
            verdict = "ok (faster; --update to keep)"
        return Check(method, metric, base, now, change, f">= -{100 * rel:g}%", verdict, not ok)
    if metric == "acc_delta_points":
        pts = tolerance(tolerances, method, metric, "drop_points")
        ok = _finite(base, now) and now >= base - pts
        return Check(method, metric, base, now, f"{now - base:+.2f} pt" if _finite(base, now) else "?",
                     f">= -{pts:g} pt", "ok" if ok else "FAIL: less accurate", not ok)
    raise ValueError(f"unknown metric {metric!r}")


def compare(baseline: dict, now: dict, tolerances: dict | None = None) -> list[Check]:
    """Every check of a measurement `now` against `baseline` (both as written by `measure`).
    Tolerances: `tolerances`, else the baseline's, else the defaults."""
    tol = tolerances if tolerances is not None else baseline.get("tolerances", DEFAULT_TOLERANCES)
    base_m, now_m, errors = baseline.get("methods", {}), now.get("methods", {}), now.get("errors", {})
    out: list[Check] = []
    for method in sorted(set(base_m) | set(now_m) | set(errors)):
        if method in errors:
            out.append(Check(method, "-", None, None, "", "", f"FAIL: crashed: {errors[method]}", True))
        elif method not in now_m:
            out.append(Check(method, "-", None, None, "", "", "FAIL: missing (in baseline, not run now)", True))
        elif method not in base_m:
            out.append(Check(method, "-", None, None, "", "", NEW, False))
        else:
            for metric in METRICS:
                if method in now.get("reference", {}) and metric != "backward_fraction":
                    continue  # the reference's speedup is 1 and its accuracy delta 0 by definition
                out.append(check_metric(method, metric, base_m[method][metric], now_m[method][metric], tol))
    return out


def failed(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.failed]


def _fmt(metric: str, v: float | None) -> str:
    if v is None:
        return "-"
    if metric == "backward_fraction":
        return f"{v:.6f}"
    if metric == "speedup":
        return f"{v:.3f}x"
    return f"{v:+.2f} pt"


def table(checks: list[Check]) -> str:
    head = ("method", "metric", "baseline", "now", "change", "tolerance", "verdict")
    rows = [(c.method, c.metric, _fmt(c.metric, c.baseline), _fmt(c.metric, c.now), c.change, c.tolerance, c.verdict)
            for c in checks]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    line = lambda r: "  ".join(s.ljust(w) for s, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(tuple("-" * w for w in widths)), *(line(r) for r in rows)])


# -- baseline file ----------------------------------------------------------------------


def load_baseline(path: Path) -> dict:
    if not path.exists():
        raise BenchError(f"no regression baseline at {path}; create it on purpose with `python -m bench regress --update`")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BenchError(f"regression baseline {path} is not valid JSON (line {e.lineno}): {e.msg}") from None


def make_baseline(now: dict, tolerances: dict | None = None) -> dict:
    from bench.cell import git_commit

    return {
        "about": ("Regression baseline of `python -m bench regress` (bench/regress.py): per method, the realized "
                  "backward fraction, the end-to-end speedup over uniform measured in the same run, and the test "
                  "accuracy change over uniform in points. Rewrite only on purpose: `python -m bench regress --update`. "
                  "Tolerances are kept across updates; edit them here."),
        "suite": now["suite"],
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "git_commit": git_commit(),
        "hardware": now["hardware"],
        "cpu": _cpu_model(),
        "torch": now["torch"],
        "python": platform.python_version(),
        "measurement_wall_seconds": round(now["wall_seconds"], 1),
        "tolerances": tolerances if tolerances is not None else json.loads(json.dumps(DEFAULT_TOLERANCES)),
        "reference": now["reference"],
        "methods": now["methods"],
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} logical cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} logical cores)"


def write_baseline(path: Path, baseline: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(baseline, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


# -- entry point ------------------------------------------------------------------------


def _warnings(baseline: dict, now: dict) -> list[str]:
    out = []
    if baseline.get("suite") != now["suite"]:
        out.append(f"baseline was made with suite {baseline.get('suite')!r}, this run used {now['suite']!r}")
    if baseline.get("hardware") != now["hardware"] or baseline.get("torch") != now["torch"]:
        out.append(f"baseline hardware/torch {baseline.get('hardware')} / torch {baseline.get('torch')} differ from "
                   f"this machine's {now['hardware']} / torch {now['torch']}: speedups are ratios and carry over, but "
                   "loss-driven selections (realized work) and accuracy may differ slightly; --update on the CI machine")
    changed = [m for m, row in now["methods"].items()
               if m in baseline.get("methods", {}) and baseline["methods"][m].get("config_key") not in (None, row["config_key"])]
    if changed:
        out.append(f"cell settings changed since the baseline for {', '.join(changed)} (suite edited?): run --update")
    for name, ref in now.get("reference", {}).items():
        e2e = ref["e2e_seconds"]
        if len(e2e) > 1 and min(e2e) > 0 and max(e2e) / min(e2e) > 1.15:
            out.append(f"{name} end-to-end times varied by {100 * (max(e2e) / min(e2e) - 1):.0f}% within this run "
                       f"({', '.join(f'{x:.1f}' for x in e2e)} s): the machine is busy, speedups are noisy")
        if len(set(ref["final_test_acc"])) > 1:
            out.append(f"{name} accuracy differed between identical runs ({ref['final_test_acc']}): CPU training "
                       "is not deterministic here")
    return out


def main(update: bool = False, suite_name: str = "regress", baseline_file: str | Path | None = None,
         log: Callable[..., None] = print) -> int:
    """0: every check inside tolerance (or baseline written); 1: a regression (table says which)."""
    suite = load_suite(suite_name)
    path = Path(baseline_file) if baseline_file else baseline_path()
    old = None
    if path.exists():
        old = load_baseline(path)
    elif not update:
        load_baseline(path)  # raises the one-line "run --update" error before anything trains
    tol = (old or {}).get("tolerances") or json.loads(json.dumps(DEFAULT_TOLERANCES))

    t0 = time.perf_counter()
    retry = None
    if old is not None and not update:
        base_m = old.get("methods", {})
        retry = lambda m, s: m in base_m and not (_finite(s) and s >= speedup_floor(tol, m, base_m[m]["speedup"]))  # noqa: E731
    now = measure(suite, log=log, retry_below=retry)
    elapsed = time.perf_counter() - t0

    if update:
        if now["errors"]:
            log(table(compare({"methods": {}}, now, tol)))
            log(f"regress: NOT writing the baseline: {len(now['errors'])} method(s) crashed: "
                f"{', '.join(now['errors'])}; fix them (or leave them out of the suite) and run --update again")
            return 1
        base = make_baseline(now, tol)
        if old is not None:
            log(table(compare(old, now, tol)))
            log("(the table compares with the baseline being replaced)")
        write_baseline(path, base)
        log(f"regress: baseline written to {path} ({len(now['methods'])} methods, {base['hardware']}, "
            f"torch {base['torch']}, commit {base['git_commit']}) in {elapsed:.0f} s")
        return 0

    checks = compare(old, now, tol)
    log("")
    log(table(checks))
    for w in _warnings(old, now):
        log(f"note: {w}")
    for m in now.get("retried", []):
        first, second = now["methods"][m]["speedup_measurements"]
        log(f"note: {m} speedup re-measured: {first:.3f}x then {second:.3f}x; the better counts")
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
