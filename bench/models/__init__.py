"""Models: the shared types, and model plugins found by folder (one family per file).

Every model is a `Classifier`: `forward(x, mask) -> logits`, plus `early_exit(x, mask, k)`
giving pooled features after stage / layer k (and logits where the model's own
head applies there), which early-exit selection methods (SIFT) use; `num_exits`
says how many stages there are. A model family is a module in this folder whose
factories `fn(spec: InputSpec) -> Classifier` are registered with
`@register_model(name, kind=..., tokenizer=...)`; the registry imports every
module here (names not starting with `_`) on its first lookup.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from bench.errors import BenchError
from bench.registry import MODELS


@dataclass(frozen=True)
class InputSpec:
    kind: str
    num_classes: int
    channels: int = 0
    size: int = 0


@dataclass
class Exit:
    features: torch.Tensor  # N, D pooled
    logits: torch.Tensor | None  # the model's own head at that depth, where it fits


class Classifier(nn.Module):
    kind = "image"
    num_exits = 1

    def early_exit(self, x, mask, k: int) -> Exit:
        raise NotImplementedError


def register_model(name: str | Callable | None = None, *, kind: str = "image", tokenizer: Callable | None = None):
    """Register a factory `fn(spec) -> Classifier`, bare or called.

    `kind` is the input it takes ("image" or "text"); a text model names a
    `tokenizer()` that returns `tok(texts, max_length) -> (ids, mask)`.
    """
    if kind not in ("image", "text"):
        raise ValueError(f"model kind must be 'image' or 'text', got {kind!r}")
    if kind == "text" and tokenizer is None:
        raise ValueError("a text model needs a tokenizer")

    def deco(fn):
        fn.kind, fn.tokenizer = kind, tokenizer
        return MODELS.register(name if isinstance(name, str) else None)(fn)

    return deco(name) if callable(name) else deco


def model_kind(name: str) -> str:
    return getattr(MODELS.get(name), "kind", "image")


def create_model(name: str, spec: InputSpec) -> Classifier:
    factory = MODELS.get(name)
    kind = getattr(factory, "kind", "image")
    if kind != spec.kind:
        raise BenchError(
            f"model {name} takes {kind} input but the dataset is {spec.kind}; "
            f"{spec.kind} models: {', '.join(n for n in MODELS.names() if model_kind(n) == spec.kind)}"
        )
    return factory(spec)


def tokenizer_for(name: str):
    return getattr(MODELS.get(name), "tokenizer", None)
