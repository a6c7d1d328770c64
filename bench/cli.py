"""Command line: `python -m bench {run,list,fetch,suite,...}`.

Bad input or an unusable store: one line on stderr, exit 2. A diverged cell: one
line, exit 1. Ctrl-C or SIGTERM: the run is marked killed, finished epochs stay
checkpointed, exit 130 (143 for SIGTERM).
"""
from __future__ import annotations

import argparse
import json
import sys
import typing

from bench.errors import BenchError, Diverged, Terminated
from bench.signals import stop_between_store_calls


class _Parser(argparse.ArgumentParser):
    """Argument errors in one line with a pointer to --help, not a usage block."""

    def error(self, message: str):
        print(f"error: {message}; see `{self.prog} --help`", file=sys.stderr)
        raise SystemExit(2)


def _add_cell_args(p: argparse.ArgumentParser) -> None:
    """One option per cell field (bench/config.py), with its type, default and help."""
    from bench.config import CellConfig, base_type, cell_fields

    hints = typing.get_type_hints(CellConfig)
    for f in cell_fields():
        if not f.metadata["cli"]:
            continue
        flag, help_ = "--" + f.name.replace("_", "-"), f.metadata["help"]
        kind, _ = base_type(hints[f.name])
        if f.name == "params":
            p.add_argument("--param", dest="params", action="append", default=[], metavar="KEY=VALUE", help=help_)
        elif kind is bool and f.default:
            p.add_argument(f"--no-{f.name.replace('_', '-')}", dest=f.name, action="store_false", help=f"do not {help_}")
        elif kind is bool:
            p.add_argument(flag, action="store_true", help=help_)
        else:
            required = f.name in ("model", "dataset")
            p.add_argument(flag, type=kind, required=required, default=None if required else f.default, help=help_,
                           choices=f.metadata["choices"] or None)


def _add_scale_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: cells on this machine; ray: one Ray task per cell (needs a tracking server)")
    p.add_argument("--workers", default="auto",
                   help="local: cells at once. auto: on CPU one per core, one torch thread each, timed in thread CPU "
                        "time; on a GPU one. 1: one cell at a time in this process")
    p.add_argument("--ray-address", help="Ray cluster to join (default: RAY_ADDRESS, else a local cluster on 127.0.0.1)")
    p.add_argument("--cpus-per-cell", type=int, help="CPUs (and torch threads) per CPU cell; Ray default 1. GPU cells get one GPU")
    p.add_argument("--checkpoint-dir", help="per-epoch checkpoints, on storage every worker reads (sets BENCH_CHECKPOINTS)")


def _params(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise BenchError(f"--param {item!r} is not KEY=VALUE; write e.g. --param temperature=0.5")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def cmd_run(a) -> int:
    from bench.cell import run_cell
    from bench.config import CellConfig, cell_fields

    values = {f.name: getattr(a, f.name) for f in cell_fields() if f.metadata["cli"]}
    cfg = CellConfig(**{**values, "params": _params(values["params"])})
    try:
        result = run_cell(cfg)
    except Diverged as e:
        print(f"diverged: {cfg.label}: {e}; recorded as diverged, not as a result (try a lower --lr)", file=sys.stderr)
        return 1
    print(result.summary(cfg))
    return 0


def cmd_list(a) -> int:
    from bench.registry import METHODS, list_datasets, list_methods, list_models

    if a.what == "models":
        from bench.models import model_kind

        for n in list_models():
            print(f"{n:14s} {model_kind(n)}")
    elif a.what == "datasets":
        for n in list_datasets():
            print(n)
    else:
        for n in list_methods():
            cls = METHODS.get(n)
            flag = "" if cls.faithful else f"  [not faithful: {cls.caveat}]"
            doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0]
            print(f"{n:20s} {doc}{flag}")
    return 0


def cmd_fetch(a) -> int:
    from bench.fetch import fetch

    fetch(a.names or None)
    return 0


def _finish_suite(suite, outcome, highlight=None, out_dir=None) -> int:
    from bench import report

    try:
        path = report.write(suite, out_dir)
        print(f"tables and plots: {path}")
        if highlight:
            print(report.render(report.summary(report.collect(suite), suite), highlight=highlight))
    except BenchError as e:
        print(f"no tables: {e}", file=sys.stderr)
    for what, cells in (("diverged (recorded as such, never as results)", outcome.diverged),
                        ("failed", outcome.failed)):
        if cells:
            print(f"{len(cells)} cell(s) {what}:", file=sys.stderr)
            for cfg, err in cells:
                print(f"  {cfg.label}: {err}", file=sys.stderr)
    return 1 if outcome.failed or outcome.diverged else 0


def _workers(a, suite) -> int:
    """--workers: a number, or auto (one per core for CPU cells, one for GPU cells)."""
    import os

    from bench.device import pick_device

    if a.workers != "auto":
        try:
            return int(a.workers)
        except ValueError:
            raise BenchError(f"--workers must be a number or auto, got {a.workers!r}") from None
    if a.executor != "local" or a.cpus_per_cell:
        return 1
    cpu = all(pick_device(c.device).type == "cpu" for c in suite.cells())
    return max(1, os.cpu_count() or 1) if cpu else 1


def cmd_suite(a) -> int:
    from bench.runner import run_suite
    from bench.suite import load_suite

    suite = load_suite(a.suite)
    if a.dry_run:
        cells = suite.cells()
        for cfg in cells:
            print(f"{cfg.label} epochs={cfg.epochs}")
        print(f"{len(cells)} cells, plus the random controls their runs call for"
              + (f"; expected: {suite.expected_runtime}" if suite.expected_runtime else ""))
        return 0
    if a.checkpoint_dir:  # read by every cell and passed on to Ray workers
        import os

        os.environ["BENCH_CHECKPOINTS"] = a.checkpoint_dir
    return _finish_suite(suite, run_suite(suite, executor=a.executor, ray_address=a.ray_address,
                                          cpus_per_cell=a.cpus_per_cell, workers=_workers(a, suite),
                                          controls=suite.controls))


