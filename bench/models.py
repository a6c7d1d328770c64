"""Models: timm image classifiers, transformers text classifiers, and tiny ones for CPU tests.

Every model is a `Classifier`: `forward(x, mask) -> logits`, plus `early_exit(x, mask, k)`
giving pooled features after stage / layer k (and logits where the model's own
head applies there), which early-exit selection methods use.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import BenchError
from bench.fetch import missing
from bench.paths import data_dir
from bench.registry import MODELS, register_model

SMALL_IMAGE = 64  # inputs up to this size get a small-image stem / patch size


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


# ---------------------------------------------------------------- images


class TinyCNN(Classifier):
    """Three conv stages, for fast CPU tests."""

    def __init__(self, spec: InputSpec, width: int = 16):
        super().__init__()
        w = width
        chans = [spec.channels, w, 2 * w, 4 * w]
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True),
                          nn.MaxPool2d(2) if i < 2 else nn.Identity())
            for i, (a, b) in enumerate(zip(chans[:-1], chans[1:]))
        )
        self.head = nn.Linear(chans[-1], spec.num_classes)
        self.num_exits = len(self.stages)

    def forward(self, x, mask=None):
        for s in self.stages:
            x = s(x)
        return self.head(x.mean((2, 3)))

    def early_exit(self, x, mask, k):
        for s in self.stages[:k]:
            x = s(x)
        return Exit(x.mean((2, 3)), self.head(x.mean((2, 3))) if k == self.num_exits else None)


class TimmClassifier(Classifier):
    def __init__(self, net: nn.Module, pad_to: int = 0):
        super().__init__()
        self.net, self.pad_to = net, pad_to
        info = net.feature_info
        self._offset = 0 if len(info) < 5 else 1  # ResNet/MobileNet list the stem as feature 0
        self.num_exits = len(info) - self._offset
        self.is_vit = hasattr(net, "blocks") and hasattr(net, "cls_token")
        if self.is_vit:
            self.num_exits = len(net.blocks)

    def _pad(self, x):
        if self.pad_to and x.shape[-1] < self.pad_to:
            p = self.pad_to - x.shape[-1]
            x = F.pad(x, (p // 2, p - p // 2, p // 2, p - p // 2))
        return x

    def forward(self, x, mask=None):
        return self.net(self._pad(x))

    def early_exit(self, x, mask, k):
        x = self._pad(x)
        m = self.net
        if self.is_vit:  # the model's own norm and head applied after block k
            x = m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(x))))
            for blk in m.blocks[:k]:
                x = blk(x)
            x = m.norm(x)
            return Exit(m.forward_head(x, pre_logits=True), m.forward_head(x))
        feat = m.forward_intermediates(x, indices=[k - 1 + self._offset], intermediates_only=True, stop_early=True)[0]
        return Exit(feat.mean((2, 3)), None)


def _timm(name: str, spec: InputSpec, **kw) -> nn.Module:
    import timm

    return timm.create_model(name, pretrained=False, num_classes=spec.num_classes, in_chans=spec.channels, **kw)


def _resnet(timm_name: str, spec: InputSpec) -> Classifier:
    net = _timm(timm_name, spec)
    if spec.size <= SMALL_IMAGE:  # CIFAR-style stem: 3x3 stride-1 conv, no max-pool
        old = net.conv1
        net.conv1 = nn.Conv2d(spec.channels, old.out_channels, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    return TimmClassifier(net)


def _image_model(name: str):
    def deco(fn):
        fn.kind = "image"
        return register_model(name)(fn)

    return deco


@_image_model("tiny_cnn")
def tiny_cnn(spec: InputSpec) -> Classifier:
    return TinyCNN(spec)


@_image_model("resnet18")
def resnet18(spec):
    return _resnet("resnet18", spec)


@_image_model("resnet50")
def resnet50(spec):
    return _resnet("resnet50", spec)


@_image_model("seresnext50")
def seresnext50(spec):
    return _resnet("seresnext50_32x4d", spec)


@_image_model("mobilenetv2")
def mobilenetv2(spec):
    net = _timm("mobilenetv2_100", spec)
    if spec.size <= SMALL_IMAGE:
        net.conv_stem.stride = (1, 1)
    return TimmClassifier(net)


@_image_model("vit_tiny")
def vit_tiny(spec):
    small = spec.size <= SMALL_IMAGE
    patch = (4 if spec.size % 4 == 0 and spec.size >= 16 else 2) if small else 16
    return TimmClassifier(_timm("vit_tiny_patch16_224", spec, img_size=spec.size, patch_size=patch))


@_image_model("swin_tiny")
def swin_tiny(spec):
    if spec.size <= SMALL_IMAGE:  # pad to 32: patch 2 and window 4 give stages 16, 8, 4, 2
        return TimmClassifier(_timm("swin_tiny_patch4_window7_224", spec, img_size=32, patch_size=2, window_size=4), pad_to=32)
    return TimmClassifier(_timm("swin_tiny_patch4_window7_224", spec, img_size=spec.size))


# ---------------------------------------------------------------- text


def minilm_dir() -> Path:
    path = data_dir() / "minilm"
    if not (path / "config.json").exists():
        raise missing("minilm")
    return path


class BertTokenizer:
    """bert-base-uncased WordPiece (shipped with MiniLM): shared by all our BERT-family models."""

    def __init__(self, path: Path):
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(str(path))

    def __call__(self, texts, max_length: int):
        pairs = bool(texts) and isinstance(texts[0], tuple)
        args = (list(t[0] for t in texts), list(t[1] for t in texts)) if pairs else (list(texts),)
        enc = self.tok(*args, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]


def bert_tokenizer() -> BertTokenizer:
    return BertTokenizer(Path(os.environ.get("BENCH_BERT_BASE_DIR", "")) if os.environ.get("BENCH_BERT_BASE_DIR") else minilm_dir())


class HFClassifier(Classifier):
    kind = "text"

    def __init__(self, hf: nn.Module):
        super().__init__()
        self.hf = hf
        self.base = getattr(hf, hf.base_model_prefix)
        self.num_exits = len(self.base.encoder.layer)

    def forward(self, x, mask=None):
        return self.hf(input_ids=x, attention_mask=mask).logits

    @contextlib.contextmanager
    def _depth(self, k: int):
        enc = self.base.encoder
        full = enc.layer
        enc.layer = full[:k]
        try:
            yield
        finally:
            enc.layer = full

    def early_exit(self, x, mask, k):
        """The model's own pooler and classifier applied to layer k."""
        with self._depth(k):
            out = self.hf(input_ids=x, attention_mask=mask, output_hidden_states=True)
        return Exit(out.hidden_states[-1][:, 0], out.logits)


