"""One training cell as plain typed data, validated on load.

Each field is declared once, below: its type (the annotation), its default, its check and its
help. The type checks, the suite file's keys and the command line's options (bench/cli.py) are
all built from these declarations, so adding a field is one line here plus its use.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import typing
from dataclasses import dataclass
from typing import Any, Callable

from bench.errors import BenchError

DEVICE_FORMAT = re.compile(r"auto|cpu|cuda(:\d+)?|mps")


def cell_field(default: Any, help: str = "", check: Callable[[Any], str | None] | None = None, *,
               key: bool = True, cli: bool = True, choices: tuple = ()):
    """A cell field. `check(value)` returns what is wrong (with the fix) or None; `key=False`:
    the field says where or how a cell runs, not what it computes, and stays out of its identity."""
    meta = {"help": help, "check": check, "key": key, "cli": cli, "choices": choices}
    if isinstance(default, dict):
        return dataclasses.field(default_factory=dict, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _at_least(n: int, flag: str):
    return lambda v: None if v is None or v >= n else f"{flag} must be at least {n}, got {v}; pass {n} or more"


def _fraction(what: str, lo_open: bool, example: str):
    def check(v):
        ok = (0.0 < v if lo_open else 0.0 <= v) and v < 1.0
        return None if ok else f"{what} {v} is outside {'(' if lo_open else '['}0, 1); give a value such as {example}"
    return check


@dataclass(frozen=True)
class CellConfig:
    model: str = cell_field("", "a registered model (`python -m bench list models`)")
    dataset: str = cell_field("", "a registered dataset (`python -m bench list datasets`)")
    method: str = cell_field("uniform", "a registered method (`python -m bench list methods`)")
    params: dict = cell_field({}, "the method's own parameters (KEY=VALUE, VALUE read as JSON when it parses)")
    drop: float = cell_field(0.0, "share of samples with no backward pass, in [0, 1)",
                             lambda v: None if 0.0 <= v < 1.0 else
                             f"drop ratio {v} is outside [0, 1); give a value such as 0.5 (0 trains on all data)")
    epochs: int = cell_field(10, "epochs trained", _at_least(1, "epochs"))
    plan_epochs: int = cell_field(0, "epochs the LR schedule is planned for (0: epochs); more than epochs stops the "
                                     "run early inside a longer plan",
                                  lambda v: None if v >= 0 else f"plan_epochs must be 0 (= epochs) or more, got {v}")
    seed: int = cell_field(0, "seed of the model, the method and augmentation",
                           lambda v: None if v >= 0 else f"seed must be a non-negative integer, got {v}; pass 0 or more")
    batch_size: int = cell_field(512, "training batch size", _at_least(1, "batch size"))
    optimizer: str = cell_field("auto", "auto: SGD Nesterov for images, AdamW for text", choices=("auto", "sgd", "adamw"))
    lr: float | None = cell_field(None, "learning rate (default: the optimizer's)",
                                  lambda v: None if v is None or 0 < v < float("inf") else
                                  f"learning rate must be positive, got {v}; pass --lr such as 0.05, or leave it out")
    schedule: str = cell_field("linear", "linear: warm-up, then decay to 0 at the planned steps; constant: a fixed rate",
                               choices=("linear", "constant"))
    weight_decay: float | None = cell_field(None, "weight decay (default: the optimizer's)",
                                            lambda v: None if v is None or v >= 0 else
                                            f"weight decay must be 0 or more, got {v}; pass a value such as 5e-4")
    train_limit: int | None = cell_field(None, "stratified training subset size", _at_least(10, "train_limit"))
    eval_limit: int | None = cell_field(None, "cap on validation and test sizes (default: train_limit)",
                                        _at_least(10, "eval_limit"))
    val_limit: int | None = cell_field(None, "cap on the validation size alone (default: eval_limit)",
                                       _at_least(10, "val_limit"))
    label_noise: float = cell_field(0.0, "share of training labels flipped to another class",
                                    _fraction("label noise", False, "0.2"))
    val_fraction: float = cell_field(0.1, "share of the training split carved off for validation",
                                     lambda v: None if 0.0 < v < 0.5 else
                                     f"validation fraction {v} is outside (0, 0.5); give a fraction such as 0.1")
    max_length: int = cell_field(64, "text: tokens per sample", lambda v: None if v >= 2 else
                                 f"max_length must be at least 2 tokens ([CLS] and [SEP]), got {v}; pass 32 or more")
    cpu_bf16: bool = cell_field(False, "bf16 autocast on a CPU too (CUDA always uses it): 3x faster MiniLM steps on CPUs "
                                       "with AVX512-BF16 or AMX; elsewhere emulated, slower")
    compile: bool = cell_field(False, "torch.compile the model (compile time of new shapes stays off the clock)")
    device: str = cell_field("auto", "auto, cpu, cuda or cuda:N", lambda v: None if DEVICE_FORMAT.fullmatch(v) else
                             f"unknown device {v!r}; use auto, cpu, cuda or cuda:N", key=False)
    progress: bool = cell_field(True, "show a progress bar", key=False)
    eval_every: int = cell_field(0, "optimizer steps between validation probes (0: four per full epoch)",
                                 lambda v: None if v >= 0 else
                                 f"eval_every must be 0 (four probes a full epoch) or a number of steps, got {v}",
                                 key=False)
    session: str = cell_field("", "a measuring session (`compare`): its cells are measured afresh", cli=False)

    def __post_init__(self):
        hints = _hints()
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            wrong = _type_error(f.name, value, hints[f.name])
            if not wrong and f.metadata["choices"] and value not in f.metadata["choices"]:
                wrong = f"{f.name} must be one of {', '.join(f.metadata['choices'])}, got {value!r}"
            if not wrong and f.metadata["check"]:
                wrong = f.metadata["check"](value)
            if wrong:
                raise BenchError(wrong)
        if not self.model or not self.dataset:
            raise BenchError("a cell needs a model and a dataset")

    @property
    def kind(self) -> str:
        """The model's input: "image" or "text"."""
        from bench.models import model_kind

        return model_kind(self.model)

    @property
    def label(self) -> str:
        """How a cell is named in logs and tables."""
        what = "plan replayed" if "plan" in self.params else f"drop={self.drop:g}"
        return f"{self.model}/{self.dataset}/{self.method} {what} seed={self.seed}"

    def check_names(self) -> None:
        """Unknown model, dataset or method: one line listing the known ones."""
        from bench import registry

        for reg, name in ((registry.MODELS, self.model), (registry.DATASETS, self.dataset),
                          (registry.METHODS, self.method)):
            reg.get(name)

    def build_method(self):
        """The cell's method, built and checked once: the names exist, its parameters are valid,
        it has a drop knob when drop > 0, and it would act in this many epochs (Method.refuse)."""
        from bench import hooks
        from bench.registry import METHODS

        self.check_names()
        cls = METHODS.get(self.method)
        if self.drop > 0 and not cls.uses_drop:
            raise BenchError(f"method {self.method} has no drop ratio (drop={self.drop:g}); run it at drop 0")
        method = hooks.build(cls, self.drop, dict(self.params))
        why = hooks.call_hook(method, "refuse", self)
        if why:
            raise BenchError(f"{self.label}: {why}")
        return method

    def identity(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for f in dataclasses.fields(self):
            if not f.metadata["key"]:
                d.pop(f.name)
        for name, default in (("plan_epochs", 0), ("schedule", "linear"), ("val_limit", None), ("cpu_bf16", False)):
            if d[name] == default:
                d.pop(name)  # keys of cells made before the field existed stay as they were
        return d

    def _hash(self, **extra) -> str:
        blob = json.dumps({**self.identity(), **extra}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def key(self, hardware: str) -> str:
        """The cell's identity in the store (tag `cell_key`, checkpoint file name): what it computes
        and on which hardware. A finished key is never run again. See bench/executor.py `key_of`."""
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


def _hints() -> dict[str, Any]:
    global _HINTS
    if _HINTS is None:
        _HINTS = typing.get_type_hints(CellConfig)
    return _HINTS


_HINTS: dict[str, Any] | None = None


def base_type(hint) -> tuple[type, bool]:
    """(type, None allowed) of a field's annotation: `float | None` -> (float, True)."""
    args = typing.get_args(hint)
    if args:
        return next(a for a in args if a is not type(None)), type(None) in args
    return hint, False


def _type_error(name: str, value, hint) -> str | None:
    want, optional = base_type(hint)
    if value is None and optional:
        return None
    ok = isinstance(value, want) and not (want is not bool and isinstance(value, bool))
    if want is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        return None
    kind = {int: "an integer", float: "a number", bool: "true or false", str: "a name", dict: "a mapping"}[want]
    return f"{name} must be {kind}, got {value!r}"


def cell_fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(CellConfig))
