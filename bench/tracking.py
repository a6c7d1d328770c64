"""MLflow tracking: one run per cell, found again by the cell's key.

Default store: SQLite inside the project (MLflow 3.7+ refuses the old file
store); MLFLOW_TRACKING_URI selects a server. A run is complete only when it
ended FINISHED with the tag `cell_status=finished`; anything else (running,
failed, killed) is never read as a result.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from bench.paths import PROJECT_ROOT

EXPERIMENT = os.environ.get("BENCH_EXPERIMENT", "bench")


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


def _mlflow():
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="mlflow")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)

    mlflow.set_tracking_uri(tracking_uri())
    return mlflow


def client():
    mlflow = _mlflow()
    return mlflow.MlflowClient()


def experiment_id() -> str:
    mlflow = _mlflow()
    exp = mlflow.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        uri = tracking_uri()
        # artifacts beside a SQLite store, not in whatever folder the process started in
        where = Path(uri[len("sqlite:///"):]).parent / "mlartifacts" if uri.startswith("sqlite:///") else None
        return mlflow.create_experiment(EXPERIMENT, artifact_location=where.as_uri() if where else None)
    return exp.experiment_id


def runs_for(key: str) -> list:
    return client().search_runs([experiment_id()], filter_string=f"tags.cell_key = '{key}'", max_results=100)


def finished_run(key: str):
    return finished_runs([key]).get(key)


def finished_runs(keys: list[str]) -> dict[str, Any]:
    """Finished runs by key (MLflow's filter takes no IN on tags: one query per key)."""
    out: dict[str, Any] = {}
    c, exp = client(), experiment_id()
    for key in dict.fromkeys(keys):
        for run in c.search_runs([exp], filter_string=f"tags.cell_key = '{key}' and tags.cell_status = 'finished'",
                                 max_results=10):
            if run.info.status == "FINISHED":
                out[key] = run
                break
    return out


class CellRun:
    """One MLflow run, opened fresh or re-opened to resume."""

    def __init__(self, key: str, run_id: str | None = None, name: str | None = None):
        self.client = client()
        if run_id is None:
            run = self.client.create_run(experiment_id(), tags={"cell_key": key, "cell_status": "running"}, run_name=name)
            run_id = run.info.run_id
        else:
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, "cell_status", "running")
        self.run_id = run_id

    def params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        new = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
        for s in range(0, len(new), 100):
            self.client.log_batch(self.run_id, params=new[s : s + 100])

    def tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def logged_steps(self, metric: str) -> set[int]:
        return {m.step for m in self.client.get_metric_history(self.run_id, metric)}

    def metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), ts, step) for k, v in metrics.items()])

    def artifact(self, name: str, obj: Any) -> None:
        with tempfile.TemporaryDirectory() as t:
            path = Path(t) / name
            path.write_text(json.dumps(obj, indent=1, default=float))
            self.client.log_artifact(self.run_id, str(path))

    def finish(self) -> None:
        self.client.set_tag(self.run_id, "cell_status", "finished")
        self.client.set_terminated(self.run_id, "FINISHED")

    def fail(self, status: str, error: str) -> None:
        self.client.set_tag(self.run_id, "cell_status", status.lower())
        self.client.set_tag(self.run_id, "error", error[:4000])
        self.client.set_terminated(self.run_id, status)
