"""The device kit: what a lent GPU machine (no network) lacks to run `python -m bench suite`.

    python results/gpu/devicekit.py build   # .devicekit/wheels (cp312 manylinux x86_64) + .devicekit/data; size check
    python results/gpu/devicekit.py check   # the CPU check: the kit's wheels in an image-like venv, one-cell suite
    python3 results/gpu/devicekit.py deps /tmp/site   # (device_run.sh) the kit's needs against the image's

Both run through `nox -s devicekit [-- --no-check]` with the project's .venv python. The GPU
image (/work/.library/device/KINDS.md: Python 3.12, torch, timm, transformers, pandas, ...) lacks
mlflow and what mlflow needs to open a SQLite store; results/gpu/requirements-device.txt pins
those wheels, and results/gpu/device_run.sh installs them there with `pip --target`.

The check mimics the image here without reinstalling torch: a fresh `python -m venv` whose
site-packages holds symbolic links to the files of the project venv's distributions that the
image also has (IMAGE below), and nothing else. The kit's wheels are for cp312; this machine's
Python is another, so the check installs the same pinned versions built for this Python
(pure-Python wheels are the same files) from .nox/devicekit/wheels-host, after checking by file
name that every pin has one cp312-compatible wheel in the kit. It then runs device_run.sh itself
on the suite devicekit_check (one tiny CPU cell) with a fresh SQLite store, cache and results
folder under .nox/devicekit/check, and fails with one line if anything is missing.
"""
from __future__ import annotations

import argparse
import gzip
import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from packaging import tags
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
REQS = ROOT / "results" / "gpu" / "requirements-device.txt"
KIT = ROOT / ".devicekit"
WORK = ROOT / ".nox" / "devicekit"  # ignored; never travels (only .devicekit is carried)
LIMIT = 64 * 2**20  # what one device call may carry: the working tree and the carried paths together
FMNIST = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CHECK_SUITE = "devicekit_check"
# What device_run.sh leaves in $OUT for the check's suite (its own run.log and plots.tar included).
CHECK_FILES = ("run.log", "summary.md", "summary.csv", "runs.csv", "plots.tar", "mlflow.db")

# The GPU image's Python packages (KINDS.md, "Python packages already there", read 2026-11-17).
IMAGE = """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin
jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite
lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict
multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas
nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand
nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink
nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum
opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker
prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks
pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy
seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels
sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers
toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer
typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp""".split()
# Pinned in the kit although the image has them: a version floor for the kit's wheels (see
# requirements-device.txt). The image-like venv keeps its own copy; the kit's shadows it.
SHADOWS = {"typing-extensions"}
# Distributions of this venv that stand in for an image package under another name (same role, own fork).
STAND_INS = {"httpx2": "httpx", "httpcore2": "httpcore", "py-cpuinfo2": "py-cpuinfo"}

# The image: CPython 3.12 on x86-64 Linux with glibc 2.39 (Ubuntu 24.04).
CP312_PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in range(39, 4, -1)] + \
    ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]
CP312_TAGS = set(tags.cpython_tags((3, 12), abis=["cp312", "abi3", "none"], platforms=CP312_PLATFORMS)) | \
    set(tags.compatible_tags((3, 12), "cp312", platforms=CP312_PLATFORMS))
# Oldest glibc first: pip then prefers the wheel that asks least of the image's glibc.
PIP_PLATFORM_ARGS = ["--platform", "manylinux1_x86_64", "--platform", "manylinux2014_x86_64"] + \
    [a for n in (17, 24, 27, 28, 31, 34, 35, 39) for a in ("--platform", f"manylinux_2_{n}_x86_64")]


# Every store call of bench/tracking.py that the one-cell suite may not make (resume, artifacts,
# failure, kill), against a scratch store, in the image-like venv with the kit's wheels.
STORE_API = """
from bench import tracking
run = tracking.CellRun("kitcheck", name="kitcheck")
run.params({"a": 1}); run.tags({"cell_status": "running", "error": "x"}); run.metrics({"loss": 1.0}, step=0)
run.artifact("kitcheck.json", {"a": 1})
assert run.logged_steps("loss") == {0} and run.logged_metrics() == {"loss"}
again = tracking.CellRun("kitcheck", run_id=run.run_id)  # a resume
again.diverged(1, 2, "why"); tracking.mark_killed(run.run_id, "killed")
done = tracking.CellRun("kitcheck2"); done.finish()
assert list(tracking.finished_runs(["kitcheck2"])) == ["kitcheck2"] and len(tracking.runs_for("kitcheck")) == 1
print("store API ok: create, params, tags, metrics, artifact, resume, diverged, killed, finished, search")
"""


