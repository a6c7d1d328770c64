"""Plugins: datasets and models found by folder, registered on the fly; no import cycle; method hook errors."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from bench.data import RawData, load_data, register_dataset
from bench.errors import BenchError
from bench import hooks
from bench.hooks import MethodError
from bench.method import Batch, Method
from fakes import FakeContext
from bench.models import Classifier, Exit, InputSpec, create_model, register_model, tokenizer_for
from bench.registry import DATASETS, METHODS, MODELS, list_datasets, list_models

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "methods", "baselines")


# ---------------------------------------------------------------- no import cycle


def project_modules() -> dict[str, Path]:
    """Dotted name -> file of every module in the project's packages."""
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> project modules it imports, at any depth of its code (lazy imports count too)."""
    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets.add(base)
                targets |= {f"{base}.{a.name}" for a in node.names}  # `from pkg import module`
        deps = set()
        for t in targets:  # importing a.b.c runs a, a.b and a.b.c
            parts = t.split(".")
            deps |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & set(mods)
        # a module's own parent packages are importing it already (a package __init__ that
        # imports its submodules): that edge is how packages work, not a cycle
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        graph[name] = deps - {name} - ancestors
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_graph_sees_the_imports_that_made_the_old_loop():
    graph = import_graph(project_modules())
    assert "bench.registry" in graph["bench.data"] and "bench.models" in graph["bench.cell"]
    assert {"bench.data", "bench.models"}.isdisjoint(graph["bench.registry"])


def test_project_has_no_import_cycle():
    cycle = find_cycle(import_graph(project_modules()))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


FORKING_IMPORTER = r"""
import importlib, os, sys, traceback
import numpy, pandas, scipy.stats, torch, yaml  # third-party only: no project module is loaded before the fork
failed = []
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:  # a child: the project module is the first one of the project it imports
        try:
            importlib.import_module(name)
            os._exit(0)
        except BaseException:
            sys.stderr.write(name + ": " + traceback.format_exc().strip().splitlines()[-1] + "\n")
            os._exit(1)
    if os.waitpid(pid, 0)[1]:
        failed.append(name)
