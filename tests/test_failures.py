"""Nothing wrong is ever recorded as a result (issue 11): divergence, bad input, a store
that cannot be reached or written, and the edges of resuming after a kill."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from bench import tracking
from bench.cell import checkpoint_path, run_cell
from bench.cli import main
from bench.device import hardware_name, pick_device
from bench.engine import Trainer
from bench.errors import BenchError, Diverged
from bench.method import Method
from bench.registry import METHODS
from conftest import tiny_cell

RUN = ["run", "--model", "tiny_cnn", "--dataset", "fashion_mnist", "--epochs", "1", "--train-limit", "100",
       "--batch-size", "32", "--device", "cpu", "--no-progress"]


def runs():
    return tracking.client().search_runs([tracking.experiment_id()])


def one_line_error(capsys, argv, code=2):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == code, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def quiet(*_):
    pass


def key_of(cfg):
    return cfg.key(hardware_name(pick_device(cfg.device)))


# ---------------------------------------------------------------- 1. divergence

def test_a_diverged_run_is_recorded_as_diverged_not_as_a_result(store, capsys):
    err = one_line_error(capsys, RUN[:-1] + ["--epochs", "2", "--lr", "1e6", "--no-progress"], code=1)
    assert err.startswith("diverged:") and "not finite" in err
    (run,) = runs()
    assert run.info.status == "FAILED" and run.data.tags["cell_status"] == "diverged"
    assert int(run.data.tags["diverged_epoch"]) == 0 and int(run.data.tags["diverged_step"]) >= 1
    assert "final_test_acc" not in run.data.metrics
    assert tracking.finished_runs([run.data.tags["cell_key"]]) == {}
    assert not list((store / "ckpt").glob("*.pt"))


class PoisonWeights(Method):
    """Sets one weight to inf at the end of every epoch: the loss of that epoch stays finite."""

    name = "poison_weights"

    def end_epoch(self, epoch):
        with torch.no_grad():
            next(self.ctx.model.parameters()).view(-1)[0] = float("inf")


def test_non_finite_weights_at_an_epoch_end_stop_the_cell(store, monkeypatch):
    monkeypatch.setitem(METHODS._entries, "poison_weights", PoisonWeights)
    cfg = tiny_cell(method="poison_weights")
    with pytest.raises(Diverged, match="weights are not finite at epoch 0"):
        run_cell(cfg, log=quiet)
    (run,) = runs()
    assert run.data.tags["cell_status"] == "diverged" and run.info.status == "FAILED"


def test_a_suite_goes_on_past_a_diverged_cell_and_lists_it(store, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BENCH_RESULTS", str(tmp_path / "results"))
    suite = tmp_path / "two.yaml"
    suite.write_text(
        "name: two\ndefaults: {epochs: 1, batch_size: 32, train_limit: 100, device: cpu, progress: false}\n"
        "blocks:\n- {models: [tiny_cnn], datasets: [fashion_mnist], methods: [uniform], overrides: {lr: 1.0e+6}}\n"
        "- {models: [tiny_cnn], datasets: [fashion_mnist], methods: [uniform]}\n")
    rc = main(["suite", str(suite)])
    out = capsys.readouterr()
    assert rc == 1
    assert "1 cell(s) diverged" in out.err
    statuses = sorted(r.data.tags["cell_status"] for r in runs())
    assert statuses == ["diverged", "finished"]


# ---------------------------------------------------------------- 2. bad input

@pytest.mark.parametrize("args,expect", [
    (["--device", "gpu0"], "unknown device 'gpu0'"),
    (["--lr", "-1"], "learning rate must be positive"),
    (["--model", "tiny_bert", "--dataset", "mr", "--max-length", "0"], "max_length must be at least 2"),
    (["--model", "tiny_bert", "--dataset", "mr", "--max-length", "-5"], "max_length must be at least 2"),
    (["--train-limit", "1000000"], "more than the"),
    (["--batch-size", "100", "--train-limit", "100"], "never get past the LR warm-up"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_stored(store, capsys, args, expect):
    argv = list(RUN)
    for flag, value in zip(args[::2], args[1::2]):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    assert expect in one_line_error(capsys, argv)
    assert not runs()


def test_argument_errors_are_one_line_with_a_pointer_to_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(RUN + ["--epochs", "abc"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1
    assert "invalid int value: 'abc'" in err and "see `python -m bench run --help`" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_names_the_fix(store, capsys, tmp_path):
    err = one_line_error(capsys, RUN[:-2] + ["cuda", "--no-progress"])
    assert "no CUDA GPU" in err and "--device cpu" in err
    suite = tmp_path / "gpu.yaml"
    suite.write_text("name: gpu\ndefaults: {device: cuda}\nblocks:\n"
                     "- {models: [tiny_cnn], datasets: [digits], methods: [uniform]}\n")
    err = one_line_error(capsys, ["suite", str(suite), "--dry-run"])
    assert "no CUDA GPU" in err
    assert not runs()


def test_a_batch_larger_than_the_training_set_is_refused(store, capsys):
    # the probe: minilm on 300 MR sentences planned one step of batch 512 at LR factor 0
    err = one_line_error(capsys, ["run", "--model", "minilm", "--dataset", "mr", "--method", "uniform", "--epochs", "1",
                                  "--train-limit", "300", "--device", "cpu", "--no-progress"])
    assert "batch size 512 is larger than the 300 training samples" in err
    assert not runs()


def test_garbage_store_uri(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "garbage")
    err = one_line_error(capsys, RUN)
    assert "MLFLOW_TRACKING_URI='garbage'" in err and "sqlite:///" in err
    assert not list(tmp_path.iterdir())


def _freeze(path):
    """Make a file or folder read-only, for root too (chattr +i), and return how to undo it."""
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not supported here")
        return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)
    mode = path.stat().st_mode
    path.chmod(0o555 if path.is_dir() else 0o444)
    return lambda: path.chmod(mode)


@pytest.mark.parametrize("existing", [False, True])
def test_read_only_store_is_one_line(monkeypatch, capsys, tmp_path, existing):
    folder = tmp_path / "store"
    folder.mkdir()
    db = folder / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.setenv("BENCH_CHECKPOINTS", str(tmp_path / "ckpt"))
    if existing:
        tracking.experiment_id()  # a real store, then frozen
        tracking._checked.clear()
    undo = _freeze(db if existing else folder)
    try:
        err = one_line_error(capsys, RUN)
    finally:
        undo()
    assert str(db) in err and ("cannot be written" in err)
    assert not existing or not tracking.client().search_runs([tracking.experiment_id()])


# ---------------------------------------------------------------- 3. the store cannot be reached

def test_unreachable_store_fails_fast_naming_the_uri(tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "BENCH_CHECKPOINTS": str(tmp_path / "ckpt")}
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "bench", *RUN], capture_output=True, text=True, env=env, timeout=120)
    assert time.time() - t0 < 60  # the store check itself takes at most a few seconds
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "http://127.0.0.1:9" in p.stderr and "mlflow server" in p.stderr


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_store_lost_mid_cell_keeps_the_checkpoint_and_a_later_run_resumes(tmp_path, monkeypatch):
    db, port = tmp_path / "server.db", _free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}",
                               "--default-artifact-root", str(tmp_path / "art"), "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    ckpt = tmp_path / "ckpt"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}", "BENCH_CHECKPOINTS": str(ckpt),
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    args = ["run", "--model", "tiny_cnn", "--dataset", "fashion_mnist", "--epochs", "6", "--train-limit", "300",
            "--eval-limit", "64", "--batch-size", "64", "--device", "cpu", "--no-progress"]
    try:
        import urllib.request

        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
                break
            except OSError:
                time.sleep(0.5)
        cell = subprocess.Popen([sys.executable, "-m", "bench", *args], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        while time.time() < deadline + 240 and not list(ckpt.glob("*.pt")) and cell.poll() is None:
            time.sleep(0.02)
    finally:
        os.killpg(server.pid, signal.SIGKILL)  # the server's own process group, started above
        server.wait()
    out, err = cell.communicate(timeout=300)
    assert cell.returncode == 2, out + err
    assert len(err.strip().splitlines()) == 1 and "resumes the cell" in err, err
    assert list(ckpt.glob("*.pt"))
    # the same store, read directly: a later run resumes the run the server held and finishes it
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{db}"
    p = subprocess.run([sys.executable, "-m", "bench", *args], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "resuming" in p.stdout + p.stderr, p.stderr
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    (run,) = runs()
    assert run.info.status == "FINISHED"
    assert sorted(m.step for m in tracking.client().get_metric_history(run.info.run_id, "val_acc")) == list(range(6))
    assert not list(ckpt.glob("*.pt"))


# ---------------------------------------------------------------- 4. resume edges

def test_kill_between_final_metrics_and_finish_logs_them_once(store, monkeypatch):
    cfg = tiny_cell()

    def killed(self):
        raise SystemExit("killed")  # stands for SIGKILL: nothing else runs

    with monkeypatch.context() as m:
        m.setattr(tracking.CellRun, "finish", killed)
        m.setattr(tracking.CellRun, "fail", lambda *a: None)
        with pytest.raises(SystemExit):
            run_cell(cfg, log=quiet)
    res = run_cell(cfg, log=quiet)
    assert res.status == "finished"
    assert len(tracking.client().get_metric_history(res.run_id, "final_test_acc")) == 1
    assert len(runs()) == 1 and not checkpoint_path(res.key).exists()


def test_kill_between_finish_and_checkpoint_deletion_is_cleaned_up(store):
    cfg = tiny_cell()
    first = run_cell(cfg, log=quiet)
    path = checkpoint_path(first.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"left behind")
    again = run_cell(cfg, log=quiet)
    assert again.status == "skipped" and not path.exists()


def test_resumed_run_drops_the_interrupted_tag(store, monkeypatch):
    cfg = tiny_cell(epochs=2)
    real = Trainer.train_epoch

    def interrupt_at_1(self, epoch, on_step=None):
        if epoch == 1:
            raise KeyboardInterrupt
        return real(self, epoch, on_step)

    with monkeypatch.context() as m:
        m.setattr(Trainer, "train_epoch", interrupt_at_1)
        with pytest.raises(KeyboardInterrupt):
            run_cell(cfg, log=quiet)
    (run,) = runs()
    assert run.info.status == "KILLED" and run.data.tags["cell_status"] == "killed"
    assert run.data.tags["error"] == "interrupted"
    res = run_cell(cfg, log=quiet)
    assert "resumed" in tracking.client().get_run(res.run_id).data.tags
    (run,) = runs()
    assert res.run_id == run.info.run_id and run.info.status == "FINISHED"
    assert run.data.tags["cell_status"] == "finished" and "error" not in run.data.tags


def test_a_killed_run_without_checkpoint_is_marked_killed_when_superseded(store):
    cfg = tiny_cell()
    dead = tracking.CellRun(key_of(cfg), name="killed before its first checkpoint")
    res = run_cell(cfg, log=quiet)
    old = tracking.client().get_run(dead.run_id)
    assert old.info.status == "KILLED" and old.data.tags["cell_status"] == "killed"
    assert res.run_id != dead.run_id


def test_sigterm_marks_the_run_killed_and_it_resumes(store, tmp_path):
    args = ["run", "--model", "tiny_cnn", "--dataset", "fashion_mnist", "--epochs", "40", "--train-limit", "300",
            "--eval-limit", "64", "--batch-size", "64", "--device", "cpu", "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "bench", *args], env=os.environ.copy(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not list((tmp_path / "ckpt").glob("*.pt")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and err.strip().startswith("terminated:"), err
    (run,) = runs()
    assert run.info.status == "KILLED" and run.data.tags["cell_status"] == "killed"
    assert list((tmp_path / "ckpt").glob("*.pt"))


# ---------------------------------------------------------------- 5. cells that would not act

class NeedsThreeEpochs(Method):
    name = "needs_three_epochs"

    def refuse(self, cell):
        epochs = cell.epochs
        return None if epochs >= 3 else f"acts only from epoch 3 on, the cell has {epochs}; raise --epochs to 3"


class NoDrop(Method):
    name = "no_drop"
    uses_drop = False

    def run_metrics(self):
        return {"active_share": 0.25}


def test_method_refusal_is_one_line_for_runs_and_suites(store, monkeypatch, tmp_path):
    monkeypatch.setitem(METHODS._entries, NeedsThreeEpochs.name, NeedsThreeEpochs)
    with pytest.raises(BenchError, match="acts only from epoch 3 on"):
        run_cell(tiny_cell(method="needs_three_epochs", epochs=2), log=quiet)
    assert not runs()
    from bench.suite import load_suite

    p = tmp_path / "s.yaml"
    p.write_text("name: s\ndefaults: {epochs: 2}\nblocks:\n"
                 "- {models: [tiny_cnn], datasets: [digits], methods: [needs_three_epochs], drops: [0.5]}\n")
    with pytest.raises(BenchError, match="suite s: .*acts only from epoch 3 on"):
        load_suite(str(p))


def test_a_method_without_drop_runs_at_drop_0_only_and_logs_active_share(store, monkeypatch, tmp_path):
    monkeypatch.setitem(METHODS._entries, NoDrop.name, NoDrop)
    with pytest.raises(BenchError, match="no_drop has no drop ratio"):
        run_cell(tiny_cell(method="no_drop", drop=0.5), log=quiet)
    from bench.suite import load_suite

    p = tmp_path / "s.yaml"
    p.write_text("name: s\nblocks:\n- {models: [tiny_cnn], datasets: [digits], methods: [no_drop], drops: [0.5, 0.8]}\n")
    assert [c.drop for c in load_suite(str(p)).cells()] == [0.0]
    res = run_cell(tiny_cell(method="no_drop"), log=quiet)
    assert res.metrics["active_share"] == 0.25
    assert tracking.client().get_run(res.run_id).data.metrics["active_share"] == 0.25
