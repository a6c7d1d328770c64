"""A three-stage CNN for fast CPU tests."""
from __future__ import annotations

from torch import nn

from bench.models import Classifier, Exit, InputSpec, register_model


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


@register_model("tiny_cnn", kind="image")
def tiny_cnn(spec: InputSpec) -> Classifier:
    return TinyCNN(spec)