class KitError(Exception):
    pass


def log(msg: str) -> None:
    print(f"devicekit: {msg}", flush=True)


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def pins() -> list[tuple[str, str]]:
    """(name, version) of every line of requirements-device.txt; anything but NAME==VERSION is an error."""
    out = []
    for i, line in enumerate(REQS.read_text().splitlines(), 1):
        spec = line.split("#", 1)[0].strip()
        if not spec:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)", spec)
        if not m:
            raise KitError(f"{REQS.name} line {i}: {spec!r} is not NAME==VERSION; pin every wheel exactly")
        out.append((m.group(1), str(Version(m.group(2)))))  # as wheel file names spell it
    names = [canonicalize_name(n) for n, _ in out]
    if len(set(names)) != len(names):
        raise KitError(f"{REQS.name} names a package twice; keep one version of each (two stop the install)")
    return out


def _wheels(folder: Path) -> dict[str, tuple[str, Path, frozenset]]:
    """canonical name -> (version, file, tags) of the wheels in a folder."""
    out = {}
    for p in sorted(folder.glob("*.whl")) if folder.exists() else []:
        name, version, _, wtags = parse_wheel_filename(p.name)
        if name in out:
            raise KitError(f"{folder} holds two wheels of {name}: remove one")
        out[name] = (str(version), p, frozenset(wtags))
    return out


def fill(folder: Path, want: list[tuple[str, str]], compatible: set, pip_args: list[str], reuse: Path | None = None):
    """Make `folder` hold exactly one wheel per pin, compatible with `compatible`: keep those there,
    copy fitting ones from `reuse`, download the rest in one pip call; remove anything else."""
    folder.mkdir(parents=True, exist_ok=True)
    have = _wheels(folder)
    wanted = {canonicalize_name(n): v for n, v in want}
    for name, (version, path, wtags) in have.items():
        if wanted.get(name) != version or not (wtags & compatible):
            path.unlink()
    have = _wheels(folder)
    missing = [(n, v) for n, v in want if canonicalize_name(n) not in have]
    if reuse is not None:
        for name, (version, path, wtags) in _wheels(reuse).items():
            if (name, version) in {(canonicalize_name(n), v) for n, v in missing} and wtags & compatible:
                shutil.copy2(path, folder / path.name)
        have = _wheels(folder)
        missing = [(n, v) for n, v in missing if canonicalize_name(n) not in have]
    if missing:
        log(f"downloading {len(missing)} wheel(s) into {folder.relative_to(ROOT)}")
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
               "--only-binary=:all:", *pip_args, "-d", str(folder), *(f"{n}=={v}" for n, v in missing)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            lines = [x for x in (proc.stderr or proc.stdout).splitlines() if x.strip() and "is ignored" not in x]
            raise KitError(f"pip download failed: {lines[-1] if lines else 'no output'}")
    have = _wheels(folder)
    for name, version in want:
        got = have.get(canonicalize_name(name))
        if got is None or got[0] != version:
            raise KitError(f"no wheel of {name}=={version} in {folder}")
        if not got[2] & compatible:
            where = "cp312 manylinux x86_64" if compatible is CP312_TAGS else "this Python"
            raise KitError(f"{got[1].name} does not install on {where}")
    return have


def verify_kit_wheels(want: list[tuple[str, str]]) -> dict:
    """By file name: every pin has exactly one wheel in the kit, of that version, installable on cp312 x86-64."""
    have = _wheels(KIT / "wheels")
    problems = []
    for name, version in want:
        got = have.get(canonicalize_name(name))
        if got is None:
            problems.append(f"{name}=={version} missing")
        elif got[0] != version:
            problems.append(f"{got[1].name} is not {version}")
        elif not got[2] & CP312_TAGS:
            problems.append(f"{got[1].name} is not for cp312 manylinux x86_64")
    extra = set(have) - {canonicalize_name(n) for n, _ in want}
    if extra:
        problems.append(f"not pinned: {', '.join(sorted(extra))}")
    if problems:
        raise KitError(f"the kit's wheels do not match {REQS.name}: {'; '.join(problems)} (run `nox -s devicekit`)")
    return have


