"""Where the project keeps its cache (datasets, weights, checkpoints) and its MLflow store."""
import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    return Path(os.environ.get("BENCH_CACHE", PROJECT_ROOT / ".cache"))


def data_dir() -> Path:
    return cache_dir() / "data"


def checkpoint_dir() -> Path:
    return Path(os.environ.get("BENCH_CHECKPOINTS", cache_dir() / "checkpoints"))


def results_dir() -> Path:
    return Path(os.environ.get("BENCH_RESULTS", PROJECT_ROOT / "results"))
