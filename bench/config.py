"""One training cell as plain typed data, validated on load."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from bench.errors import BenchError

# Fields that say where or how fast a cell runs, or what is observed, not what it computes: kept out of the keys.
_NOT_IN_KEY = ("device", "progress", "eval_every")
# The Python type each field must hold (YAML and the command line give typed values; None where allowed).
_TYPES = {"model": str, "dataset": str, "method": str, "params": dict, "drop": float, "epochs": int, "seed": int,
          "batch_size": int, "optimizer": str, "lr": float, "weight_decay": float, "train_limit": int,
          "eval_limit": int, "label_noise": float, "val_fraction": float, "max_length": int, "compile": bool,
          "device": str, "progress": bool, "eval_every": int,
          "session": str}
_OPTIONAL = ("lr", "weight_decay", "train_limit", "eval_limit")
DEVICE_FORMAT = re.compile(r"auto|cpu|cuda(:\d+)?|mps")


def _type_error(name: str, value, want: type) -> str | None:
    if value is None and name in _OPTIONAL:
        return None
    ok = isinstance(value, want) and not (want is not bool and isinstance(value, bool))
    if want is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        return None
    kind = {int: "an integer", float: "a number", bool: "true or false", str: "a name", dict: "a mapping"}[want]
    return f"{name} must be {kind}, got {value!r}"


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
    eval_every: int = 0  # optimizer steps between validation probes; 0: four per full epoch
    session: str = ""  # a measuring session (`compare`): its cells are measured afresh, side by side

    def __post_init__(self):
        def bad(what: str, fix: str):
            raise BenchError(f"{what}; {fix}")

        for name, want in _TYPES.items():
            wrong = _type_error(name, getattr(self, name), want)
            if wrong:
                raise BenchError(wrong)
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
        if self.lr is not None and not 0 < self.lr < float("inf"):
            bad(f"learning rate must be positive, got {self.lr}", "pass --lr such as 0.05, or leave it out for the default")
        if self.weight_decay is not None and not self.weight_decay >= 0:
            bad(f"weight decay must be 0 or more, got {self.weight_decay}", "pass a value such as 5e-4, or leave it out")
        if self.max_length < 2:
            bad(f"max_length must be at least 2 tokens ([CLS] and [SEP]), got {self.max_length}", "pass --max-length 32 or more")
        if self.eval_every < 0:
            bad(f"eval_every must be 0 (four probes a full epoch) or a number of steps, got {self.eval_every}",
                "give eval_every: 0 or a positive number of optimizer steps")
        if not DEVICE_FORMAT.fullmatch(self.device):
            bad(f"unknown device {self.device!r}", "use auto, cpu, cuda or cuda:N")

    @property
    def label(self) -> str:
        """How a cell is named in logs and tables."""
        return f"{self.model}/{self.dataset}/{self.method} drop={self.drop:g} seed={self.seed}"

    def check_names(self) -> None:
        """Unknown model, dataset or method: one line listing the known ones."""
        from bench import registry

        for known, reg, name in ((registry.list_models, registry.MODELS, self.model),
                                 (registry.list_datasets, registry.DATASETS, self.dataset),
                                 (registry.list_methods, registry.METHODS, self.method)):
            if name not in known():
                reg.get(name)  # raises the one-line error with the known names

    def build_method(self):
        """The cell's method, built and checked once: the names exist, its parameters are valid,
        it has a drop knob when drop > 0, and it would act in this many epochs (Method.refuse)."""
        from bench.method import call_hook
        from bench.registry import METHODS

        self.check_names()
        cls = METHODS.get(self.method)
        if self.drop > 0 and not cls.uses_drop:
            raise BenchError(f"method {self.method} has no drop ratio (drop={self.drop:g}); run it at drop 0")
        method = cls.build(self.drop, dict(self.params))
        why = call_hook(method, "refuse", self.epochs)
        if why:
            raise BenchError(f"{self.label}: {why}")
        return method

    def identity(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in _NOT_IN_KEY:
            d.pop(k)
        return d

    def _hash(self, **extra) -> str:
        blob = json.dumps({**self.identity(), **extra}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def key(self, hardware: str) -> str:
        """The cell's identity in the store (tag `cell_key`, checkpoint file name): what it computes
        and on which hardware. A finished key is never run again."""
        return self._hash(hardware=hardware)

    def config_key(self) -> str:
        """What the cell computes on any hardware (tag `config_key`): tables group a cell's runs
        from several machines by it. Not an identity in the store."""
        return self._hash()

    def replace(self, **changes) -> "CellConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CellConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise BenchError(f"unknown cell field(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return cls(**d)