# ---------------------------------------------------------------- data

def _gz_ok(path: Path, magic: int) -> bool:
    try:
        with gzip.open(path) as f:
            return int.from_bytes(f.read(4), "big") == magic
    except OSError:
        return False


def fill_data() -> str:
    """The Fashion-MNIST IDX .gz files of Debian's dataset-fashion-mnist (docs/DATA.md) in .devicekit/data/."""
    dest = KIT / "data" / "fashion-mnist"
    magic = {f: 0x803 if "images" in f else 0x801 for f in FMNIST}
    if all(_gz_ok(dest / f"{f}.gz", magic[f]) for f in FMNIST):
        return "kept"
    dest.mkdir(parents=True, exist_ok=True)
    src = Path("/usr/share/datasets/fashion-mnist")
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        how = str(src)
        if not all((src / f"{f}.gz").exists() for f in FMNIST):
            how = "apt-get download dataset-fashion-mnist"
            proc = subprocess.run(["apt-get", "download", "dataset-fashion-mnist"], cwd=tmp, capture_output=True,
                                  text=True)
            debs = list(tmp.glob("*.deb"))
            if proc.returncode or not debs:
                cache = Path(os.environ.get("BENCH_CACHE", ROOT / ".cache")) / "data" / "FashionMNIST" / "raw"
                if not all((cache / f).exists() for f in FMNIST):
                    last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                    raise KitError(f"cannot get Fashion-MNIST: `apt-get download dataset-fashion-mnist` failed "
                                   f"({last[0]}) and {cache} lacks it (`nox -s fetch`)")
                for f in FMNIST:  # the same bytes once gunzipped
                    with open(cache / f, "rb") as fin, gzip.GzipFile(dest / f"{f}.gz", "wb", mtime=0) as fout:
                        shutil.copyfileobj(fin, fout)
                return f"gzipped from {cache}"
            subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(tmp / "x")], check=True)
            src = tmp / "x" / "usr/share/datasets/fashion-mnist"
        for f in FMNIST:
            shutil.copy2(src / f"{f}.gz", dest / f"{f}.gz")
    bad = [f for f in FMNIST if not _gz_ok(dest / f"{f}.gz", magic[f])]
    if bad:
        raise KitError(f"Fashion-MNIST files from {how} are not IDX: {', '.join(bad)}")
    return how


# ---------------------------------------------------------------- size

def tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def repo_bytes() -> int:
    """What travels besides the carried kit: tracked and untracked-not-ignored files (and shared/)."""
    out = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                         check=True).stdout.decode().split("\0")
    total = sum((ROOT / p).stat().st_size for p in out if p and (ROOT / p).is_file() and not (ROOT / p).is_symlink())
    if (ROOT / "shared").is_dir():
        total += tree_bytes(ROOT / "shared")
    return total


def build() -> None:
    want = pins()
    fill(KIT / "wheels", want, CP312_TAGS, ["--python-version", "3.12", "--implementation", "cp", "--abi", "cp312",
                                             *PIP_PLATFORM_ARGS])
    have = verify_kit_wheels(want)
    log(f"wheels: {len(have)} pinned in {REQS.relative_to(ROOT)}, each with one cp312 manylinux x86_64 wheel")
    how = fill_data()
    log(f"data: Fashion-MNIST ({how})")
    wheels, data, repo = tree_bytes(KIT / "wheels"), tree_bytes(KIT / "data"), repo_bytes()
    kit = tree_bytes(KIT)
    room = LIMIT - repo
    log(f"kit size: {mib(kit)} (wheels {mib(wheels)}, data {mib(data)}); repo {mib(repo)}; "
        f"together {mib(kit + repo)} of the {mib(LIMIT)} a device call carries")
    if kit > room:
        raise KitError(f"the kit ({mib(kit)}) is over the {mib(room)} left beside the repo ({mib(repo)}) "
                       f"in one device call: drop wheels from {REQS.name}")


