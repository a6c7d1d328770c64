"""ImageNet-style class folders, kept on disk and decoded per batch (online users only)."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from bench.data import FileImages, RawData, register_dataset
from bench.errors import BenchError


@register_dataset("imagenet")
def imagenet() -> RawData:
    """ImageNet-style folders: $BENCH_IMAGENET_DIR/{train,val}/<class>/<image>, decoded per batch."""
    root = os.environ.get("BENCH_IMAGENET_DIR")
    if not root or not (Path(root) / "train").is_dir():
        raise BenchError(
            "imagenet needs BENCH_IMAGENET_DIR set to a folder with train/ and val/ class folders "
            "(ImageFolder layout); it is not available offline"
        )
    import torchvision

    size = int(os.environ.get("BENCH_IMAGENET_SIZE", "224"))
    tr = torchvision.datasets.ImageFolder(str(Path(root) / "train"))
    va = torchvision.datasets.ImageFolder(str(Path(root) / "val"))
    return RawData("image", len(tr.classes),
                   FileImages([p for p, _ in tr.samples], size), torch.tensor(tr.targets),
                   FileImages([p for p, _ in va.samples], size), torch.tensor(va.targets), flip=True)
