"""Rotten Tomatoes sentences (MR), from the vaderSentiment source archive (offline; docs/DATA.md)."""
from __future__ import annotations

import torch

from bench.data import RawData, carve_test, register_dataset
from bench.fetch import missing
from bench.paths import data_dir


@register_dataset("mr")
def mr() -> RawData:
    """Rotten Tomatoes sentences (Hutto & Gilbert 2014): sign of the mean human score, neutral dropped."""
    path = data_dir() / "mr" / "movieReviewSnippets_GroundTruth.txt"
    if not path.exists():
        raise missing("mr")
    texts, labels = [], []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        score = float(parts[1])
        if score != 0:
            texts.append(parts[2].strip())
            labels.append(int(score > 0))
    return carve_test("text", 2, texts, torch.tensor(labels))
