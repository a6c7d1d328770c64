"""Tests run on CPU on tiny real data. Each test session gets its own MLflow store
and checkpoint folder; datasets come from the shared cache (`nox -s fetch`)."""
import os

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):  # two workers on two cores: one torch thread each
    import torch

    torch.set_num_threads(1)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("BENCH_WARM_EVAL", "1")  # eval-mode shapes warmed untimed on CPU too, as on a GPU: the path tested


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh SQLite MLflow store and checkpoint folder for one test."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("BENCH_CHECKPOINTS", str(tmp_path / "ckpt"))
    return tmp_path


@pytest.fixture
def fixed_costs(monkeypatch):
    """Pass costs pinned (seconds per sample) where a test asserts which controls a run gets: measured
    costs put a scoring pass anywhere near half a training pass, so a cost control can fall within 3%
    of uniform's work on one machine and not on another."""
    from bench import engine
    from bench.work import PassCosts

    def pinned(model, x, mask, y, exits=(), amp=None, clock=None):
        return PassCosts(1e-4, 2e-4, 0.6e-4, {k: 0.2e-4 * k for k in exits})

    monkeypatch.setattr(engine, "measure_costs", pinned)


def tiny_cell(**kw):
    from bench.config import CellConfig

    base = dict(model="tiny_cnn", dataset="fashion_mnist", epochs=2, batch_size=64, train_limit=256,
                eval_limit=128, device="cpu", progress=False)
    base.update(kw)
    return CellConfig(**base)


def tiny_text_cell(**kw):
    return tiny_cell(**{"model": "tiny_bert", "dataset": "mr", "max_length": 32, **kw})
