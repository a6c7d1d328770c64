"""A run killed midway and started again: finished epochs are kept, nothing is logged twice,
and the result equals an uninterrupted run."""
import os
import signal
import subprocess
import sys
import time

from bench import tracking
from bench.cell import run_cell
from conftest import tiny_cell

ARGS = ["run", "--model", "tiny_cnn", "--dataset", "fashion_mnist", "--epochs", "4", "--train-limit", "600",
        "--eval-limit", "128", "--batch-size", "64", "--device", "cpu", "--no-progress"]


def test_killed_run_resumes_where_it_stopped(store, monkeypatch, tmp_path):
    ckpt_dir = tmp_path / "ckpt"
    proc = subprocess.Popen([sys.executable, "-m", "bench", *ARGS], env=os.environ.copy(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and not list(ckpt_dir.glob("*.pt")):
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    runs = tracking.client().search_runs([tracking.experiment_id()])
    assert len(runs) == 1 and runs[0].data.tags["cell_status"] == "running"  # not complete
    p = subprocess.run([sys.executable, "-m", "bench", *ARGS], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "resuming" in p.stdout + p.stderr

    runs = tracking.client().search_runs([tracking.experiment_id()])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    steps = [m.step for m in tracking.client().get_metric_history(runs[0].info.run_id, "val_acc")]
    assert sorted(steps) == [0, 1, 2, 3]  # each epoch once
    assert not list(ckpt_dir.glob("*.pt"))

    # same numbers as a run that was never interrupted
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'clean.db'}")
    clean = run_cell(tiny_cell(epochs=4, train_limit=600, eval_limit=128, batch_size=64), log=lambda *_: None)
    resumed = runs[0].data.metrics
    assert clean.metrics["final_test_acc"] == resumed["final_test_acc"]
    assert clean.metrics["total_backwards"] == resumed["total_backwards"]
