"""Suite wall time on 2 CPU cores, three ways: one process with 2 torch threads (`--workers 1`),
two worker processes of one thread each (`--workers 2`, the CPU default), and Ray (2 cells at
once, 1 thread each). A measurement script, not a test.

    python benchmarks/scaleout.py [--train-limit 2000] [--epochs 3] [--seeds 3] [--note "idle machine"]

Starts its own MLflow server (temporary SQLite store, 127.0.0.1) and a local Ray cluster of
2 CPUs; runs one suite (tiny CNN on Fashion-MNIST, uniform and random subset at drop 0.5,
--seeds seeds: 2 x seeds cells) each way into its own experiment; writes
results/scaleout/benchmark.json and benchmark.md. Words:

- wall: the driver's time for the whole suite; Ray's is given without and with cluster start-up.
- e2e: the cell's own clock (set-up, training, evaluation), summed over cells.
- overhead per cell, local: (wall - sum of e2e) / cells (MLflow, claims), after one untimed
  warm-up cell in the same process.
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
    from bench.runner import run_suite
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
    quiet = lambda *_: None  # noqa: E731

    def timed(experiment: str, **kw) -> tuple[float, float, int]:
        tracking.EXPERIMENT = os.environ["BENCH_EXPERIMENT"] = experiment
        t0 = time.perf_counter()
        out = run_suite(suite, log=quiet, controls=False, **kw)
        wall = time.perf_counter() - t0
        assert not out.failed, out.failed
        return (wall, *e2e_sum(suite))

    try:
        mlflow_server.wait_ready(server, os.environ["MLFLOW_TRACKING_URI"])
        suite = load_suite(str(path))
        # warm this process (imports, first data load, page cache) on one throwaway cell, so the
        # local figure is not charged for it; workers pay theirs, counted as overhead
        from bench.cell import run_cell

        tracking.EXPERIMENT = os.environ["BENCH_EXPERIMENT"] = "bench-warmup"
        run_cell(suite.cells()[0], log=quiet)
        local_wall, local_e2e, n = timed("bench-local", workers=1, cpus_per_cell=2)
        workers_wall, workers_e2e, _ = timed("bench-workers", workers=2, cpus_per_cell=1)

        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False, logging_level="WARNING")
        ray_init = time.perf_counter() - t0
        try:
            ray_wall, ray_e2e, n_ray = timed("bench-ray", executor="ray", cpus_per_cell=1)
        finally:
            ray.shutdown()
        assert n == n_ray
    finally:
        mlflow_server.stop(server)

    res = {
        "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
        "note": a.note, "load_average_before": load0, "load_average_after": os.getloadavg(),
        "suite": {"cells": n, "model": "tiny_cnn", "dataset": "fashion_mnist", "train_limit": a.train_limit,
                  "epochs": a.epochs, "methods": ["uniform", "random_subset@0.5"], "seeds": a.seeds},
        "local": {"threads": 2, "wall_s": local_wall, "e2e_sum_s": local_e2e, "overhead_per_cell_s": (local_wall - local_e2e) / n},
        "workers": {"cells_at_once": 2, "threads_per_cell": 1, "clock": "thread cpu time", "wall_s": workers_wall,
                    "e2e_sum_s": workers_e2e},
        "ray": {"cells_at_once": 2, "threads_per_cell": 1, "init_s": ray_init, "wall_s": ray_wall,
                "e2e_sum_s": ray_e2e},
    }
    res["speedup_workers_over_local"] = local_wall / workers_wall
    res["speedup_ray_over_local"] = local_wall / ray_wall
    res["speedup_ray_over_local_with_init"] = local_wall / (ray_wall + ray_init)
    outdir = Path(a.out)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "benchmark.json").write_text(json.dumps(res, indent=1) + "\n")
    L, W, R = res["local"], res["workers"], res["ray"]
    md = f"""# Suite wall time: local vs Ray on {res['machine']['cores']} cores

Measured {res['measured']} on {res['machine']['host']} ({res['machine']['cpu']}, {res['machine']['cores']} cores).
{('**' + a.note + '**') if a.note else ''} Load average before/after: {load0[0]:.1f} / {res['load_average_after'][0]:.1f}.
Suite: {n} cells, tiny_cnn on Fashion-MNIST, train_limit {a.train_limit}, {a.epochs} epochs. Re-run: `python benchmarks/scaleout.py`.

| | wall (s) | sum of cell e2e (s) | overhead per cell (s) |
|---|---|---|---|
| local: 1 process, 2 threads (`--workers 1`) | {L['wall_s']:.1f} | {L['e2e_sum_s']:.1f} | {L['overhead_per_cell_s']:.2f} |
| local: 2 worker processes, 1 thread each, thread CPU time (`--workers 2`, the CPU default) | {W['wall_s']:.1f} | {W['e2e_sum_s']:.1f} | |
| Ray: 2 cells at once, 1 thread each | {R['wall_s']:.1f} (+{R['init_s']:.1f} cluster start) | {R['e2e_sum_s']:.1f} | |

Workers over local: {res['speedup_workers_over_local']:.2f}x. Ray over local: {res['speedup_ray_over_local']:.2f}x
({res['speedup_ray_over_local_with_init']:.2f}x counting cluster start-up). The sums of cell e2e are each cell's own
clock (thread CPU time in the workers): with two cells at once they add up to more than the wall time.
"""
    (outdir / "benchmark.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
