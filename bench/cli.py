"""Command line: `python -m bench {run,list,fetch,suite,...}`.

Bad input or an unusable store: one line on stderr, exit 2. A diverged cell: one
line, exit 1. Ctrl-C or SIGTERM: the run is marked killed, finished epochs stay
checkpointed, exit 130 (143 for SIGTERM).
"""
from __future__ import annotations

import argparse
import json
import signal
import sys

from bench.errors import BenchError, Diverged, Terminated


class _Parser(argparse.ArgumentParser):
    """Argument errors in one line with a pointer to --help, not a usage block."""

    def error(self, message: str):
        print(f"error: {message}; see `{self.prog} --help`", file=sys.stderr)
        raise SystemExit(2)


def _add_cell_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--method", default="uniform")
    p.add_argument("--drop", type=float, default=0.0, help="share of samples with no backward pass, in [0, 1)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--lr", type=float)
    p.add_argument("--optimizer", default="auto", choices=["auto", "sgd", "adamw"])
    p.add_argument("--train-limit", type=int, help="stratified training subset size, for smoke runs")
    p.add_argument("--eval-limit", type=int, help="cap on validation and test sizes (default: --train-limit)")
    p.add_argument("--label-noise", type=float, default=0.0)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a method parameter; VALUE is read as JSON when it parses (e.g. 3, 0.5, true)")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--eval-every", type=int, default=0, metavar="STEPS",
                   help="optimizer steps between validation probes (time to target); default 0: four per epoch")


def _add_scale_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: one cell after another in this process; ray: one Ray task per cell (needs a tracking server)")
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
    from bench.config import CellConfig

    cfg = CellConfig(
        model=a.model, dataset=a.dataset, method=a.method, params=_params(a.param), drop=a.drop, epochs=a.epochs,
        seed=a.seed, batch_size=a.batch_size, lr=a.lr, optimizer=a.optimizer, train_limit=a.train_limit,
        eval_limit=a.eval_limit, label_noise=a.label_noise, max_length=a.max_length, compile=a.compile,
        device=a.device, progress=not a.no_progress, eval_every=a.eval_every,
    )
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
    try:
        from bench import report
    except ImportError:
        report = None
    if report is not None:
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


def cmd_suite(a) -> int:
    from bench.runner import run_suite
    from bench.suite import load_suite

    suite = load_suite(a.suite)
    if a.dry_run:
        for cfg in suite.cells():
            print(f"{cfg.label} epochs={cfg.epochs}")
        return 0
    if a.checkpoint_dir:  # read by every cell and passed on to Ray workers
        import os

        os.environ["BENCH_CHECKPOINTS"] = a.checkpoint_dir
    return _finish_suite(suite, run_suite(suite, executor=a.executor, ray_address=a.ray_address,
                                          cpus_per_cell=a.cpus_per_cell))


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
    out = run_suite(measured, only_methods={a.method})
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
    for cfg, run, owner in finished_cells(suite):
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


def _terminate(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
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
    finally:
        signal.signal(signal.SIGTERM, previous)
