"""The data loader core: splits, limits, label noise, tokenisation.

A dataset is a function in `bench/datasets/` (one family per file) registered
with `@register_dataset(name)`; it returns a `RawData` (full train and test).
`load_data` then carves validation from train with a fixed seed, applies the
size limits (stratified) and label noise, and, for text, tokenizes with the
model's tokenizer.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from bench.errors import BenchError
from bench.registry import DATASETS

register_dataset = DATASETS.register

SPLIT_SEED = 0  # validation carving, limits and label noise never depend on the run seed


@dataclass
class Split:
    """Tensors of one split. Images: uint8 N,C,H,W. Text: token ids N,L with `mask`."""

    x: Any  # Tensor, or a FileImages for data that stays on disk
    y: torch.Tensor
    mask: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: torch.Tensor) -> "Split":
        x = self.x.subset(idx) if isinstance(self.x, FileImages) else self.x[idx]
        return Split(x, self.y[idx], None if self.mask is None else self.mask[idx])


@dataclass
class RawData:
    kind: str  # "image" or "text"
    num_classes: int
    train_x: Any  # images: uint8 tensor N,C,H,W or FileImages; text: list of str or (str, str)
    train_y: torch.Tensor
    test_x: Any
    test_y: torch.Tensor
    flip: bool = False  # horizontal flips preserve the label (natural images, clothes)


@dataclass
class Data:
    name: str
    kind: str
    num_classes: int
    train: Split
    val: Split
    test: Split
    channels: int = 0
    size: int = 0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    flip: bool = False


class FileImages:
    """Images that stay on disk (ImageNet-style folders), decoded per batch by a thread pool.

    Training batches get a random-resized crop (scale 0.08 to 1, ratio 3/4 to 4/3, as ImageNet training
    does) from a seeded generator; evaluation and scoring get a resize and centre crop, kept in a bounded
    in-memory cache (BENCH_DECODE_CACHE_MB, default 2048) so repeated scoring passes do not decode again."""

    def __init__(self, paths: Sequence[str], size: int):
        self.paths, self.size = list(paths), size
        self._cache: dict[str, torch.Tensor] = {}
        self._cache_bytes = 0
        self.cache_limit = int(os.environ.get("BENCH_DECODE_CACHE_MB", "2048")) * 2**20

    def __len__(self):
        return len(self.paths)

    def __getstate__(self):  # a copy (a trial's deepcopy, a worker) shares no cache
        return {"paths": self.paths, "size": self.size}

    def __setstate__(self, state):
        self.__init__(state["paths"], state["size"])

    def subset(self, idx):
        return FileImages([self.paths[i] for i in idx.tolist()], self.size)

    def _centre(self, path: str) -> torch.Tensor:
        hit = self._cache.get(path)
        if hit is not None:
            return hit
        from PIL import Image

        img = Image.open(path).convert("RGB")
        s = self.size
        w, h = img.size
        scale = s * 1.14 / min(w, h)  # resize then centre-crop, as ImageNet evaluation does
        img = img.resize((max(s, round(w * scale)), max(s, round(h * scale))))
        w, h = img.size
        left, top = (w - s) // 2, (h - s) // 2
        out = torch.from_numpy(np.asarray(img.crop((left, top, left + s, top + s)), dtype=np.uint8)).permute(2, 0, 1)
        if self._cache_bytes + out.numel() <= self.cache_limit:
            self._cache[path] = out
            self._cache_bytes += out.numel()
        return out

    def _random_crop(self, path: str, seed: int) -> torch.Tensor:
        import math
        import random

        from PIL import Image

        img = Image.open(path).convert("RGB")
        w, h = img.size
        rng = random.Random(seed)
        for _ in range(10):
            area = w * h * rng.uniform(0.08, 1.0)
            ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            cw, ch = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
            if 0 < cw <= w and 0 < ch <= h:
                left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
                break
        else:  # the whole image, centred to the ratio range
            cw, ch, left, top = w, h, 0, 0
        img = img.resize((self.size, self.size), box=(left, top, left + cw, top + ch))
        return torch.from_numpy(np.asarray(img, dtype=np.uint8)).permute(2, 0, 1)

    def batch(self, idx: torch.Tensor, train: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 N,C,H,W images of these positions: random-resized crops for training, else centre crops."""
        paths = [self.paths[i] for i in idx.tolist()]
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            if train:
                seeds = torch.randint(0, 2**31 - 1, (len(paths),), generator=generator).tolist()
                return torch.stack(list(pool.map(self._random_crop, paths, seeds)))
            return torch.stack(list(pool.map(self._centre, paths)))

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        return self.batch(idx)


