"""Suite wall time on 2 CPU cores: local (one process, 2 torch threads) against Ray (2 cells at
once, 1 thread each), with the overhead per cell. A measurement script, not a test.

    python benchmarks/scaleout.py [--train-limit 2000] [--epochs 3] [--seeds 3] [--note "idle machine"]

Starts its own MLflow server (temporary SQLite store, 127.0.0.1) and a local Ray cluster of
2 CPUs; runs one suite (tiny CNN on Fashion-MNIST, uniform and random subset at drop 0.5,
--seeds seeds: 2 x seeds cells) each way into its own experiment; writes
results/scaleout/benchmark.json and benchmark.md. Words:

- wall: the driver's time for the whole suite; Ray's is given without and with cluster start-up.
- e2e: the cell's own clock (training, evaluation, selection), summed over cells.
- overhead per cell, local: (wall - sum of e2e) / cells (data and model loading, MLflow, claims),
  after one untimed warm-up cell in the same process.
- overhead per cell, Ray: mean of (task time - e2e): the same plus the task's own set-up;
  worker start: from submitting the suite to the first task starting (process start, imports).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray on 127.0.0.1 (read when ray is imported)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

SUITE = """name: scaleout_bench
defaults: {{epochs: {epochs}, batch_size: 128, train_limit: {train_limit}, eval_limit: 1000, device: cpu, progress: false}}
blocks:
  - models: [tiny_cnn]
    datasets: [fashion_mnist]
    methods: [uniform, random_subset]
    drops: [0.5]
    seeds: {seeds}
"""


def machine() -> dict:
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor())
    return {"host": socket.gethostname(), "cpu": model, "cores": os.cpu_count(), "python": platform.python_version()}


def e2e_sum(suite) -> tuple[float, int]:
    from bench import report

    df = report.collect(suite)
    return float(df["e2e_seconds"].sum()), len(df)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-limit", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--note", default="", help="e.g. 'busy machine: other jobs running'")
    ap.add_argument("--out", default=str(ROOT / "results" / "scaleout"))
    a = ap.parse_args()

    from bench import mlflow_server, tracking
    from bench.executor import prepare, run_on_ray
    from bench.runner import SuiteOutcome, run_suite
    from bench.suite import load_suite

    tmp = Path(tempfile.mkdtemp(prefix="scaleout-bench-"))
    path = tmp / "scaleout_bench.yaml"
    path.write_text(SUITE.format(epochs=a.epochs, train_limit=a.train_limit, seeds=list(range(a.seeds))))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}", BENCH_CHECKPOINTS=str(tmp / "ckpt"))
    load0 = os.getloadavg()
    server = mlflow_server.start(f"sqlite:///{tmp / 'mlflow.db'}", str(tmp / "artifacts"), port=port,
                                 log=open(tmp / "server.log", "w"))
    try:
        mlflow_server.wait_ready(server, os.environ["MLFLOW_TRACKING_URI"])
        suite = load_suite(str(path))
        quiet = lambda *_: None  # noqa: E731

        # warm this process (imports, first data load, page cache) on one throwaway cell, so the
        # local figure is not charged for it; Ray's fresh workers pay theirs, counted as overhead
        from bench.cell import run_cell

        tracking.EXPERIMENT = os.environ["BENCH_EXPERIMENT"] = "bench-warmup"
        run_cell(suite.cells()[0], log=quiet)
        tracking.EXPERIMENT = os.environ["BENCH_EXPERIMENT"] = "bench-local"
        t0 = time.perf_counter()
        out = run_suite(suite, executor="local", cpus_per_cell=2, log=quiet)
        local_wall = time.perf_counter() - t0
        assert not out.failed, out.failed
        local_e2e, n = e2e_sum(suite)

        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False, logging_level="WARNING")
        ray_init = time.perf_counter() - t0
        try:
            tracking.EXPERIMENT = os.environ["BENCH_EXPERIMENT"] = "bench-ray"
            prepare("ray", 1)
            records: list[dict] = []
            submitted = time.time()
            t0 = time.perf_counter()
            out = run_on_ray(suite.name, suite.cells(), SuiteOutcome(), quiet, cpus_per_cell=1, records=records)
            ray_wall = time.perf_counter() - t0
        finally:
            ray.shutdown()
        assert not out.failed, out.failed
        ray_e2e, n_ray = e2e_sum(suite)
        assert n == n_ray == len(records)
    finally:
        mlflow_server.stop(server)

    overhead = [r["seconds"] - r["metrics"]["e2e_seconds"] for r in records]
    res = {
        "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
        "note": a.note, "load_average_before": load0, "load_average_after": os.getloadavg(),
        "suite": {"cells": n, "model": "tiny_cnn", "dataset": "fashion_mnist", "train_limit": a.train_limit,
                  "epochs": a.epochs, "methods": ["uniform", "random_subset@0.5"], "seeds": a.seeds},
        "local": {"threads": 2, "wall_s": local_wall, "e2e_sum_s": local_e2e, "overhead_per_cell_s": (local_wall - local_e2e) / n},
        "ray": {"cells_at_once": 2, "threads_per_cell": 1, "init_s": ray_init, "wall_s": ray_wall,
                "e2e_sum_s": ray_e2e, "overhead_per_cell_s": sum(overhead) / n,
                "worker_start_s": min(r["started"] for r in records) - submitted},
    }
    res["speedup_ray_over_local"] = local_wall / ray_wall
    res["speedup_ray_over_local_with_init"] = local_wall / (ray_wall + ray_init)
    outdir = Path(a.out)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "benchmark.json").write_text(json.dumps(res, indent=1) + "\n")
    L, R = res["local"], res["ray"]
    md = f"""# Suite wall time: local vs Ray on {res['machine']['cores']} cores

Measured {res['measured']} on {res['machine']['host']} ({res['machine']['cpu']}, {res['machine']['cores']} cores).
{('**' + a.note + '**') if a.note else ''} Load average before/after: {load0[0]:.1f} / {res['load_average_after'][0]:.1f}.
Suite: {n} cells, tiny_cnn on Fashion-MNIST, train_limit {a.train_limit}, {a.epochs} epochs. Re-run: `python benchmarks/scaleout.py`.

| | wall (s) | sum of cell e2e (s) | overhead per cell (s) |
|---|---|---|---|
| local: 1 process, 2 threads | {L['wall_s']:.1f} | {L['e2e_sum_s']:.1f} | {L['overhead_per_cell_s']:.2f} |
| Ray: 2 cells at once, 1 thread each | {R['wall_s']:.1f} (+{R['init_s']:.1f} cluster start) | {R['e2e_sum_s']:.1f} | {R['overhead_per_cell_s']:.2f} |

Ray over local: {res['speedup_ray_over_local']:.2f}x ({res['speedup_ray_over_local_with_init']:.2f}x counting cluster start-up).
First Ray task started {R['worker_start_s']:.1f} s after submission (worker process start and imports).
"""
    (outdir / "benchmark.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
