"""pytest-benchmark setup for the selection-overhead micro-benchmarks (benchmarks/).

- Machine info: the accelerator that ran them (`torch.cuda.get_device_name()`, or
  "cpu"), the torch version and its thread count are added to every saved result, so
  `--benchmark-compare` shows when a comparison crosses machines (pytest-benchmark
  groups saved runs by OS/Python only, not by GPU).
- On CPU torch runs with one intra-op thread for the session (as `python -m bench
  regress`): on a shared 2-core machine two threads stall at every barrier and the
  timings vary several-fold; one thread is also the same on every runner.

Save the baseline (CPU, about a minute; rounds are set in test_selection_overhead.py):
  pytest benchmarks/ --benchmark-storage=file://results/benchmarks --benchmark-save=baseline
Compare with it (fails when a method's mean step time grows by more than 50%):
  pytest benchmarks/ --benchmark-storage=file://results/benchmarks --benchmark-compare \
      --benchmark-compare-fail=mean:50%
Reliable on a dedicated runner; on a shared machine prefer
`--benchmark-compare-fail=min:50%` and read failures with care (see the "Noise"
paragraph of test_selection_overhead.py: how often each form tripped on unchanged code).
`--benchmark-compare` takes the newest saved run of this OS/Python: keep GPU runs out of
results/benchmarks (or compare against a numbered run, `--benchmark-compare=0001`).
"""
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


CPU_THREADS = 1


def _accelerator() -> str:
    """GPU name, or "cpu": the device the benchmarks pick (BENCH_DEVICE, default auto)."""
    name = os.environ.get("BENCH_DEVICE", "auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def pytest_benchmark_update_machine_info(config, machine_info):
    accel = _accelerator()
    machine_info["accelerator"] = accel
    machine_info["torch"] = torch.__version__
    # called when results are saved, after the session fixture restored the thread count
    machine_info["torch_threads"] = CPU_THREADS if accel == "cpu" else torch.get_num_threads()


@pytest.fixture(scope="session", autouse=True)
def _one_cpu_thread():
    if _accelerator() != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(CPU_THREADS)
    yield
    torch.set_num_threads(before)