def _hf_from(spec: InputSpec, path: Path | None, **config_kw):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForSequenceClassification, BertConfig, logging

    logging.set_verbosity_error()  # "newly initialized classifier" is expected
    logging.disable_progress_bar()
    if path is not None:
        return HFClassifier(AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=spec.num_classes))
    from transformers import BertForSequenceClassification

    return HFClassifier(BertForSequenceClassification(BertConfig(num_labels=spec.num_classes, **config_kw)))


def _text_model(name: str):
    def deco(fn):
        fn.kind = "text"
        fn.tokenizer = bert_tokenizer
        return register_model(name)(fn)

    return deco


@_text_model("minilm")
def minilm(spec):
    """all-MiniLM-L6-v2, pretrained (offline package): 6 layers, hidden 384."""
    return _hf_from(spec, minilm_dir())


@_text_model("bert_base")
def bert_base(spec):
    """BERT-base: pretrained from $BENCH_BERT_BASE_DIR when given, else from its config (random init)."""
    path = os.environ.get("BENCH_BERT_BASE_DIR")
    return _hf_from(spec, Path(path) if path else None)


@_text_model("tiny_bert")
def tiny_bert(spec):
    """A 2-layer, 64-wide BERT from scratch, for fast CPU tests."""
    return _hf_from(spec, None, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=128, max_position_embeddings=128)
