"""The GPU device kit (results/gpu/): its pinned wheel list, the GPU suite it runs, the device
script, and the image-like venv of its CPU check. Fast and offline: the kit's build (downloads)
and its CPU check run in `nox -s devicekit`, not here."""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "results" / "gpu"
SCRIPT = GPU / "device_run.sh"
# Every file device_run.sh leaves in $OUT for the device tool to bring back (at most 8 come back).
REPORTED = ("run.log", "summary.md", "summary.csv", "runs.csv", "plots.tar", "mlflow.db", "reference.json")


@pytest.fixture(scope="module")
def kit():
    spec = importlib.util.spec_from_file_location("devicekit", GPU / "devicekit.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------- the pinned wheels


def test_every_device_requirement_is_pinned_once(kit):
    lines = [x.split("#", 1)[0].strip() for x in (GPU / "requirements-device.txt").read_text().splitlines()]
    specs = [x for x in lines if x]
    assert specs and all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!_-]+", s) for s in specs), specs
    pins = kit.pins()
    assert len(pins) == len(specs)
    names = {canonicalize_name(n) for n, _ in pins}
    assert {"mlflow-skinny", "sqlalchemy", "alembic"} <= names  # what opens the SQLite store
    # the kit carries what the image lacks, and shadows an image package only as a declared floor
    assert names & {canonicalize_name(n) for n in kit.IMAGE} <= kit.SHADOWS, names & set(kit.IMAGE)


def test_unpinned_or_doubled_requirement_is_refused(kit, tmp_path, monkeypatch):
    for text, why in (("mlflow-skinny>=3\n", "not NAME==VERSION"), ("a==1\nA==2\n", "twice")):
        (tmp_path / "r.txt").write_text(text)
        monkeypatch.setattr(kit, "REQS", tmp_path / "r.txt")
        with pytest.raises(kit.KitError, match=why):
            kit.pins()


def test_cp312_tags_admit_the_image_and_refuse_others(kit):
    ok = ["x-1-py3-none-any.whl", "x-1-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
          "x-1-cp311-abi3-manylinux_2_34_x86_64.whl"]
    bad = ["x-1-cp311-cp311-manylinux_2_17_x86_64.whl", "x-1-cp312-cp312-manylinux_2_17_aarch64.whl",
           "x-1-cp312-cp312-musllinux_1_2_x86_64.whl", "x-1-cp312-cp312-manylinux_2_40_x86_64.whl"]
    from packaging.utils import parse_wheel_filename

    assert all(set(parse_wheel_filename(w)[3]) & kit.CP312_TAGS for w in ok)
    assert not any(set(parse_wheel_filename(w)[3]) & kit.CP312_TAGS for w in bad)


# ---------------------------------------------------------------- the suites


def test_gpu_first_is_resnet18_on_fashion_mnist_batch_512_three_seeds():
    from bench.suite import load_suite

    raw = yaml.safe_load((ROOT / "results" / "suites" / "gpu_first.yaml").read_text())
    assert raw["defaults"].get("device", "auto") != "cpu"
    suite = load_suite("gpu_first")  # validates names, values, refusals (device auto: this machine's)
    cells = suite.cells()
    assert {(c.model, c.dataset, c.batch_size) for c in cells} == {("resnet18", "fashion_mnist", 512)}
    assert {c.method for c in cells} >= {"uniform", "random_subset"} and {c.seed for c in cells} == {0, 1, 2}
    assert "H200" in suite.expected_runtime and "480" in suite.expected_runtime


def test_gpu_first_dry_run_on_cpu():
    proc = subprocess.run([sys.executable, "-m", "bench", "suite", "gpu_first", "--dry-run"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "15 cells" in proc.stdout


def test_check_suite_is_one_tiny_cpu_cell(kit):
    from bench.suite import load_suite

    cells = load_suite(kit.CHECK_SUITE).cells()
    assert len(cells) == 1 and cells[0].device == "cpu" and cells[0].train_limit <= 1024 and cells[0].epochs == 1


# ---------------------------------------------------------------- the device script


def test_device_script_parses_and_its_header_names_what_it_reports(kit):
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    text = SCRIPT.read_text()
    header = "\n".join(x for x in text.splitlines() if x.startswith("#"))
    body = "\n".join(x for x in text.splitlines() if not x.lstrip().startswith("#"))
    assert 'carry=[".devicekit"]' in header and 'command="bash results/gpu/device_run.sh"' in header
    for f in REPORTED:
        assert re.search(rf"^#\s+{re.escape(f)}\s", header, re.M), f"the header does not name {f}"
        assert f in body, f"the script never writes {f}"
    written = set(re.findall(r"\$OUT/([A-Za-z0-9_.-]+)", body)) | {"summary.md", "summary.csv", "runs.csv"}
    assert written <= set(REPORTED), written - set(REPORTED)
    assert len(REPORTED) <= 8  # the device tool brings back 8 files at most
    assert set(kit.CHECK_FILES) <= set(REPORTED)


def test_device_script_without_a_kit_fails_in_one_line(tmp_path):
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "KIT": str(tmp_path / "none"), "OUT": str(tmp_path / "out")})
    assert proc.returncode == 1
    assert proc.stdout.strip().splitlines()[-1].startswith("device_run FAILED: no wheels in")
    assert (tmp_path / "out" / "run.log").exists()


# ---------------------------------------------------------------- the image-like venv


def _dist(site: Path, name: str, files: list[str]) -> None:
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    for f in files:
        (site / f).parent.mkdir(parents=True, exist_ok=True)
        (site / f).write_text("")
    (info / "RECORD").write_text("".join(f"{f},,\n" for f in [*files, f"{info.name}/METADATA", f"{info.name}/RECORD"]))


def test_image_venv_links_only_the_image_packages(kit, tmp_path):
    site, dest = tmp_path / "site", tmp_path / "venv-site"
    _dist(site, "numpy", ["numpy/__init__.py", "numpy/core.py", "ns/a/__init__.py"])
    _dist(site, "mlflow", ["mlflow/__init__.py", "ns/b/__init__.py", "../../../bin/mlflow"])
    _dist(site, "httpx2", ["httpx2/__init__.py"])  # stands in for the image's httpx
    dest.mkdir()
    kit._link_tree(site, dest, kit._owners(site))
    assert (dest / "numpy").is_symlink() and (dest / "httpx2").is_symlink()
    assert (dest / "numpy-1.0.dist-info").is_symlink()
    assert not (dest / "mlflow").exists() and not (dest / "mlflow-1.0.dist-info").exists()
    # a namespace folder shared with a package the image lacks: only the image's part is seen
    assert not (dest / "ns").is_symlink() and (dest / "ns" / "a").is_symlink() and not (dest / "ns" / "b").exists()
