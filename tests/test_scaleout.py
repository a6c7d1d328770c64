"""Scaling out: a local Ray cluster (2 CPUs, loopback) runs a tiny 6-cell suite into a real
`mlflow server` started here; a worker killed mid-cell; two drivers at once; the SQLite refusal;
a server that stops with everything it started. Select with `-m scaleout`."""
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray binds 127.0.0.1 (read when ray is imported)
import ray  # noqa: E402

from bench import claims, mlflow_server, report, tracking  # noqa: E402
from bench.device import hardware_name  # noqa: E402
from bench.runner import run_suite  # noqa: E402
from bench.suite import MethodSpec, load_suite  # noqa: E402

pytestmark = pytest.mark.scaleout
TIMING = re.compile(r"seconds|speedup|time|run_id|cost|efficiency|work_frac|forward_frac|metered")  # may differ between two runs of one cell (timings and time-weighted work)

SUITE = """name: scaleout_tiny
defaults: {{epochs: {epochs}, batch_size: 64, train_limit: {train_limit}, eval_limit: 128, device: cpu, progress: false}}
blocks:
  - models: [tiny_cnn]
    datasets: [fashion_mnist]
    methods: [uniform, random_subset]
    drops: [0.5]
    seeds: [0, 1, 2]
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def within(seconds: int):
    """Bound an in-process driver: a stuck cluster fails the test instead of hanging it."""
    def _late(*_):
        raise TimeoutError(f"did not finish within {seconds} s")

    old = signal.signal(signal.SIGALRM, _late)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    with open(d / "server.log", "w") as log:
        proc = mlflow_server.start(f"sqlite:///{d / 'mlflow.db'}", str(d / "artifacts"), "127.0.0.1", port, log=log)
        try:
            mlflow_server.wait_ready(proc, f"http://127.0.0.1:{port}")
            yield f"http://127.0.0.1:{port}"
        finally:
            mlflow_server.stop(proc)


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=True,
             logging_level="WARNING")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def on_server(server, tmp_path_factory):
    """One experiment, checkpoint folder and results folder for the module: the Ray tests'
    workers see the same environment and are reused from test to test (each suite differs)."""
    d = tmp_path_factory.mktemp("scaleout")
    name = f"scaleout-{os.getpid()}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", server)
        mp.setenv("BENCH_EXPERIMENT", name)
        mp.setattr(tracking, "EXPERIMENT", name)
        mp.setenv("BENCH_CHECKPOINTS", str(d / "ckpt"))
        mp.setenv("BENCH_RESULTS", str(d / "results"))
        yield d


def write_suite(tmp_path, epochs=2, train_limit=256):
    path = tmp_path / f"scaleout_tiny_{epochs}_{train_limit}.yaml"
    path.write_text(SUITE.format(epochs=epochs, train_limit=train_limit))
    return path


def assert_each_cell_once(suite, epochs):
    """One run per cell, finished, each epoch logged once; the table has every cell once."""
    import torch

    torch.set_num_threads(1)  # the keys of cells that ran at one thread per cell
    from bench.device import hardware_name

    hw = hardware_name(torch.device("cpu"))
    for cfg in suite.cells():
        runs = tracking.runs_for(cfg.key(hw))
        assert len(runs) == 1, f"{cfg.label}: {len(runs)} runs"
        assert runs[0].info.status == "FINISHED" and runs[0].data.tags["cell_status"] == "finished"
        steps = [m.step for m in tracking.client().get_metric_history(runs[0].info.run_id, "val_acc")]
        assert sorted(steps) == list(range(epochs)), f"{cfg.label}: epochs logged {steps}"
    table = report.collect(suite)
    assert len(table) == 6 and table["config_key"].is_unique
    return table


def _comparable(table):
    cols = [c for c in table.columns if not TIMING.search(c)]
    t = table[cols].astype(object)
    return t.where(t.notna(), None).to_dict("records")  # NaN != NaN: a metric a run lacks compares as None


def test_ray_suite_into_server_equals_local_run(on_server, cluster, monkeypatch):
    import torch

    threads = torch.get_num_threads()
    suite = load_suite(str(write_suite(on_server)))
    lines = []
    try:
        with within(400):
            out = run_suite(suite, executor="ray", log=lines.append)
        assert out.ran == 6 and not out.failed, (out.failed, lines)
        assert [ln.split("]")[0].split(",")[0] for ln in lines[1:]] == [f"[{i}/6" for i in range(1, 7)]  # a line per cell
        on_ray = assert_each_cell_once(suite, epochs=2)
        assert set(on_ray["hardware"]) == {hardware_name(torch.device("cpu"))}
        for run_id in on_ray["run_id"]:
            assert tracking.client().get_run(run_id).data.tags["executor"] == "ray"

        # the same suite in this process, same server, another experiment: the same table but for timings
        monkeypatch.setattr(tracking, "EXPERIMENT", tracking.EXPERIMENT + "-local")
        with within(400):
            out = run_suite(suite, executor="local", cpus_per_cell=1, log=lambda *_: None)
        assert out.ran == 6 and not out.failed
        local = report.collect(suite)
    finally:
        torch.set_num_threads(threads)
    a, b = _comparable(local), _comparable(on_ray)
    assert [{k: v for k, v in r.items() if r[k] != b[i].get(k)} for i, r in enumerate(a)] == [{}] * len(a)


def test_killed_worker_resumes_its_cell_once(on_server, cluster):
    import torch

    threads = torch.get_num_threads()
    suite = load_suite(str(write_suite(on_server, epochs=4, train_limit=1000)))
    ckpt, killed = on_server / "ckpt", {}

    def kill_one_mid_cell():
        deadline = time.time() + 300
        while time.time() < deadline:
            for f in ckpt.glob("*.pt"):  # a cell with a finished epoch and more to go
                for claim in claims.live_claims(f.stem):
                    pid = int(claim.data.tags["claim_pid"])
                    cmd = open(f"/proc/{pid}/cmdline", "rb").read()
                    if cmd.startswith(b"ray::") and f.exists():  # a worker of this test's cluster, still mid-cell
                        os.kill(pid, signal.SIGKILL)
                        killed.update(key=f.stem, pid=pid)
                        return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one_mid_cell, daemon=True)
    killer.start()
    try:
        with within(400):
            out = run_suite(suite, executor="ray", log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    killer.join(timeout=10)
    assert killed, "no worker was killed: the cells ended before a checkpoint was seen"
    assert out.ran == 6 and not out.failed, out.failed
    assert_each_cell_once(suite, epochs=4)
    (run,) = tracking.runs_for(killed["key"])
    assert run.data.tags.get("resumed") == "true"  # went on from its checkpoint, in the same run
    assert not list(ckpt.glob("*.pt"))


def test_two_drivers_finish_each_cell_exactly_once(on_server, cluster):
    """A Ray driver (another process) starts the suite; once it holds the first cell, a local
    driver starts the same suite here, from that cell: each cell trained once, both see all six."""
    import torch

    path = write_suite(on_server, epochs=3, train_limit=1000)
    suite = load_suite(str(path))
    cmd = [sys.executable, "-m", "bench", "suite", str(path), "--executor", "ray", "--ray-address", cluster]
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    ray_driver = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    threads, lines = torch.get_num_threads(), []
    try:
        torch.set_num_threads(1)
        from bench.device import hardware_name

        keys = [cfg.key(hardware_name(torch.device("cpu"))) for cfg in suite.cells()]  # as the cells at 1 thread
        first = keys[0]
        deadline = time.time() + 300
        while not claims.live_claims(first):
            assert ray_driver.poll() is None and time.time() < deadline, "the Ray driver never claimed a cell"
            time.sleep(0.05)
        with within(400):
            run_suite(suite, executor="local", cpus_per_cell=1, log=lines.append)
        ray_out, ray_err = ray_driver.communicate(timeout=400)
    finally:
        torch.set_num_threads(threads)
        if ray_driver.poll() is None:
            ray_driver.kill()
            ray_driver.wait()
    assert ray_driver.returncode == 0, ray_err[-3000:]
    assert "tables and plots:" in ray_out
    on_ray = re.findall(r"^\[\d/6[^]]*\] (finished|skipped):", ray_out, re.M)  # one line per cell
    here = [m.group(1) for ln in lines if (m := re.match(r"^\[\d/6[^]]*\] (finished|skipped):", ln))]
    assert len(on_ray) == 6 and len(here) == 6, (ray_out, lines)  # each driver saw every cell finished
    assert on_ray.count("finished") + here.count("finished") == 6, (ray_out, lines)  # each trained once
    assert here[0] == "skipped"  # it waited for the cell the other driver held
    withdrawn = tracking.client().search_runs([claims.experiment_id()], "attributes.status = 'KILLED'")
    assert set(keys) & {r.data.tags["claim_key"] for r in withdrawn}, "the local driver never met a held cell: the drivers did not overlap"
    try:
        assert_each_cell_once(suite, epochs=3)
    finally:
        torch.set_num_threads(threads)


def test_ray_on_a_sqlite_store_is_refused_in_one_line(store, capsys):
    from bench.cli import main

    path = write_suite(store)
    assert main(["suite", str(path), "--executor", "ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sqlite" in err.lower() and "MLFLOW_TRACKING_URI" in err
    assert not (store / "mlflow.db").exists()  # refused before the store was touched


def test_server_starts_only_what_it_needs_and_stops_all_of_it(tmp_path):
    port = _free_port()
    cmd = [sys.executable, "-m", "bench.mlflow_server", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{tmp_path / 'db'}", "--artifacts-destination", str(tmp_path / "art")]
    wrapper = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    group = None
    try:
        line = wrapper.stdout.readline()  # printed once the server answers
        group = int(re.search(r"group (\d+)", line).group(1))
        pids = mlflow_server.group_pids(group)
        cmds = [open(f"/proc/{p}/cmdline", "rb").read().replace(b"\0", b" ").decode() for p in pids]
        assert not any("huey" in c or "job_runner" in c for c in cmds), cmds
        assert len(pids) <= 2, cmds  # the mlflow CLI and one uvicorn worker
        wrapper.send_signal(signal.SIGTERM)  # stopping it by its pid stops the whole server
        assert wrapper.wait(timeout=60) == 0
        assert mlflow_server.group_pids(group) == []
    finally:  # on failure too: the wrapper stops its server on SIGTERM; what is left of the group goes
        if wrapper.poll() is None:
            wrapper.terminate()
            wrapper.wait(timeout=60)
        if group and mlflow_server.group_pids(group):
            os.killpg(group, signal.SIGKILL)


def test_claim_protocol_one_holder_retries_reenter_lapsed_leases_pass_on(store, monkeypatch):
    """On one store, without Ray: a held cell is refused to another owner, re-entered by the
    same owner (a retried task), passed on after release, and taken over when its holder
    stops renewing (a dead driver) once the lease lapses."""
    monkeypatch.setattr(claims, "LEASE_SECONDS", 1.0)
    a = claims.acquire("cell1", "driver-a")
    assert a is not None
    assert claims.acquire("cell1", "driver-b") is None  # held
    time.sleep(1.5)  # longer than the lease: A's renewals keep it
    assert claims.acquire("cell1", "driver-b") is None
    again = claims.acquire("cell1", "driver-a")  # a retry of A's task after its worker died
    assert again is not None and again.run_id == a.run_id
    again._stop.set()
    a.release()
    b = claims.acquire("cell1", "driver-b")
    assert b is not None and b.run_id != a.run_id
    b._stop.set()  # B dies: no renewals, no release
    time.sleep(1.2)
    c = claims.acquire("cell1", "driver-c")
    assert c is not None
    assert tracking.client().get_run(b.run_id).info.status == "KILLED"
    assert [r.info.run_id for r in claims.live_claims("cell1")] == [c.run_id]
    c.release()


def test_a_two_cell_slice_of_the_full_matrix_runs_on_ray_into_the_server(on_server, cluster):
    """full.yaml as shipped, cut to two cells of its first block (ResNet-18 on Fashion-MNIST: uniform and the
    random subset) with tiny limits, on the local Ray executor into one MLflow server: how the matrix runs."""
    import dataclasses

    import torch

    from bench.paths import PROJECT_ROOT
    from bench.suite import Block

    full = load_suite(str(PROJECT_ROOT / "results" / "suites" / "full.yaml"))  # the fixture points BENCH_RESULTS elsewhere
    first = full.blocks[0]
    tiny = {"epochs": 1, "batch_size": 16, "train_limit": 48, "eval_limit": 16, "device": "cpu", "progress": False}
    block = Block(first.models[:1], first.datasets[:1], (MethodSpec("uniform"), MethodSpec("random_subset")),
                  first.drops[:1], first.seeds[:1], {**first.overrides, **tiny})
    assert block.models == ("resnet18",) and block.datasets == ("fashion_mnist",)
    piece = dataclasses.replace(full, blocks=(block,), controls=False)
    assert len(piece.cells()) == 2
    threads = torch.get_num_threads()
    lines = []
    try:
        with within(400):
            out = run_suite(piece, executor="ray", log=lines.append)
    finally:
        torch.set_num_threads(threads)
    assert out.ran == 2 and not out.failed, (out.failed, lines)
    runs = tracking.client().search_runs([tracking.experiment_id()], "tags.executor = 'ray'")
    assert {r.data.params["model"] for r in runs if r.data.params.get("train_limit") == "48"} == {"resnet18"}
