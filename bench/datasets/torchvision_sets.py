"""torchvision datasets: Fashion-MNIST (offline source in docs/DATA.md), CIFAR-10/100, SVHN (online)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.data import RawData, register_dataset
from bench.errors import BenchError
from bench.fetch import missing
from bench.paths import data_dir


def _torchvision(cls_name: str, root: Path, fetch_name: str | None, **kw):
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    raw = root / cls_name / "raw"
    try:
        return cls(str(root), download=False, **kw)
    except Exception as e:
        present = sorted(p.name for p in raw.glob("*")) if raw.is_dir() else []
        if fetch_name and present and isinstance(e, (ValueError, RuntimeError, OSError, EOFError)) \
                and "not found" not in str(e).lower():
            raise BenchError(f"{fetch_name} in the cache is corrupt ({raw}: {type(e).__name__}: {str(e)[:120]}); "
                             f"delete {raw} and fetch it again with `nox -s fetch`") from None
        if fetch_name:  # an offline source exists: point to it
            raise missing(fetch_name) from None
    try:
        return cls(str(root), download=True, **kw)
    except Exception as e:  # offline, or the host refused
        raise BenchError(
            f"could not download {cls_name} ({type(e).__name__}: {str(e)[:80]}); it needs the network. "
            "Offline, use fashion_mnist, mnist5k or digits"
        ) from None


def _to_nchw(data) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(data))
    if t.ndim == 3:  # N,H,W grey
        return t.unsqueeze(1).contiguous()
    if t.shape[-1] in (1, 3):  # N,H,W,C
        return t.permute(0, 3, 1, 2).contiguous()
    return t.contiguous()


@register_dataset("fashion_mnist")
def fashion_mnist() -> RawData:
    root = data_dir()
    tr = _torchvision("FashionMNIST", root, "fashion_mnist", train=True)
    te = _torchvision("FashionMNIST", root, "fashion_mnist", train=False)
    return RawData("image", 10, _to_nchw(tr.data), tr.targets.long(), _to_nchw(te.data), te.targets.long(), flip=True)


@register_dataset("cifar10")
def cifar10() -> RawData:
    tr = _torchvision("CIFAR10", data_dir(), None, train=True)
    te = _torchvision("CIFAR10", data_dir(), None, train=False)
    return RawData("image", 10, _to_nchw(tr.data), torch.tensor(tr.targets), _to_nchw(te.data), torch.tensor(te.targets), flip=True)


@register_dataset("cifar100")
def cifar100() -> RawData:
    tr = _torchvision("CIFAR100", data_dir(), None, train=True)
    te = _torchvision("CIFAR100", data_dir(), None, train=False)
    return RawData("image", 100, _to_nchw(tr.data), torch.tensor(tr.targets), _to_nchw(te.data), torch.tensor(te.targets), flip=True)


@register_dataset("svhn")
def svhn() -> RawData:
    tr = _torchvision("SVHN", data_dir() / "svhn", None, split="train")
    te = _torchvision("SVHN", data_dir() / "svhn", None, split="test")
    return RawData("image", 10, torch.as_tensor(tr.data), torch.as_tensor(tr.labels).long(),
                   torch.as_tensor(te.data), torch.as_tensor(te.labels).long())