sys.exit(1 if failed else 0)
"""


def test_every_bench_module_imports_alone():
    """Each module first, in a process where no project module is loaded yet: an import loop shows as an
    ImportError. One interpreter loads the heavy third-party libraries once and forks a child per module."""
    names = [n for n in project_modules() if n.startswith("bench") and n != "bench.__main__"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", FORKING_IMPORTER, *names], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr


def test_registries_fill_themselves_in_a_fresh_interpreter():
    """No priming import: the first lookup discovers bench/datasets/ and bench/models/."""
    code = ("from bench.registry import list_datasets, list_models; import sys; "
            "assert 'bench.data' not in sys.modules and 'bench.models' not in sys.modules; "
            "assert {'tiny_cnn', 'tiny_bert'} <= set(list_models()) and {'mr', 'digits'} <= set(list_datasets())")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------- a dataset and a model registered on the fly


@pytest.fixture
def scratch_registries():
    """Entries registered inside a test are forgotten after it."""
    list_datasets(), list_models()  # discover first, so the snapshot holds the plugins
    saved = {r: dict(r._entries) for r in (DATASETS, MODELS)}
    yield
    for r, entries in saved.items():
        r._entries.clear()
        r._entries.update(entries)


def _register_blobs():
    @register_dataset("blobs")
    def blobs() -> RawData:
        """4 classes of 8x8 grey images, a bright square in a class-dependent corner."""
        g = torch.Generator().manual_seed(0)
        y = torch.arange(400) % 4
        x = torch.randint(0, 60, (400, 1, 8, 8), generator=g, dtype=torch.uint8)
        for c in range(4):
            r, col = divmod(c, 2)
            x[y == c, :, 4 * r : 4 * r + 4, 4 * col : 4 * col + 4] += 150
        return RawData("image", 4, x[:320], y[:320], x[320:], y[320:])


class TwoLayer(Classifier):
    def __init__(self, spec: InputSpec):
        super().__init__()
        d = spec.channels * spec.size * spec.size
        self.stages = nn.ModuleList([nn.Sequential(nn.Flatten(), nn.Linear(d, 32), nn.ReLU()),
                                     nn.Sequential(nn.Linear(32, 32), nn.ReLU())])
        self.head = nn.Linear(32, spec.num_classes)
        self.num_exits = 2

    def forward(self, x, mask=None):
        for s in self.stages:
            x = s(x)
        return self.head(x)

    def early_exit(self, x, mask, k):
        for s in self.stages[:k]:
            x = s(x)
        return Exit(x, self.head(x) if k == self.num_exits else None)


def _register_two_layer():
    @register_model("two_layer", kind="image")
    def two_layer(spec: InputSpec) -> Classifier:
        return TwoLayer(spec)


def test_a_dataset_registered_in_a_test_is_listed_and_loads(scratch_registries):
    assert "blobs" not in list_datasets()
    _register_blobs()
    assert "blobs" in list_datasets() and "fashion_mnist" in list_datasets()
    d = load_data("blobs", train_limit=100)
    assert (d.kind, d.num_classes, d.channels, d.size) == ("image", 4, 1, 8)
    assert len(d.train) == 100 and len(d.val) == 32 and len(d.test) == 80  # val carved from train
    assert torch.bincount(d.train.y).tolist() == [25] * 4
    with pytest.raises(BenchError, match="blobs is images"):
        load_data("blobs", tokenizer=lambda x, n: x)


def test_a_model_registered_in_a_test_is_listed_and_builds(scratch_registries):
    assert "two_layer" not in list_models()
    _register_two_layer()
    assert "two_layer" in list_models() and "tiny_cnn" in list_models()
    torch.manual_seed(0)
    a = create_model("two_layer", InputSpec("image", 4, 1, 8))
    torch.manual_seed(0)
    b = create_model("two_layer", InputSpec("image", 4, 1, 8))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert a(torch.randn(3, 1, 8, 8)).shape == (3, 4) and tokenizer_for("two_layer") is None
    with pytest.raises(BenchError, match="takes image input"):
        create_model("two_layer", InputSpec("text", 2))


@pytest.mark.parametrize("method", ["uniform", "sift"])
def test_a_cell_trains_on_a_dataset_and_model_registered_in_the_test(method, scratch_registries, store):
    from bench.cell import run_cell
    from conftest import tiny_cell

    _register_blobs(), _register_two_layer()
    cfg = tiny_cell(model="two_layer", dataset="blobs", method=method, drop=0.5 if method == "sift" else 0.0,
                    params={"corr_threshold": -1.0} if method == "sift" else {}, batch_size=32, train_limit=None, eval_limit=None, epochs=3, lr=0.05)
    cfg.check_names()
    res = run_cell(cfg, log=lambda *_: None)
    assert res.status == "finished" and res.metrics["final_val_acc"] > 0.5  # chance is 0.25
    if method == "sift":  # scored by the model's early exit; selecting after the first epoch: 1/3 + 2/3 x 1/2 backwards
        assert res.metrics["total_partial_forwards"] > 0 and res.metrics["backward_fraction"] == pytest.approx(2 / 3, abs=0.02)


def test_register_model_rejects_a_text_model_without_tokenizer():
    with pytest.raises(ValueError, match="tokenizer"):
        register_model("no_tok", kind="text")


# ---------------------------------------------------------------- a method's hook fails: one named error


def _setup(method: Method, n: int = 10) -> Method:
    hooks.setup(method, FakeContext(n=n, batch_size=4, epochs=2))
    return method


def _batches(method: Method, epoch: int = 0) -> list:
    checker = hooks.BatchChecker(method, method.ctx.n_train)
    out = list(checker.batches(epoch))
    checker.finish()
    return out


class OutOfRange(Method):
    name = "out_of_range"

    def epoch_indices(self, epoch):
        return Batch(torch.arange(self.ctx.n_train) + 5)


class NotABatch(Method):
    name = "not_a_batch"

    def batches(self, epoch):
        yield torch.arange(3).tolist()  # not a Batch


class Broken(Method):
    name = "broken"

    def end_epoch(self, epoch):
        self.helper(epoch)

    def helper(self, epoch):
        return {}["missing"]


class LongerThanPlanned(Method):
    name = "longer_than_planned"

    def epoch_size(self, epoch):
        return self.ctx.n_train // 2  # says half, visits all: the LR plan is off, and the table says so


def test_indices_out_of_range_name_the_method_and_the_hook():
    with pytest.raises(MethodError, match=r"method out_of_range: batches gave an index outside \[0, 10\)"):
        _batches(_setup(OutOfRange()))


def test_a_batch_that_is_not_a_batch_fails_with_the_hook_named():
    with pytest.raises(MethodError, match="not_a_batch: batches must give a Batch"):
        _batches(_setup(NotABatch()))


def test_an_exception_in_a_hook_becomes_one_line_naming_method_hook_and_line():
    with pytest.raises(MethodError) as e:
        hooks.call_hook(_setup(Broken()), "end_epoch", 0)
    msg = str(e.value)
    assert msg.startswith("method broken: end_epoch raised KeyError: 'missing' (") and "test_plugins.py:" in msg
    assert "\n" not in msg and isinstance(e.value, BenchError) and isinstance(e.value.__cause__, KeyError)


def test_a_good_method_passes_the_checks_unchanged():
    m = _setup(Method())
    got = torch.cat([b.indices for b in _batches(m)])
    assert sorted(got.tolist()) == list(range(10)) and [len(b) for b in _batches(m)] == [4, 4, 2]
    assert "uniform" in METHODS


def test_a_method_that_misses_its_epoch_plan_is_flagged_in_the_table(store):
    from bench.cell import run_cell
    from bench.report.metrics import notes
    from conftest import tiny_cell

    METHODS.register(LongerThanPlanned)
    try:
        res = run_cell(tiny_cell(method="longer_than_planned", epochs=2), log=lambda *_: None)
    finally:
        METHODS._entries.pop("longer_than_planned")
    assert res.metrics["plan_step_error"] == pytest.approx(1.0)  # twice the steps it planned for
    import pandas as pd

    from bench.report.metrics import Group

    g = Group({}, pd.DataFrame([res.metrics]), pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
    assert "+100% optimizer steps against the plan" in notes(g)


def test_a_cell_whose_method_returns_bad_indices_stops_with_one_named_error(store):
    from bench.cell import run_cell
    from conftest import tiny_cell

    METHODS.register(OutOfRange)
    try:
        with pytest.raises(MethodError, match="method out_of_range: batches gave an index outside"):
            run_cell(tiny_cell(method="out_of_range", epochs=1), log=lambda *_: None)
    finally:
        METHODS._entries.pop("out_of_range")
