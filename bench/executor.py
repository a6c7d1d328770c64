"""Where a suite's cells run: in this process (`local`) or as Ray tasks (`ray`).

Every cell is claimed before it trains (bench.claims), so two drivers on one suite, or a
Ray retry of a task whose worker died, never train a cell twice; a retried or taken-over
cell resumes from its last finished epoch through its checkpoint in BENCH_CHECKPOINTS
(which must then be storage every worker reads). Ray is the only scheduler: one task per
cell, resources per task, Ray's retry on a dead worker.
"""
from __future__ import annotations

import os
import random
import socket
import sys
import time
import traceback
from typing import Any

from bench import claims, tracking
from bench.cell import CellResult, run_cell
from bench.config import CellConfig
from bench.engine import hardware_name, pick_device
from bench.errors import BenchError
from bench.paths import PROJECT_ROOT, checkpoint_dir

EXECUTORS = ("local", "ray")
HELD_PAUSE = (2.0, 6.0)  # seconds before asking again for a cell another driver holds
TASK_RETRIES = 3  # Ray re-runs a task this often when its worker process dies


def prepare(executor: str, cpus_per_cell: int | None) -> None:
    """Before the driver reads the store: refuse a shared SQLite file, make sure the experiments
    exist (two drivers may start on a fresh server at once) and use the thread count cells
    will use, so the driver computes the same cell keys (CPU hardware names the thread count)."""
    if executor not in EXECUTORS:
        raise BenchError(f"unknown executor {executor!r}; use one of {', '.join(EXECUTORS)}")
    uri = tracking.tracking_uri()
    if executor != "local" and uri.startswith("sqlite:"):
        raise BenchError(f"--executor {executor} needs a tracking server, not the SQLite file {uri}: run `nox -s server` "
                         "(or `mlflow server` on a SQL database) and set MLFLOW_TRACKING_URI=http://HOST:5000")
    if cpus_per_cell is not None and cpus_per_cell < 1:
        raise BenchError(f"--cpus-per-cell must be at least 1, got {cpus_per_cell}")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # no "View run" line per run and claim
    for attempt in range(3):
        try:
            tracking.experiment_id(), claims.experiment_id()
            break
        except Exception:
            if attempt == 2:
                raise
            time.sleep(1)
    threads = cpus_per_cell or (1 if executor == "ray" else None)
    if threads:
        import torch

        torch.set_num_threads(threads)


def run_claimed(cfg: CellConfig, owner: str, tags: dict[str, str] | None = None, log=print,
                wait: bool = True) -> CellResult | None:
    """Train one cell under a claim. Held by another driver: wait until it is finished there
    (skipped) or its holder died (taken over), or with wait=False return None at once."""
    said = False
    while True:
        key = cfg.key(hardware_name(pick_device(cfg.device)))
        done = tracking.finished_run(key)
        if done is not None:
            return CellResult(key, done.info.run_id, "skipped", dict(done.data.metrics))
        claim = claims.acquire(key, owner)
        if claim is not None:
            break
        if not wait:
            return None
        if not said:
            log(f"  {cfg.label}: another driver holds it; waiting until it finishes there or its lease lapses")
            said = True
        time.sleep(random.uniform(*HELD_PAUSE))
    try:
        result = run_cell(cfg, tags=tags, log=log)  # it re-checks: finished meanwhile -> skipped
    except KeyboardInterrupt:
        claim.release("KILLED")
        raise
    except BaseException:
        claim.release("FAILED")
        raise
    claim.release("FINISHED")
    return result


def _cell_task(cfg: CellConfig, owner: str, tags: dict[str, str], threads: int) -> dict[str, Any]:
    """One Ray task: a cell, or word that another driver holds it. Errors come back as text."""
    started = time.time()
    import torch

    if pick_device(cfg.device).type == "cpu":
        torch.set_num_threads(threads)
    where = {"host": socket.gethostname(), "pid": os.getpid(), "started": started}
    try:
        res = run_claimed(cfg, owner, {**tags, "worker_host": where["host"]}, log=print, wait=False)
    except BenchError as e:
        return {"status": "failed", "error": str(e), **where}
    except Exception as e:
        traceback.print_exc(file=sys.stderr)  # into the worker's log, forwarded to the driver
        return {"status": "failed", "error": f"{type(e).__name__}: {e}", **where}
    status = res.status if res else "held"
    return {"status": status, "result": res, "seconds": time.time() - started, **where}


