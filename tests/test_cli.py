"""Every bad input: one clear line on stderr, a non-zero exit, no traceback, nothing logged as finished."""
import os
import subprocess
import sys

import pytest

from bench import tracking

RUN = ["run", "--model", "tiny_cnn", "--dataset", "fashion_mnist", "--epochs", "1", "--train-limit", "100", "--batch-size", "32",
       "--device", "cpu", "--no-progress"]


def bench(args, env=None):
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def _set(args, flag, value):
    args = list(args)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    return args


@pytest.mark.parametrize("flag,value,expect", [
    ("--method", "nosuch", "known methods: "),
    ("--model", "nosuch", "known models: "),
    ("--dataset", "nosuch", "known datasets: "),
    ("--drop", "1.5", "outside [0, 1)"),
    ("--drop", "-0.1", "outside [0, 1)"),
    ("--model", "minilm", "pair it with an image model"),
    ("--param", "x=1", "has no parameter x"),
])
def test_bad_input_is_one_line(store, flag, value, expect):
    p = bench(_set(RUN, flag, value))
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0] and "Traceback" not in p.stderr
    assert not tracking.client().search_runs([tracking.experiment_id()])


def test_missing_dataset_names_the_fetch_command(store, tmp_path):
    p = bench(RUN, env={"BENCH_CACHE": str(tmp_path / "empty")})
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "nox -s fetch" in p.stderr


def test_run_prints_a_summary_and_list_works(store):
    p = bench(RUN)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("finished: tiny_cnn/fashion_mnist/uniform")
    p = bench(["list", "methods"])
    assert p.returncode == 0 and "uniform" in p.stdout and "random_subset" in p.stdout
