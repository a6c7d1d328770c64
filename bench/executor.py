"""Where cells run: in this process, in worker processes on this machine, or as Ray tasks.

Every cell is claimed before it trains (bench/claims.py), so two drivers on one suite, or a
Ray retry of a task whose worker died, never train a cell twice; whether it is finished is
asked by `run_cell` once it holds the claim. A retried or taken-over cell resumes from its
last finished epoch through its checkpoint in BENCH_CHECKPOINTS.

    pool = make_pool("local", workers=2)   # or "ray"
    pool.submit(cfg, tags); cfg, outcome = pool.next_done()

CPU cells in worker processes run with one torch thread each and are timed in the thread's
CPU time (`time.thread_time`), so two cells at once on two cores do not disturb each other's
clock: time spent descheduled is not counted. Cache and memory-bandwidth interference still is.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import random
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any

from bench import claims, tracking
from bench.cell import CellResult, run_cell
from bench.config import CellConfig
from bench.device import pick_device
from bench.errors import BenchError, Diverged, StoreError
from bench.paths import PROJECT_ROOT, checkpoint_dir

EXECUTORS = ("local", "ray")
HELD_PAUSE = (2.0, 6.0)  # seconds before asking again for a cell another driver holds
TASK_RETRIES = 3  # Ray re-runs a task this often when its worker process dies


@dataclass
class Done:
    """How one submitted cell ended."""

    status: str  # finished, skipped, failed, diverged, held
    result: CellResult | None = None
    error: str = ""
    host: str = ""
    seconds: float = 0.0


def prepare(executor: str, threads: int | None, workers: int = 1) -> None:
    """Before the driver reads the store: refuse a SQLite file shared by machines, make sure the
    experiments exist (two drivers may start on a fresh server at once), and use the thread count
    the cells will use, so the driver computes the same cell keys (a CPU's hardware names it)."""
    if executor not in EXECUTORS:
        raise BenchError(f"unknown executor {executor!r}; use one of {', '.join(EXECUTORS)}")
    uri = tracking.tracking_uri()
    if executor == "ray" and uri.startswith("sqlite:"):
        raise BenchError(f"--executor ray needs a tracking server, not the SQLite file {uri}: run `nox -s server` "
                         "(or `mlflow server` on a SQL database) and set MLFLOW_TRACKING_URI=http://HOST:5000")
    if threads is not None and threads < 1:
        raise BenchError(f"--cpus-per-cell must be at least 1, got {threads}")
    if workers < 1:
        raise BenchError(f"--workers must be at least 1, got {workers}")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # no "View run" line per run and claim
    for attempt in range(3):
        try:
            tracking.experiment_id(), claims.experiment_id()
            break
        except Exception:
            if attempt == 2:
                raise
            time.sleep(1)
    if threads:
        import torch

        torch.set_num_threads(threads)


def run_claimed(cfg: CellConfig, owner: str, tags: dict[str, str] | None = None, log=print,
                wait: bool = True) -> CellResult | None:
    """Train one cell under a claim. Held by another driver: wait for its claim to end (then the
    cell is finished there, or its holder died and it is taken over), or with wait=False return
    None at once."""
    from bench.device import cell_key

    key, said = cell_key(cfg), False
    while (claim := claims.acquire(key, owner)) is None:
        if not wait:
            return None
        if not said:
            log(f"  {cfg.label}: another driver holds it; waiting until it finishes there or its lease lapses")
            said = True
        time.sleep(random.uniform(*HELD_PAUSE))
    try:
        result = run_cell(cfg, tags=tags, log=log)  # finished meanwhile -> skipped
    except KeyboardInterrupt:
        claim.release("KILLED")
        raise
    except BaseException:
        claim.release("FAILED")
        raise
    claim.release("FINISHED")
    return result


def _outcome(cfg: CellConfig, owner: str, tags: dict[str, str], log, wait: bool) -> Done:
    """One cell, its end as a Done: errors come back as text, never as a traceback."""
    t0, host = time.time(), socket.gethostname()
    try:
        res = run_claimed(cfg, owner, tags, log=log, wait=wait)
    except Diverged as e:
        return Done("diverged", error=str(e), host=host, seconds=time.time() - t0)
    except StoreError:
        raise  # every later cell would fail the same way
    except BenchError as e:
        return Done("failed", error=str(e), host=host, seconds=time.time() - t0)
    except Exception as e:  # a broken method must not stop the other cells
        traceback.print_exc(file=sys.stderr)
        return Done("failed", error=f"{type(e).__name__}: {e}", host=host, seconds=time.time() - t0)
    if res is None:
        return Done("held", host=host)
    return Done(res.status, result=res, host=host, seconds=time.time() - t0)


# -- pools


class InProcess:
    """One cell at a time, in this process (the default on a GPU, and for one worker)."""

    workers = 1

    def __init__(self, log=print):
        self.owner, self.log, self.queue = claims.new_owner(), log, []

    def submit(self, cfg: CellConfig, tags: dict[str, str]) -> None:
        self.queue.append((cfg, tags))

    def next_done(self) -> tuple[CellConfig, Done]:
        cfg, tags = self.queue.pop(0)
        return cfg, _outcome(cfg, self.owner, tags, self.log, wait=True)

    @property
    def busy(self) -> int:
        return len(self.queue)

    def close(self) -> None:
        pass


def _worker_init(threads: int, env: dict[str, str]) -> None:
    os.environ.update(env)
    import torch

    from bench import signals, timing

    signals.install()  # Ctrl-C reaches workers too: never inside one of their store calls
    torch.set_num_threads(threads)
    timing.use_thread_clock()


def _worker_task(cfg: CellConfig, owner: str, tags: dict[str, str]) -> Done:
    return _outcome(cfg, owner, tags, log=lambda *_: None, wait=True)


class Workers:
    """Cells in `workers` processes of this machine, one torch thread each (or `threads`), timed in
    thread CPU time. They share the store (SQLite copes with a few writers on one machine)."""

    def __init__(self, workers: int, threads: int = 1, log=print):
        self.workers, self.log = workers, log
        self.owner = claims.new_owner()
        env = {k: v for k, v in os.environ.items() if k.startswith(("BENCH_", "MLFLOW_", "HF_"))}
        env["MLFLOW_TRACKING_URI"] = tracking.tracking_uri()
        self.pool = cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                                           initargs=(threads, env))
        self.running: dict[cf.Future, CellConfig] = {}

    def submit(self, cfg: CellConfig, tags: dict[str, str]) -> None:
        self.running[self.pool.submit(_worker_task, cfg.replace(progress=False), self.owner, tags)] = cfg

    def next_done(self) -> tuple[CellConfig, Done]:
        fut = next(cf.as_completed(list(self.running)))
        cfg = self.running.pop(fut)
        try:
            return cfg, fut.result()
        except cf.process.BrokenProcessPool as e:
            return cfg, Done("failed", error=f"its worker process died ({e})")

    @property
    def busy(self) -> int:
        return len(self.running)

    def close(self) -> None:
        for f in self.running:
            f.cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)