# ---------------------------------------------------------------- the image-like venv

def _owners(site: Path) -> dict[tuple[str, ...], set[bool]]:
    """Every file of every distribution in `site` -> {whether it belongs to an image package}."""
    image = {canonicalize_name(n) for n in IMAGE} | set(STAND_INS)
    files: dict[tuple[str, ...], set[bool]] = {}
    for dist in md.distributions(path=[str(site)]):
        allowed = canonicalize_name(dist.metadata["Name"]) in image
        for f in dist.files or []:
            parts = Path(f).parts
            if not parts or parts[0] == "..":
                continue  # scripts and data outside site-packages
            files.setdefault(parts, set()).add(allowed)
    return files


def _link_tree(src: Path, dest: Path, files: dict[tuple[str, ...], set[bool]]) -> int:
    """Link into `dest` what image packages own in `src`: a whole folder when only they own files
    in it, else its own files one by one (namespace folders shared with other distributions)."""
    tree: dict = {}
    for parts, owners in files.items():
        node = tree
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                break  # a file of one distribution is a folder of another: leave it out
        else:
            leaf = node.setdefault(parts[-1], set())
            if isinstance(leaf, set):
                leaf.update(owners)

    def flags(node) -> set[bool]:
        if isinstance(node, set):
            return node
        return set().union(*(flags(c) for c in node.values()))

    n = 0

    def walk(node: dict, rel: Path):
        nonlocal n
        for name, child in node.items():
            f = flags(child)
            if True not in f:
                continue
            if f == {True} and (src / rel / name).exists():
                (dest / rel).mkdir(parents=True, exist_ok=True)
                (dest / rel / name).symlink_to(src / rel / name)
                n += 1
            elif isinstance(child, dict):
                walk(child, rel / name)
            elif (src / rel / name).exists():  # a file owned by an image package and another
                (dest / rel).mkdir(parents=True, exist_ok=True)
                (dest / rel / name).symlink_to(src / rel / name)
                n += 1

    walk(tree, Path())
    return n


def image_venv(path: Path) -> Path:
    """A fresh venv holding only the image's packages (as links into the project venv)."""
    import sysconfig

    site = Path(sysconfig.get_paths()["purelib"])  # this interpreter is the project venv's
    if path.exists():
        shutil.rmtree(path)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(path)], check=True)
    vsite = next(path.glob("lib/python*/site-packages"))
    n = _link_tree(site, vsite, _owners(site))
    log(f"image-like venv {path.relative_to(ROOT)}: {n} links to the image's packages in {site}")
    return path / "bin" / "python"


