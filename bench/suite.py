"""Suites: YAML files declaring a matrix of cells, validated on load.

    name: quick
    description: ...
    expected_runtime: about 12 minutes on 2 CPU cores
    defaults: {epochs: 3, batch_size: 128, train_limit: 2000}   # any CellConfig field
    method_params: {swift_sampler: {bo_steps: 4}}                 # per-method parameters
    target_offset: 0.5       # time to target: median uniform final val acc minus this many points
    early_epochs: 3          # optional: a table of each method's lead over uniform after each of the first epochs
    early_reference: {lr: 0.1}   # optional: also against the uniform cells with these fields (a paper's baseline)
    controls: true           # optional (default true): run each method row's selection and cost controls
    paper: paper/swiftlearn.yaml   # reported figures shown beside ours (relative to results/)
    blocks:
      - models: [resnet18]
        datasets: [fashion_mnist]
        methods: all          # every registered method; or a list of names / {name, params}
        drops: [0.5, 0.9]     # uniform always runs once, at drop 0, as the reference
        seeds: [0, 1]
        overrides: {epochs: 5}
        method_params: {sift: {exit_layer: 2}}   # optional: per-method parameters of this block

Every block expands to models x datasets x methods x drops x seeds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.config import CellConfig
from bench.errors import BenchError
from bench.paths import results_dir

REFERENCE = "uniform"
SUITE_KEYS = {"name", "description", "expected_runtime", "defaults", "method_params", "target_offset", "early_epochs",
              "early_reference", "controls", "paper", "blocks"}
BLOCK_KEYS = {"models", "datasets", "methods", "drops", "seeds", "overrides", "method_params"}


@dataclass(frozen=True)
class MethodSpec:
    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Block:
    models: tuple[str, ...]
    datasets: tuple[str, ...]
    methods: tuple[MethodSpec, ...] | str  # "all" resolves at expansion, so new plugins join
    drops: tuple[float, ...]
    seeds: tuple[int, ...]
    overrides: dict[str, Any] = field(default_factory=dict)
    method_params: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Suite:
    name: str
    blocks: tuple[Block, ...]
    description: str = ""
    expected_runtime: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    method_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    target_offset: float = 0.5
    early_epochs: int = 0  # > 0: the report adds the lead over uniform after each of the first this many epochs
    early_reference: dict[str, Any] = field(default_factory=dict)  # cell fields of a second uniform reference
    controls: bool = True  # run each method row's selection and cost controls
    paper: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    def cells(self, only_methods: set[str] | None = None) -> list[CellConfig]:
        """Every cell, in a stable order; `only_methods` keeps those plus the uniform reference."""
        return self.expand(only_methods)[0]

    def skipped(self) -> list[tuple[str, str]]:
        """(cell label, why) of the cells `methods: all` leaves out because the method refuses them."""
        return self.expand()[1]

    def expand(self, only_methods: set[str] | None = None) -> tuple[list[CellConfig], list[tuple[str, str]]]:
        """The cells, and those of `methods: all` blocks whose method refuses them (listed, not run;
        a method named in a block's list that refuses a cell fails validation instead)."""
        from bench.registry import METHODS, list_methods

        out, seen, skipped = [], set(), []
        for b in self.blocks:
            methods = [MethodSpec(m) for m in list_methods()] if b.methods == "all" else list(b.methods)
            for model in b.models:
                for dataset in b.datasets:
                    for m in methods:
                        if only_methods and m.name not in only_methods and m.name != REFERENCE:
                            continue
                        cls = METHODS.get(m.name) if m.name in METHODS else None
                        no_drop = m.name == REFERENCE or not getattr(cls, "uses_drop", True)
                        drops = (0.0,) if no_drop else b.drops
                        for drop in drops:
                            for seed in b.seeds:
                                params = {**self.method_params.get(m.name, {}), **b.method_params.get(m.name, {}),
                                          **m.params}
                                fields_ = {**self.defaults, **b.overrides, "model": model, "dataset": dataset,
                                           "method": m.name, "params": params, "drop": drop, "seed": seed}
                                cfg = _cell(self.name, fields_)
                                if cfg.config_key() in seen:
                                    continue
                                seen.add(cfg.config_key())
                                if b.methods == "all" and cls is not None:
                                    why = refusal(cfg)
                                    if why:
                                        if seed == b.seeds[0]:
                                            skipped.append((cfg.label.rsplit(" seed=", 1)[0], why))
                                        continue
                                out.append(cfg)
        return out, skipped


def refusal(cfg: CellConfig) -> str | None:
    """Why the cell's method refuses it (its parameters must be valid: a bad one still fails loudly)."""
    from bench import hooks
    from bench.registry import METHODS

    try:
        method = hooks.build(METHODS.get(cfg.method), cfg.drop, dict(cfg.params))
    except BenchError as e:
        raise BenchError(f"{cfg.label}: {e}") from None
    return hooks.call_hook(method, "refuse", cfg)


def _cell(suite: str, fields_: dict[str, Any]) -> CellConfig:
    try:
        return CellConfig.from_dict(fields_)
    except BenchError as e:
        raise BenchError(f"suite {suite}: {e}") from None
    except TypeError as e:
        raise BenchError(f"suite {suite}: bad cell fields ({e})") from None


def _tuple(suite: str, block: int, key: str, value, kind) -> tuple:
    if not isinstance(value, list) or not value:
        raise BenchError(f"suite {suite}, block {block}: {key} must be a non-empty list, got {value!r}")
    try:
        return tuple(kind(v) for v in value)
    except (TypeError, ValueError):
        raise BenchError(f"suite {suite}, block {block}: {key} holds a value that is not {kind.__name__}: {value!r}") from None


def _mapping(suite: str, where: str, value) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BenchError(f"suite {suite}: {where} must be a mapping of key: value, got {value!r}")
    return dict(value)


def _number(suite: str, where: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BenchError(f"suite {suite}: {where} must be a number, got {value!r}")
    return float(value)


def _flag(suite: str, where: str, value) -> bool:
    if not isinstance(value, bool):
        raise BenchError(f"suite {suite}: {where} must be true or false, got {value!r}")
    return value


def _methods(suite: str, block: int, value) -> tuple[MethodSpec, ...] | str:
    if value == "all":
        return "all"
    if not isinstance(value, list) or not value:
        raise BenchError(f"suite {suite}, block {block}: methods must be 'all' or a list of names / {{name, params}}")
    out = []
    for m in value:
        if isinstance(m, str):
            out.append(MethodSpec(m))
        elif isinstance(m, dict) and "name" in m and set(m) <= {"name", "params"}:
            out.append(MethodSpec(m["name"], dict(m.get("params") or {})))
        else:
            raise BenchError(f"suite {suite}, block {block}: bad method entry {m!r}; write a name or {{name: x, params: {{...}}}}")
    return tuple(out)


def find_suite(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.is_dir():
        raise BenchError(f"{p} is a folder; give a suite name or a .yaml file (suites live in results/suites/)")
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise BenchError(f"suite file {p} does not exist")
        return p
    p = results_dir() / "suites" / f"{name_or_path}.yaml"
    if not p.exists():
        known = ", ".join(sorted(q.stem for q in (results_dir() / "suites").glob("*.yaml")))
        raise BenchError(f"unknown suite {name_or_path!r}; known suites: {known} (or give a path to a .yaml file)")
    return p


def load_suite(name_or_path: str) -> Suite:
    path = find_suite(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise BenchError(f"suite file {path} is not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise BenchError(f"suite file {path} must hold a mapping with name and blocks")
    name = raw.get("name") or path.stem
    unknown = set(raw) - SUITE_KEYS
    if unknown:
        raise BenchError(f"suite {name}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(SUITE_KEYS))}")
    if not raw.get("blocks"):
        raise BenchError(f"suite {name}: no blocks; add at least one block with models, datasets, methods, drops, seeds")
    if not isinstance(raw["blocks"], list):
        raise BenchError(f"suite {name}: blocks must be a list of blocks, got {raw['blocks']!r}")
    blocks = []
    for i, b in enumerate(raw["blocks"], 1):
        if not isinstance(b, dict):
            raise BenchError(f"suite {name}, block {i}: must be a mapping")
        bad = set(b) - BLOCK_KEYS
        missing = {"models", "datasets", "methods"} - set(b)
        if bad or missing:
            what = f"unknown key(s) {', '.join(sorted(bad))}" if bad else f"missing {', '.join(sorted(missing))}"
            raise BenchError(f"suite {name}, block {i}: {what}; a block has {', '.join(sorted(BLOCK_KEYS))}")
        blocks.append(Block(
            models=_tuple(name, i, "models", b["models"], str),
            datasets=_tuple(name, i, "datasets", b["datasets"], str),
            methods=_methods(name, i, b["methods"]),
            drops=_tuple(name, i, "drops", b.get("drops", [0.5]), float),
            seeds=_tuple(name, i, "seeds", b.get("seeds", [0]), int),
            overrides=_mapping(name, f"block {i}: overrides", b.get("overrides")),
            method_params={m: _mapping(name, f"block {i}: method_params of {m}", v)
                           for m, v in _mapping(name, f"block {i}: method_params", b.get("method_params")).items()},
        ))
    paper = {}
    if raw.get("paper"):
        ppath = results_dir() / raw["paper"]
        if not ppath.exists():
            raise BenchError(f"suite {name}: paper figures file {ppath} does not exist")
        paper = yaml.safe_load(ppath.read_text()) or {}
    method_params = _mapping(name, "method_params", raw.get("method_params"))
    for m, params in method_params.items():
        method_params[m] = _mapping(name, f"method_params of {m}", params)
    suite = Suite(name=name, blocks=tuple(blocks), description=raw.get("description", ""),
                  expected_runtime=str(raw.get("expected_runtime", "")),
                  defaults=_mapping(name, "defaults", raw.get("defaults")), method_params=method_params,
                  target_offset=_number(name, "target_offset", raw.get("target_offset", 0.5)),
                  early_epochs=int(_number(name, "early_epochs", raw.get("early_epochs", 0))),
                  early_reference=_mapping(name, "early_reference", raw.get("early_reference")),
                  controls=_flag(name, "controls", raw.get("controls", True)),
                  paper=paper, path=str(path))
    validate(suite)
    return suite


def validate(suite: Suite) -> None:
    """Names exist, every cell's values are valid, its method acts in it and its device is
    here, before anything runs (`--dry-run` runs this too)."""
    from bench.device import pick_device
    from bench.registry import DATASETS, METHODS, MODELS, list_datasets, list_methods, list_models

    for i, b in enumerate(suite.blocks, 1):
        try:
            for known, reg, names in ((list_models, MODELS, b.models), (list_datasets, DATASETS, b.datasets),
                                      (list_methods, METHODS, [] if b.methods == "all" else [m.name for m in b.methods])):
                for n in names:
                    if n not in known():
                        reg.get(n)  # raises the one-line error with the known names
        except BenchError as e:
            raise BenchError(f"suite {suite.name}, block {i}: {e}") from None
    for name in list(suite.method_params) + [m for b in suite.blocks for m in b.method_params]:
        if name not in METHODS:
            raise BenchError(f"suite {suite.name}: method_params names unknown method {name!r}")
    devices = set()
    for cfg in suite.cells():
        try:
            cfg.build_method()
            if cfg.device not in devices:
                pick_device(cfg.device)
                devices.add(cfg.device)
        except BenchError as e:
            raise BenchError(f"suite {suite.name}: {e}") from None


def list_suites() -> list[str]:
    return sorted(p.stem for p in (results_dir() / "suites").glob("*.yaml"))

