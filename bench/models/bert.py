"""BERT-family text classifiers via transformers: MiniLM-L6 (pretrained, offline), BERT-base, a tiny BERT."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
from torch import nn

from bench.fetch import missing
from bench.models import Classifier, Exit, InputSpec, register_model
from bench.paths import data_dir


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


@register_model("minilm", kind="text", tokenizer=bert_tokenizer)
def minilm(spec):
    """all-MiniLM-L6-v2, pretrained (offline package): 6 layers, hidden 384."""
    return _hf_from(spec, minilm_dir())


@register_model("bert_base", kind="text", tokenizer=bert_tokenizer)
def bert_base(spec):
    """BERT-base: pretrained from $BENCH_BERT_BASE_DIR when given, else from its config (random init)."""
    path = os.environ.get("BENCH_BERT_BASE_DIR")
    return _hf_from(spec, Path(path) if path else None)


@register_model("tiny_bert", kind="text", tokenizer=bert_tokenizer)
def tiny_bert(spec):
    """A 2-layer, 64-wide BERT from scratch, for fast CPU tests."""
    return _hf_from(spec, None, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=128, max_position_embeddings=128)


class _Given(nn.Module):
    """Stands in for the embeddings: hands the encoder hidden states computed elsewhere."""

    def __init__(self, hidden):
        super().__init__()
        self.hidden = hidden

    def forward(self, **_):
        return self.hidden


class FrozenTrunkClassifier(HFClassifier):
    """Embeddings and the first `frozen` layers frozen; their output is computed once per
    distinct input row (in eval mode: no dropout there) and kept for the process, so a
    step runs and trains only the layers above. Exact for text, which has no
    augmentation; `warm(splits)` fills the cache before the clock starts."""

    _cache: dict[tuple, dict[bytes, torch.Tensor]] = {}  # (model, frozen) -> input row -> hidden states

    def __init__(self, hf: nn.Module, name: str, frozen: int):
        super().__init__(hf)
        self.frozen = frozen
        self.cache_key = (name, frozen)
        self._cache.setdefault(self.cache_key, {})
        for p in self.base.embeddings.parameters():
            p.requires_grad_(False)
        for p in self.base.encoder.layer[:frozen].parameters():
            p.requires_grad_(False)

    @property
    def rows(self) -> dict[bytes, torch.Tensor]:
        """The process's cache of this trunk's outputs, looked up by key: a deepcopy of the model (a search
        trial's) shares it rather than copying it (6.6 GB for SST-2)."""
        return self._cache[self.cache_key]

    @torch.no_grad()
    def _trunk(self, x, mask):
        """The frozen part's output of each row, from the cache (filled for every split at set-up). The rows
        are looked up by their bytes on the host: a host sync per call, counted as the harness's."""
        keys = [r.tobytes() for r in torch.cat([x, mask], 1).cpu().numpy()]
        todo = [i for i, k in enumerate(keys) if k not in self.rows]
        if todo:
            idx = torch.tensor(todo, device=x.device)
            was = self.training
            self.eval()
            with self._depth(self.frozen):
                out = self.hf(input_ids=x[idx], attention_mask=mask[idx], output_hidden_states=True)
            self.train(was)
            for i, h in zip(todo, out.hidden_states[-1]):
                self.rows[keys[i]] = h.clone()
        return torch.stack([self.rows[k] for k in keys])

    def warm(self, splits, batch: int = 256) -> None:
        for s in splits:
            for i in range(0, len(s.y), batch):
                self._trunk(s.x[i : i + batch], s.mask[i : i + batch])

    @contextlib.contextmanager
    def _top(self, x, mask, k: int):
        emb, full = self.base.embeddings, self.base.encoder.layer
        self.base.embeddings = _Given(self._trunk(x, mask))
        self.base.encoder.layer = full[self.frozen : k]
        try:
            yield
        finally:
            self.base.embeddings, self.base.encoder.layer = emb, full

    def forward(self, x, mask=None):
        with self._top(x, mask, self.num_exits):
            return self.hf(input_ids=x, attention_mask=mask).logits

    def early_exit(self, x, mask, k):
        if k < self.frozen:
            return super().early_exit(x, mask, k)
        got = {}
        with self._top(x, mask, k):
            at = self.base.encoder.layer[-1] if k > self.frozen else self.base.embeddings
            hook = at.register_forward_hook(lambda m, i, o: got.setdefault("h", o[0] if isinstance(o, tuple) else o))
            try:
                logits = self.hf(input_ids=x, attention_mask=mask).logits
            finally:
                hook.remove()
        return Exit(got["h"][:, 0], logits)


@register_model("minilm_top2", kind="text", tokenizer=bert_tokenizer)
def minilm_top2(spec):
    """all-MiniLM-L6-v2 with its embeddings and first 4 layers frozen and cached: trains the top 2 layers and head."""
    return FrozenTrunkClassifier(_hf_from(spec, minilm_dir()).hf, "minilm", frozen=4)


@register_model("minilm_top1", kind="text", tokenizer=bert_tokenizer)
def minilm_top1(spec):
    """all-MiniLM-L6-v2 with its embeddings and first 5 layers frozen and cached: trains the top layer and head."""
    return FrozenTrunkClassifier(_hf_from(spec, minilm_dir()).hf, "minilm", frozen=5)