def worker_env() -> dict[str, str]:
    """What a worker needs to find the store, the checkpoints and this code."""
    env = {k: v for k, v in os.environ.items() if k.startswith(("BENCH_", "MLFLOW_", "HF_"))}
    env.update({
        "MLFLOW_TRACKING_URI": tracking.tracking_uri(), "BENCH_EXPERIMENT": tracking.EXPERIMENT,
        "BENCH_CHECKPOINTS": str(checkpoint_dir()),
        "PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p),
    })
    return env


def connect(address: str | None):
    """Join the cluster at `address` (or RAY_ADDRESS); none: start a local one on loopback.
    Returns (ray, started_here)."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keeps 127.0.0.1 (read at import)
    try:
        import ray
    except ImportError:
        raise BenchError("--executor ray needs Ray: pip install -e '.[scale]'") from None
    if ray.is_initialized():  # this process already joined a cluster (tests, notebooks)
        return ray, False
    kw = dict(log_to_driver=True, configure_logging=True, logging_level="WARNING")
    if address:
        ray.init(address=address, **kw)
    else:
        ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, **kw)
    return ray, True


def _resources(cfg: CellConfig, cpus: int, cluster: dict[str, float]) -> dict[str, float]:
    if cfg.device.startswith("cuda") or (cfg.device == "auto" and cluster.get("GPU", 0) > 0):
        return {"num_cpus": cpus, "num_gpus": 1}
    if cpus > cluster.get("CPU", 0):
        raise BenchError(f"a cell asks for {cpus} CPUs but the cluster has {cluster.get('CPU', 0):g}; "
                         "lower --cpus-per-cell or add nodes")
    return {"num_cpus": cpus}


def run_on_ray(suite_name: str, todo: list[CellConfig], out, log=print, address: str | None = None,
               cpus_per_cell: int | None = None, records: list | None = None):
    """Run `todo` as Ray tasks, one per cell; fill `out` (ran, skipped, failed) as the runner does.
    `records`, when given, receives one dict per cell (where, how long) for benchmarks."""
    from tqdm.auto import tqdm

    if not todo:  # nothing to run: no cluster to join
        return out
    ray, started_here = connect(address)
    try:
        owner, cpus = claims.new_owner(), cpus_per_cell or 1
        cluster = ray.cluster_resources()
        task = ray.remote(max_retries=TASK_RETRIES, retry_exceptions=False)(_cell_task)
        env = {"env_vars": worker_env()}
        tags = {"suite": suite_name, "executor": "ray"}

        def submit(cfg: CellConfig):
            return task.options(**_resources(cfg, cpus, cluster), runtime_env=env).remote(
                cfg.replace(progress=False), owner, tags, cpus)

        pending = {submit(cfg): cfg for cfg in todo}
        held: list[tuple[float, CellConfig]] = []
        bar = tqdm(total=len(todo), desc=f"suite {suite_name}", unit="cell", file=sys.stderr, disable=None)
        n = 0
        while pending or held:
            now = time.time()
            for item in [h for h in held if h[0] <= now]:
                held.remove(item)
                pending[submit(item[1])] = item[1]
            if not pending:
                time.sleep(max(0.0, min(h[0] for h in held) - now))
                continue
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                cfg = pending.pop(ref)
                try:
                    r = ray.get(ref)
                except ray.exceptions.RayError as e:  # the worker died more often than Ray retries
                    r = {"status": "failed", "error": f"{type(e).__name__}: {str(e).splitlines()[0]}", "host": "?"}
                if r["status"] == "held":
                    held.append((time.time() + random.uniform(*HELD_PAUSE), cfg))
                    continue
                n += 1
                bar.update(1)
                if r["status"] == "failed":
                    out.failed.append((cfg, r["error"]))
                    line = f"failed: {cfg.label}: {r['error']}"
                else:
                    out.ran += r["status"] == "finished"
                    out.skipped += r["status"] == "skipped"
                    line = f"{r['result'].summary(cfg)}  on {r['host']} ({r['seconds']:.1f}s in task)"
                with tqdm.external_write_mode(file=sys.stderr):
                    log(f"[{n}/{len(todo)}] {line}")
                if records is not None:
                    records.append({"label": cfg.label, **{k: v for k, v in r.items() if k != "result"},
                                    **({"metrics": r["result"].metrics} if r.get("result") else {})})
        bar.close()
    finally:
        if started_here:
            ray.shutdown()
    return out