def check() -> None:
    t0 = time.time()
    want = pins()
    verify_kit_wheels(want)
    if not all((KIT / "data" / "fashion-mnist" / f"{f}.gz").exists() for f in FMNIST):
        raise KitError("the kit has no Fashion-MNIST data: run `nox -s devicekit`")
    host = fill(WORK / "wheels-host", want, set(tags.sys_tags()), [], reuse=KIT / "wheels")
    run = WORK / "check"
    if run.exists():
        shutil.rmtree(run)
    py = image_venv(run / "venv")
    code = "import importlib.metadata as m\nfor d in m.distributions(): print(d.metadata['Name'])"
    listed = subprocess.run([str(py), "-I", "-c", code], capture_output=True, text=True, check=True).stdout.split()
    kit_names = ({canonicalize_name(n) for n, _ in want} - SHADOWS) | {"mlflow", "mlflow-tracing", "bench"}
    leak = kit_names & {canonicalize_name(n) for n in listed}
    if leak:
        raise KitError(f"the image-like venv already has {', '.join(sorted(leak))}: it must see only the kit's")
    (run / "results" / "suites").mkdir(parents=True)
    shutil.copy2(ROOT / "results" / "suites" / f"{CHECK_SUITE}.yaml", run / "results" / "suites")
    (run / "out").mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "CONDA_PREFIX")
           and not k.startswith(("MLFLOW_", "BENCH_", "NOX_"))}
    env.update({
        "PATH": f"{py.parent}:/usr/local/bin:/usr/bin:/bin",  # python3 is the image-like venv's
        "PYTHONNOUSERSITE": "1",
        "KIT": str(KIT), "KIT_WHEELS": str(WORK / "wheels-host"), "SITE": str(run / "site"),
        "OUT": str(run / "out"), "BENCH_CACHE": str(run / "cache"), "BENCH_RESULTS": str(run / "results"),
        "BENCH_CHECKPOINTS": str(run / "checkpoints"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{run / 'mlflow.db'}",
        "RESUME_STORE": "", "REFERENCE_EPOCHS": "0", "BENCH_DEVICE_BUDGET": "240", "BENCH_DEVICE_CPU": "1",
    })
    log(f"running results/gpu/device_run.sh {CHECK_SUITE} in it ({len(host)} wheels for this Python, "
        f"the same pins as the kit's)")
    proc = subprocess.run(["bash", str(ROOT / "results" / "gpu" / "device_run.sh"), CHECK_SUITE], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    (run / "device_run.log").write_text(out)
    for line in out.splitlines():
        print(f"  | {line}")
    if proc.returncode:
        fail = [x for x in out.splitlines() if "FAILED" in x or "Error" in x or "error" in x]
        last = fail[-1] if fail else (out.strip().splitlines() or ["no output"])[-1]
        raise KitError(f"device_run.sh exited {proc.returncode}: {last.strip()} "
                       f"(log: {(run / 'device_run.log').relative_to(ROOT)})")
    if "store ok" not in out:
        raise KitError("device_run.sh did not print 'store ok'")
    missing = [f for f in CHECK_FILES if not (run / "out" / f).is_file()]
    if missing:
        raise KitError(f"device_run.sh left no {', '.join(missing)} in $OUT")
    import sqlite3

    with sqlite3.connect(run / "out" / "mlflow.db") as db:
        runs = dict(db.execute("select name, status from runs"))
    if not any(n.startswith("tiny_cnn-fashion_mnist-uniform") for n in runs) or set(runs.values()) != {"FINISHED"}:
        raise KitError(f"the check's store holds runs {runs}, not the cell's run, FINISHED")
    proc = subprocess.run([str(py), "-c", STORE_API], cwd=ROOT, capture_output=True, text=True,
                          env={**env, "PYTHONPATH": f"{run / 'site'}:{ROOT}",
                               "MLFLOW_TRACKING_URI": f"sqlite:///{run / 'api.db'}"})
    if proc.returncode or "store API ok" not in proc.stdout:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
        raise KitError(f"the harness's store calls fail with the kit's mlflow: {lines[-1]}")
    log(proc.stdout.strip())
    log(f"check passed in {time.time() - t0:.0f} s: the kit's wheels beside the image's packages ran "
        f"{CHECK_SUITE} and its tables ({', '.join(CHECK_FILES)})")


def deps(site: str) -> None:
    """What the kit's wheels in `site` require, set against the kit and the running Python's packages
    (on the GPU machine: the image's). Prints; never fails: the store check is the test."""
    from packaging.requirements import Requirement

    kit = {canonicalize_name(d.metadata["Name"]): d for d in md.distributions(path=[site])}
    unmet, absent = [], set()
    for name, d in sorted(kit.items()):
        for r in d.requires or []:
            req = Requirement(r)
            if req.marker and not req.marker.evaluate({"extra": ""}):
                continue
            dep = canonicalize_name(req.name)
            try:
                version = kit[dep].version if dep in kit else md.version(req.name)
            except md.PackageNotFoundError:
                absent.add(dep)
                continue
            if req.specifier and not req.specifier.contains(version, prereleases=True):
                unmet.append(f"{name} needs {req}, found {version}")
    for line in unmet:
        print(f"kit requirement NOT met: {line}")
    print(f"kit requirements: {len(kit)} wheels in {site}; "
          + ("every requirement found is met" if not unmet else f"{len(unmet)} not met (above)")
          + (f"; not carried, as the harness never imports them: {', '.join(sorted(absent))}" if absent else ""))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["build", "check", "deps"])
    p.add_argument("site", nargs="?", help="deps: the folder the kit's wheels were installed into")
    a = p.parse_args(argv)
    if a.what == "deps":
        deps(a.site or "/tmp/site")
        return 0
    try:
        build() if a.what == "build" else check()
    except KitError as e:
        print(f"devicekit {a.what} FAILED: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
