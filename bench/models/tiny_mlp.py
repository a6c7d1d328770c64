"""A two-hidden-layer MLP on flattened pixels: a second, non-convolutional architecture
small enough for CPU (Swift Sampler's transfer between architectures)."""
from __future__ import annotations

from torch import nn

from bench.models import Classifier, Exit, InputSpec, register_model


class TinyMLP(Classifier):
    def __init__(self, spec: InputSpec, width: int = 256):
        super().__init__()
        d = spec.channels * spec.size * spec.size
        dims = [d, width, width // 2]
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU(inplace=True)) for a, b in zip(dims[:-1], dims[1:])
        )
        self.head = nn.Linear(dims[-1], spec.num_classes)
        self.num_exits = len(self.stages)

    def forward(self, x, mask=None):
        x = x.reshape(len(x), -1)
        for s in self.stages:
            x = s(x)
        return self.head(x)

    def early_exit(self, x, mask, k):
        x = x.reshape(len(x), -1)
        for s in self.stages[:k]:
            x = s(x)
        return Exit(x, self.head(x) if k == self.num_exits else None)


@register_model("tiny_mlp", kind="image")
def tiny_mlp(spec: InputSpec) -> Classifier:
    return TinyMLP(spec)
