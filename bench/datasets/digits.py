"""scikit-learn's 1,797 8x8 digits, scaled to 0..255 (always offline)."""
from __future__ import annotations

import torch

from bench.data import RawData, carve_test, register_dataset


@register_dataset("digits")
def digits() -> RawData:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.as_tensor(d.images * 255 / 16, dtype=torch.float32).round().to(torch.uint8).unsqueeze(1)
    return carve_test("image", 10, x, torch.as_tensor(d.target).long())