def worker_env() -> dict[str, str]:
    """What a Ray worker needs to find the store, the checkpoints and this code."""
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


def _ray_task(cfg: CellConfig, owner: str, tags: dict[str, str], threads: int) -> Done:
    """One Ray task: a cell, or word that another driver holds it."""
    import torch

    if pick_device(cfg.device).type == "cpu":
        torch.set_num_threads(threads)
    return _outcome(cfg, owner, {**tags, "worker_host": socket.gethostname()}, log=print, wait=False)


class RayTasks:
    """One Ray task per cell, across the cluster; a cell held by another driver is asked again later."""

    def __init__(self, address: str | None, threads: int | None, log=print):
        self.ray, self.started_here = connect(address)
        self.owner, self.threads, self.log = claims.new_owner(), threads or 1, log
        self.cluster = self.ray.cluster_resources()
        self.task = self.ray.remote(max_retries=TASK_RETRIES, retry_exceptions=False)(_ray_task)
        self.env = {"env_vars": worker_env()}
        self.running: dict[Any, tuple[CellConfig, dict]] = {}
        self.held: list[tuple[float, CellConfig, dict]] = []
        self.workers = max(1, int(self.cluster.get("GPU", 0)) or int(self.cluster.get("CPU", 1) // self.threads))

    def _resources(self, cfg: CellConfig) -> dict[str, float]:
        if cfg.device.startswith("cuda") or (cfg.device == "auto" and self.cluster.get("GPU", 0) > 0):
            return {"num_cpus": self.threads, "num_gpus": 1}
        if self.threads > self.cluster.get("CPU", 0):
            raise BenchError(f"a cell asks for {self.threads} CPUs but the cluster has {self.cluster.get('CPU', 0):g}; "
                             "lower --cpus-per-cell or add nodes")
        return {"num_cpus": self.threads}

    def submit(self, cfg: CellConfig, tags: dict[str, str]) -> None:
        tags = {**tags, "executor": "ray"}
        ref = self.task.options(**self._resources(cfg), runtime_env=self.env).remote(
            cfg.replace(progress=False), self.owner, tags, self.threads)
        self.running[ref] = (cfg, tags)

    def next_done(self) -> tuple[CellConfig, Done]:
        while True:
            now = time.time()
            for item in [h for h in self.held if h[0] <= now]:
                self.held.remove(item)
                self.submit(item[1], item[2])
            if not self.running:
                time.sleep(max(0.0, min(h[0] for h in self.held) - now))
                continue
            ready, _ = self.ray.wait(list(self.running), num_returns=1, timeout=1.0)
            for ref in ready:
                cfg, tags = self.running.pop(ref)
                try:
                    done = self.ray.get(ref)
                except self.ray.exceptions.RayError as e:  # the worker died more often than Ray retries
                    done = Done("failed", error=f"{type(e).__name__}: {str(e).splitlines()[0]}", host="?")
                if done.status == "held":
                    self.held.append((time.time() + random.uniform(*HELD_PAUSE), cfg, tags))
                    continue
                return cfg, done

    @property
    def busy(self) -> int:
        return len(self.running) + len(self.held)

    def close(self) -> None:
        if self.started_here:
            self.ray.shutdown()


def make_pool(executor: str = "local", workers: int = 1, threads: int | None = None,
              ray_address: str | None = None, log=print):
    """The pool a suite's cells run in: Ray tasks, worker processes, or this process."""
    if executor == "ray":
        return RayTasks(ray_address, threads, log)
    if workers > 1:
        return Workers(workers, threads or 1, log)
    return InProcess(log)
