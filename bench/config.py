"""One training cell as plain typed data, validated on load."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from bench.errors import BenchError

# Fields that say where or how fast a cell runs, not what it computes: kept out of the key.
_NOT_IN_KEY = ("device", "progress")


@dataclass(frozen=True)
class CellConfig:
    model: str
    dataset: str
    method: str = "uniform"
    params: dict[str, Any] = field(default_factory=dict)  # the method's own parameters
    drop: float = 0.0
    epochs: int = 10
    seed: int = 0
    batch_size: int = 512
    optimizer: str = "auto"  # auto: SGD nesterov for images, AdamW for text
    lr: float | None = None  # None: the optimizer's default below
    weight_decay: float | None = None
    train_limit: int | None = None  # stratified subset of the training split, for smoke runs
    eval_limit: int | None = None  # cap on validation and test sizes; defaults to train_limit
    label_noise: float = 0.0
    val_fraction: float = 0.1
    max_length: int = 64  # text: tokens per sample
    compile: bool = False
    device: str = "auto"
    progress: bool = True

    def __post_init__(self):
        def bad(what: str, fix: str):
            raise BenchError(f"{what}; {fix}")

        if not 0.0 <= float(self.drop) < 1.0:
            bad(f"drop ratio {self.drop} is outside [0, 1)", "give a value such as 0.5 (0 trains on all data)")
        if int(self.epochs) < 1:
            bad(f"epochs must be at least 1, got {self.epochs}", "pass --epochs 1 or more")
        if int(self.seed) < 0:
            bad(f"seed must be a non-negative integer, got {self.seed}", "pass --seed 0 or another integer")
        if int(self.batch_size) < 1:
            bad(f"batch size must be at least 1, got {self.batch_size}", "pass --batch-size 1 or more")
        if not 0.0 <= float(self.label_noise) < 1.0:
            bad(f"label noise {self.label_noise} is outside [0, 1)", "give a fraction such as 0.2")
        if not 0.0 < float(self.val_fraction) < 0.5:
            bad(f"validation fraction {self.val_fraction} is outside (0, 0.5)", "give a fraction such as 0.1")
        for name in ("train_limit", "eval_limit"):
            v = getattr(self, name)
            if v is not None and int(v) < 10:
                bad(f"{name} must be at least 10, got {v}", f"raise --{name.replace('_', '-')} or leave it out")
        if self.optimizer not in ("auto", "sgd", "adamw"):
            bad(f"unknown optimizer {self.optimizer!r}", "use auto, sgd or adamw")
        if not isinstance(self.params, dict):
            bad(f"method parameters must be a mapping, got {type(self.params).__name__}", "write them as key: value")

    @property
    def label(self) -> str:
        """How a cell is named in logs and tables."""
        return f"{self.model}/{self.dataset}/{self.method} drop={self.drop:g} seed={self.seed}"

    def check_names(self) -> None:
        """Unknown model, dataset or method: one line listing the known ones."""
        from bench.registry import DATASETS, METHODS, MODELS, list_datasets, list_models

        list_models(), list_datasets()
        MODELS.get(self.model), DATASETS.get(self.dataset), METHODS.get(self.method)

    def identity(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in _NOT_IN_KEY:
            d.pop(k)
        return d

    def config_key(self) -> str:
        """Hash of what the cell computes, on any hardware: tables group runs by it."""
        blob = json.dumps(self.identity(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def key(self, hardware: str) -> str:
        """Hash of what the cell computes and where: a finished key is never run again."""
        blob = json.dumps({**self.identity(), "hardware": hardware}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def replace(self, **changes) -> "CellConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CellConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise BenchError(f"unknown cell field(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return cls(**d)