def cmd_compare(a) -> int:
    """Run one method's cells of a suite with the uniform reference and the matched controls, all
    measured afresh in one session, interleaved seed by seed: a reference measured at another time
    (another machine load) never makes a speedup. Resumable with --session."""
    import dataclasses
    import time

    from bench.paths import results_dir
    from bench.registry import METHODS
    from bench.runner import run_suite
    from bench.suite import load_suite

    METHODS.get(a.method)
    suite = load_suite(a.suite)
    if not any(c.method == a.method for c in suite.cells()):
        raise BenchError(f"suite {suite.name} has no cells for {a.method}; use a suite with `methods: all` or list it")
    session = a.session or f"compare-{a.method}-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"session {session}: {a.method}, uniform and the matched controls measured side by side "
          f"(interrupted? resume with --session {session})")
    measured = dataclasses.replace(suite, defaults={**suite.defaults, "session": session})
    out = run_suite(measured, only_methods={a.method}, workers=_workers(a, measured), controls=measured.controls)
    print(f"rows of other methods (results/{suite.name}/summary.md) were measured at another time: "
          "compare them with care")
    return _finish_suite(measured, out, highlight=a.method, out_dir=results_dir() / suite.name / session)


def cmd_tables(a) -> int:
    from bench import report
    from bench.suite import load_suite

    suite = load_suite(a.suite)
    print(f"tables and plots: {report.write(suite)}")
    return 0


def cmd_artifacts(a) -> int:
    """Copy an artifact a method logged (e.g. Swift Sampler's learned sampler) out of every
    finished run of that method in a suite, one file per cell, to reuse it elsewhere."""
    import re
    import shutil
    import tempfile
    from pathlib import Path

    from bench import tracking
    from bench.report.store import finished_cells
    from bench.suite import load_suite

    suite = load_suite(a.suite)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for cfg, run, owner, _ in finished_cells(suite):
        if cfg.method != a.method or owner:
            continue
        name = re.sub(r"[^A-Za-z0-9_.=-]+", "_", f"{cfg.model}_{cfg.dataset}_noise{cfg.label_noise:g}_drop{cfg.drop:g}"
                                                    f"_seed{cfg.seed}_{a.name}")
        with tempfile.TemporaryDirectory() as t:
            try:
                got = tracking.client().download_artifacts(run.info.run_id, a.name, t)
            except Exception:  # noqa: BLE001 - MLflow raises several types for a missing artifact
                raise BenchError(f"run {run.info.run_id} ({cfg.label}) has no artifact {a.name}") from None
            shutil.copy(got, out / name)
        print(f"{cfg.label}: {out / name}")
        n += 1
    if not n:
        raise BenchError(f"suite {suite.name} has no finished runs of {a.method}; run the suite first")
    return 0


def cmd_regress(a) -> int:
    from bench import regress

    return regress.main(update=a.update, suite_name=a.suite)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m bench", description="Benchmark harness for data-efficient training.")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train one cell and log it to MLflow")
    _add_cell_args(r)
    r.set_defaults(fn=cmd_run)
    ls = sub.add_parser("list", help="list registered models, datasets or methods")
    ls.add_argument("what", choices=["models", "datasets", "methods"])
    ls.set_defaults(fn=cmd_list)
    f = sub.add_parser("fetch", help="fetch the offline data sources into the cache")
    f.add_argument("names", nargs="*")
    f.set_defaults(fn=cmd_fetch)
    s = sub.add_parser("suite", help="run every cell of a suite (finished cells are skipped), then write its tables")
    s.add_argument("suite", nargs="?", default="quick", help="a name in results/suites/ or a path to a .yaml file")
    s.add_argument("--dry-run", action="store_true", help="validate the suite, list its cells and exit")
    _add_scale_args(s)
    s.set_defaults(fn=cmd_suite)
    c = sub.add_parser("compare", help="run one method's cells of a suite and print its rows beside the others")
    c.add_argument("method")
    c.add_argument("suite", nargs="?", default="quick")
    c.add_argument("--session", help="resume an interrupted comparison (its name is printed when it starts)")
    c.add_argument("--workers", default="auto", help="cells at once (see `suite --help`)")
    c.set_defaults(executor="local", cpus_per_cell=None)
    c.set_defaults(fn=cmd_compare)
    t = sub.add_parser("tables", help="regenerate a suite's tables and plots from MLflow, without training")
    t.add_argument("suite", nargs="?", default="quick")
    t.set_defaults(fn=cmd_tables)
    x = sub.add_parser("artifacts", help="copy an artifact a method logged out of a suite's finished runs")
    x.add_argument("suite")
    x.add_argument("method")
    x.add_argument("name", help="the artifact's file name, e.g. swift_sampler.json")
    x.add_argument("--out", required=True, help="folder to write one file per cell into")
    x.set_defaults(fn=cmd_artifacts)
    g = sub.add_parser("regress", help="CPU regression guard against results/regress/baselines/<cpu model>.json")
    g.add_argument("--update", action="store_true", help="rewrite the baseline on purpose")
    g.add_argument("--suite", default="regress")
    g.set_defaults(fn=cmd_regress)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        with stop_between_store_calls():
            return args.fn(args)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Diverged as e:
        print(f"diverged: {e}; the run is recorded as diverged, not as a result (try a lower --lr)", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        what = "terminated" if isinstance(e, Terminated) else "interrupted"
        print(f"{what}: finished epochs are checkpointed; run the same command again to resume", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
