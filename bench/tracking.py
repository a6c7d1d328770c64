"""MLflow tracking: one run per cell, found again by the cell's key.

Default store: SQLite inside the project (MLflow 3.7+ refuses the old file
store); MLFLOW_TRACKING_URI selects a server. A run is complete only when it
ended FINISHED with the tag `cell_status=finished`; anything else (running,
killed, failed, diverged) is never read as a result.

The store is checked once per process before its first use (a few seconds at
most); a store that stops answering later raises StoreError, and the cell's
checkpoint stays for a resume.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import tempfile
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

from bench import signals
from bench.errors import BenchError, StoreError
from bench.paths import PROJECT_ROOT

EXPERIMENT = os.environ.get("BENCH_EXPERIMENT", "bench")


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


# MLflow retries a failing request for minutes by default; a lost store should say so sooner.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
CHECK_TIMEOUT_S = 3
_FIX = "unset MLFLOW_TRACKING_URI to use the project's SQLite store, or point it at sqlite:///ABSOLUTE/PATH.db or http://HOST:PORT"
_checked: set[str] = set()


def store_problem(uri: str) -> str | None:
    """Why the store at `uri` cannot be used for writing, in one line; None when it can."""
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):].split("?")[0])
        try:
            if path.exists():
                db = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=CHECK_TIMEOUT_S, isolation_level=None)
                try:  # a real write, rolled back: a read-only file opens fine and fails only here
                    db.execute("BEGIN IMMEDIATE")
                    db.execute("CREATE TABLE bench_write_check (x)")
                    db.execute("ROLLBACK")
                finally:
                    db.close()
            elif not path.parent.is_dir():
                return f"the MLflow store {uri}: folder {path.parent} does not exist; create it or {_FIX}"
            else:
                with tempfile.TemporaryFile(dir=path.parent):
                    pass
        except (OSError, sqlite3.Error) as e:
            if "locked" in str(e):
                return None  # another process is writing: the store works
            return f"the MLflow store {uri} cannot be written ({e}); make it writable or {_FIX}"
        return None
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=CHECK_TIMEOUT_S).close()
        except urllib.error.HTTPError:
            return None  # a server answered
        except (OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            return (f"cannot reach the MLflow store at {uri} ({reason}); start the server "
                    f"(mlflow server --host HOST --port PORT) or {_FIX}")
        return None
    if "://" not in uri and not uri.startswith(("databricks", "file:")):
        return f"MLFLOW_TRACKING_URI={uri!r} is not a store the harness can use; {_FIX}"
    return None


def check_store() -> None:
    """Check the store once per process, before anything is logged or trained."""
    uri = tracking_uri()
    if uri in _checked:
        return
    problem = store_problem(uri)
    if problem:
        raise StoreError(problem)
    _checked.add(uri)
    try:
        experiment_id()
    except Exception as e:  # noqa: BLE001 (any failure of a store we cannot use: one line)
        _checked.discard(uri)
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise StoreError(f"the MLflow store {uri} does not work ({first}); {_FIX}") from None


def _mlflow():
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="mlflow")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # logs a traceback for every database error it then raises; we report those in one line
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)

    mlflow.set_tracking_uri(tracking_uri())
    return mlflow


def client():
    mlflow = _mlflow()
    check_store()
    return mlflow.MlflowClient()


def experiment_id() -> str:
    mlflow = _mlflow()
    check_store()
    exp = mlflow.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        uri = tracking_uri()
        # artifacts beside a SQLite store, not in whatever folder the process started in
        where = Path(uri[len("sqlite:///"):]).parent / "mlartifacts" if uri.startswith("sqlite:///") else None
        return mlflow.create_experiment(EXPERIMENT, artifact_location=where.as_uri() if where else None)
    return exp.experiment_id


def mark_killed(run_id: str, why: str) -> None:
    """A run that died (or was stopped) without finishing: never left as running."""
    c = client()
    c.set_tag(run_id, "cell_status", "killed")
    c.set_tag(run_id, "error", why)
    c.set_terminated(run_id, "KILLED")


def runs_for(key: str) -> list:
    return client().search_runs([experiment_id()], filter_string=f"tags.cell_key = '{key}'", max_results=100)


def finished_runs(keys: list[str]) -> dict[str, Any]:
    """Finished runs by key: whether a cell is finished is asked here and nowhere else. A few keys
    are looked up one by one; more in one paginated scan of the experiment's finished runs."""
    out: dict[str, Any] = {}
    wanted = set(keys)
    if not wanted:
        return out
    c, exp = client(), experiment_id()
    if len(wanted) <= 3:
        for key in wanted:
            for run in c.search_runs([exp], filter_string=f"tags.cell_key = '{key}' and tags.cell_status = 'finished'",
                                     max_results=10):
                if run.info.status == "FINISHED":
                    out[key] = run
                    break
        return out
    token = None
    while True:
        page = c.search_runs([exp], filter_string="tags.cell_status = 'finished'", max_results=1000, page_token=token)
        for run in page:
            key = run.data.tags.get("cell_key")
            if key in wanted and run.info.status == "FINISHED" and key not in out:
                out[key] = run
        token = page.token
        if not token:
            return out


