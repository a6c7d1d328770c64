"""Datasets: real loaders plus offline sources, each split into train / validation / test.

A dataset is a function registered with `@register_dataset(name)` that returns a
`RawData` (full train and test). `load_data` then carves validation from train
with a fixed seed, applies the size limits (stratified) and label noise, and,
for text, tokenizes with the model's tokenizer.
"""
from __future__ import annotations

import gzip
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from bench.errors import BenchError
from bench.fetch import missing
from bench.paths import data_dir
from bench.registry import register_dataset

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
    """Images that stay on disk (ImageNet-style folders), decoded per batch by a thread pool."""

    def __init__(self, paths: Sequence[str], size: int):
        self.paths, self.size = list(paths), size

    def __len__(self):
        return len(self.paths)

    def subset(self, idx):
        return FileImages([self.paths[i] for i in idx.tolist()], self.size)

    def _decode(self, path: str) -> torch.Tensor:
        from PIL import Image

        img = Image.open(path).convert("RGB")
        s = self.size
        w, h = img.size
        scale = s * 1.14 / min(w, h)  # resize then centre-crop, as ImageNet evaluation does
        img = img.resize((max(s, round(w * scale)), max(s, round(h * scale))))
        w, h = img.size
        left, top = (w - s) // 2, (h - s) // 2
        arr = np.asarray(img.crop((left, top, left + s, top + s)), dtype=np.uint8)
        return torch.from_numpy(arr).permute(2, 0, 1)

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            return torch.stack(list(pool.map(self._decode, [self.paths[i] for i in idx.tolist()])))


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
    label_noise: float = 0.0,
) -> Data:
    from bench.registry import DATASETS

    raw: RawData = DATASETS.get(name)()
    tx, ty, vx, vy = _split_off(raw.train_x, raw.train_y, val_fraction)
    test_x, test_y = raw.test_x, raw.test_y
    eval_limit = eval_limit or train_limit
    if train_limit and train_limit < len(ty):
        idx, _ = stratified_take(ty, train_limit)
        tx, ty = _index(tx, idx), ty[idx]
    if eval_limit:
        if eval_limit < len(vy):
            idx, _ = stratified_take(vy, eval_limit)
            vx, vy = _index(vx, idx), vy[idx]
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


def _carve_test(kind: str, num_classes: int, x, y: torch.Tensor, fraction: float = 0.2) -> RawData:
    """Sources with no official test split: hold out a stratified 20% with a fixed seed."""
    tx, ty, sx, sy = _split_off(x, y, fraction)
    return RawData(kind, num_classes, tx, ty, sx, sy)


# ---------------------------------------------------------------- image datasets


def _torchvision(cls_name: str, root: Path, fetch_name: str | None, **kw):
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    try:
        return cls(str(root), download=False, **kw)
    except RuntimeError:
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


@register_dataset("mnist5k")
def mnist5k() -> RawData:
    path = data_dir() / "mnist5k" / "mnist_5k.csv.gz"
    if not path.exists():
        raise missing("mnist5k")
    with gzip.open(path, "rt") as f:
        arr = np.loadtxt(f, delimiter=",", dtype=np.int64)
    x = torch.as_tensor(arr[:, :784], dtype=torch.uint8).view(-1, 1, 28, 28)
    return _carve_test("image", 10, x, torch.as_tensor(arr[:, 784]))


@register_dataset("digits")
def digits() -> RawData:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.as_tensor(d.images * 255 / 16, dtype=torch.float32).round().to(torch.uint8).unsqueeze(1)
    return _carve_test("image", 10, x, torch.as_tensor(d.target).long())


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


# ---------------------------------------------------------------- text datasets


@register_dataset("mr")
def mr() -> RawData:
    """Rotten Tomatoes sentences (Hutto & Gilbert 2014): sign of the mean human score, neutral dropped."""
    path = data_dir() / "mr" / "movieReviewSnippets_GroundTruth.txt"
    if not path.exists():
        raise missing("mr")
    texts, labels = [], []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        score = float(parts[1])
        if score != 0:
            texts.append(parts[2].strip())
            labels.append(int(score > 0))
    return _carve_test("text", 2, texts, torch.tensor(labels))


GLUE_TASKS = {  # task: (text fields, classes, evaluation split)
    "sst2": (("sentence",), 2, "validation"),
    "cola": (("sentence",), 2, "validation"),
    "mrpc": (("sentence1", "sentence2"), 2, "validation"),
    "qqp": (("question1", "question2"), 2, "validation"),
    "qnli": (("question", "sentence"), 2, "validation"),
    "rte": (("sentence1", "sentence2"), 2, "validation"),
    "mnli": (("premise", "hypothesis"), 3, "validation_matched"),
}


def _glue(task: str) -> Callable[[], RawData]:
    fields, classes, eval_split = GLUE_TASKS[task]

    def load() -> RawData:
        """GLUE from the Hugging Face hub; its labelled validation split serves as test."""
        try:
            import datasets

            ds = datasets.load_dataset("nyu-mll/glue", task, cache_dir=str(data_dir() / "hf"))
        except Exception as e:
            raise BenchError(
                f"could not load GLUE {task} from the Hugging Face hub ({type(e).__name__}); it needs the network. "
                "Offline, use the mr sentences"
            ) from None

        def texts(split):
            cols = [split[f] for f in fields]
            return list(cols[0]) if len(cols) == 1 else list(zip(*cols))

        tr, te = ds["train"], ds[eval_split]
        return RawData("text", classes, texts(tr), torch.tensor(tr["label"]), texts(te), torch.tensor(te["label"]))

    return load


for _task in GLUE_TASKS:
    register_dataset(f"glue_{_task}")(_glue(_task))
