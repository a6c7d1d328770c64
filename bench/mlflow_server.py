"""Start and stop an MLflow tracking server with only what the harness needs.

`mlflow server` by default also starts a job runner (huey_consumer processes) that outlives
a server stopped by its pid. Here job execution is off (MLFLOW_SERVER_ENABLE_JOB_EXECUTION),
one web worker runs, it binds 127.0.0.1 unless told otherwise, and it lives in its own
process group, which stop() ends as a whole.

    python -m bench.mlflow_server [--host H] [--port P] [--backend-store-uri URI] [--artifacts-destination DIR]

runs one until Ctrl-C, SIGTERM or SIGHUP, or until the process that started it (nox) dies.
Standard library only: nox sessions call it without importing torch or mlflow.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench.paths import PROJECT_ROOT


def start(backend_store_uri: str, artifacts_destination: str | None = None, host: str = "127.0.0.1",
          port: int = 5000, log=None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store_uri,
           "--host", host, "--port", str(port), "--workers", "1"]
    if artifacts_destination:
        cmd += ["--serve-artifacts", "--artifacts-destination", artifacts_destination]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    # its own session: a group that stop() ends whole; its output on stderr (or `log`), stdout is ours
    return subprocess.Popen(cmd, env=env, start_new_session=True, stdout=log or sys.stderr, stderr=subprocess.STDOUT)


def wait_ready(proc: subprocess.Popen, url: str, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the MLflow server exited with code {proc.returncode} before it answered")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"the MLflow server at {url} did not answer within {timeout:.0f} s")


def group_pids(pgid: int) -> list[int]:
    """Live processes of a process group (Linux /proc), zombies left out."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(d.name))
    return out


def _gone(proc: subprocess.Popen, pgid: int, seconds: float) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        proc.poll()  # reap our own child so it does not count as alive
        if not group_pids(pgid):
            return True
        time.sleep(0.1)
    return False


def stop(proc: subprocess.Popen, grace: float = 10) -> None:
    """SIGTERM to the whole group, SIGKILL to whatever is left after `grace` seconds."""
    pgid = proc.pid  # start_new_session: the server leads its own group
    for sig, seconds in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        if _gone(proc, pgid, seconds):
            break
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.mlflow_server", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 (or a node address) to serve other machines")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--backend-store-uri", default=f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}",
                   help="SQL database, e.g. postgresql://user@db/mlflow for a shared server")
    p.add_argument("--artifacts-destination", default=str(PROJECT_ROOT / "mlartifacts"),
                   help="where the server keeps artifacts (a folder or s3://...)")
    a = p.parse_args(argv)

    def _stop(signum, _frame):
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop)
    parent = os.getppid()
    proc = start(a.backend_store_uri, a.artifacts_destination, a.host, a.port)
    url = f"http://{a.host if a.host != '0.0.0.0' else '127.0.0.1'}:{a.port}"
    try:
        wait_ready(proc, url)
        print(f"MLflow server on {a.backend_store_uri} at {url} (group {proc.pid}); "
              f"clients: export MLFLOW_TRACKING_URI={url}; stop: Ctrl-C or kill {os.getpid()}", flush=True)
        while proc.poll() is None and os.getppid() == parent:  # parent gone: stop with it
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        stop(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