# ---------------------------------------------------------------- helpers


def stratified_take(y: torch.Tensor, k: int, seed: int = SPLIT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of a class-balanced subset of size k, and of the rest."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g)
    order = perm[torch.argsort(y[perm], stable=True)]
    classes, counts = torch.unique(y, return_counts=True)
    quota = torch.floor(counts.double() * k / len(y)).long()
    short = k - int(quota.sum())
    if short > 0:  # largest remainders first
        rem = counts.double() * k / len(y) - quota
        quota[torch.argsort(rem, descending=True)[:short]] += 1
    take, start = [], 0
    for c, n, q in zip(classes.tolist(), counts.tolist(), quota.tolist()):
        take.append(order[start : start + q])
        start += n
    chosen = torch.cat(take).sort().values
    mask = torch.ones(len(y), dtype=torch.bool)
    mask[chosen] = False
    return chosen, mask.nonzero().squeeze(1)


def flip_labels(y: torch.Tensor, fraction: float, num_classes: int, seed: int = SPLIT_SEED) -> torch.Tensor:
    """Flip `fraction` of labels to a different class, chosen uniformly."""
    g = torch.Generator().manual_seed(seed + 1)
    n = round(fraction * len(y))
    idx = torch.randperm(len(y), generator=g)[:n]
    shift = torch.randint(1, num_classes, (n,), generator=g)
    out = y.clone()
    out[idx] = (y[idx] + shift) % num_classes
    return out


def _split_off(x, y: torch.Tensor, fraction: float):
    held, kept = stratified_take(y, round(fraction * len(y)))
    return _index(x, kept), y[kept], _index(x, held), y[held]


def _index(x, idx: torch.Tensor):
    if isinstance(x, list):
        return [x[i] for i in idx.tolist()]
    if isinstance(x, FileImages):
        return x.subset(idx)
    return x[idx]


def load_data(
    name: str,
    *,
    tokenizer: Callable | None = None,
    max_length: int = 64,
    val_fraction: float = 0.1,
    train_limit: int | None = None,
    eval_limit: int | None = None,
    val_limit: int | None = None,
    label_noise: float = 0.0,
) -> Data:
    raw: RawData = DATASETS.get(name)()
    tx, ty, vx, vy = _split_off(raw.train_x, raw.train_y, val_fraction)
    test_x, test_y = raw.test_x, raw.test_y
    eval_limit = eval_limit or train_limit
    if train_limit and train_limit < len(ty):
        idx, _ = stratified_take(ty, train_limit)
        tx, ty = _index(tx, idx), ty[idx]
    val_limit = val_limit or eval_limit
    if val_limit and val_limit < len(vy):
        idx, _ = stratified_take(vy, val_limit)
        vx, vy = _index(vx, idx), vy[idx]
    if eval_limit:
        if eval_limit < len(test_y):
            idx, _ = stratified_take(test_y, eval_limit)
            test_x, test_y = _index(test_x, idx), test_y[idx]
    if label_noise:
        ty = flip_labels(ty, label_noise, raw.num_classes)

    if raw.kind == "text":
        if tokenizer is None:
            raise BenchError(f"dataset {name} is text; pair it with a text model (see `python -m bench list models`)")

        def split(x, y):
            ids, mask = tokenizer(x, max_length)
            return Split(ids, y, mask)

        return Data(name, "text", raw.num_classes, split(tx, ty), split(vx, vy), split(test_x, test_y))

    if tokenizer is not None:
        raise BenchError(f"dataset {name} is images; pair it with an image model (see `python -m bench list models`)")
    first = tx[torch.arange(min(len(ty), 2048))]
    f = first.float() / 255
    mean = tuple(f.mean(dim=(0, 2, 3)).tolist())
    std = tuple(f.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist())
    c, s = first.shape[1], first.shape[2]
    return Data(name, "image", raw.num_classes, Split(tx, ty), Split(vx, vy), Split(test_x, test_y), c, s, mean, std, raw.flip)


def carve_test(kind: str, num_classes: int, x, y: torch.Tensor, fraction: float = 0.2) -> RawData:
    """Sources with no official test split: hold out a stratified 20% with a fixed seed."""
    tx, ty, sx, sy = _split_off(x, y, fraction)
    return RawData(kind, num_classes, tx, ty, sx, sy)