def _store_call(fn):
    """A store call that fails because the store went away raises StoreError (one line)."""

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            out = fn(*args, **kwargs)
            signals.raise_held()  # a Ctrl-C or SIGTERM that came during the call
            return out
        except BenchError:
            raise
        except Exception:
            problem = store_problem(tracking_uri())
            if problem is None:
                raise
            raise StoreError(f"lost the store mid-cell: {problem}. The cell's checkpoint is kept: "
                             f"the same command resumes the cell once the store is back") from None

    return call


class CellRun:
    """One MLflow run, opened fresh or re-opened to resume."""

    @_store_call
    def __init__(self, key: str, run_id: str | None = None, name: str | None = None):
        self.client = client()
        if run_id is None:
            run = self.client.create_run(experiment_id(), tags={"cell_key": key, "cell_status": "running"}, run_name=name)
            run_id = run.info.run_id
        else:
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, "cell_status", "running")
            if "error" in self.client.get_run(run_id).data.tags:  # the interruption it resumes from is over
                self.client.delete_tag(run_id, "error")
        self.run_id = run_id

    @_store_call
    def params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        new = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
        for s in range(0, len(new), 100):
            self.client.log_batch(self.run_id, params=new[s : s + 100])

    @_store_call
    def tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    @_store_call
    def logged_steps(self, metric: str) -> set[int]:
        return {m.step for m in self.client.get_metric_history(self.run_id, metric)}

    @_store_call
    def metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), ts, step) for k, v in metrics.items()])

    @_store_call
    def artifact(self, name: str, obj: Any) -> None:
        with tempfile.TemporaryDirectory() as t:
            path = Path(t) / name
            path.write_text(json.dumps(obj, indent=1, default=float))
            self.client.log_artifact(self.run_id, str(path))

    @_store_call
    def logged_metrics(self) -> set[str]:
        return set(self.client.get_run(self.run_id).data.metrics)

    @_store_call
    def diverged(self, epoch: int, step: int, why: str) -> None:
        self.tags({"cell_status": "diverged", "diverged_epoch": epoch, "diverged_step": step, "error": why})
        self.client.set_terminated(self.run_id, "FAILED")

    @_store_call
    def finish(self) -> None:
        self.client.set_tag(self.run_id, "cell_status", "finished")
        self.client.set_terminated(self.run_id, "FINISHED")

    @_store_call
    def fail(self, status: str, error: str) -> None:
        self.client.set_tag(self.run_id, "cell_status", status.lower())
        self.client.set_tag(self.run_id, "error", error[:4000])
        self.client.set_terminated(self.run_id, status)
