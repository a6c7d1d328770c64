"""timm image classifiers (ResNet-18/50, SE-ResNeXt-50, MobileNetV2, ViT-Tiny, Swin-Tiny), trained from scratch.

Small inputs (up to SMALL_IMAGE pixels) get a small-image stem or patch size.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from bench.models import Classifier, Exit, InputSpec, register_model

SMALL_IMAGE = 64  # inputs up to this size get a small-image stem / patch size


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


@register_model("resnet18", kind="image")
def resnet18(spec):
    return _resnet("resnet18", spec)


@register_model("resnet50", kind="image")
def resnet50(spec):
    return _resnet("resnet50", spec)


@register_model("seresnext50", kind="image")
def seresnext50(spec):
    return _resnet("seresnext50_32x4d", spec)


@register_model("mobilenetv2", kind="image")
def mobilenetv2(spec):
    net = _timm("mobilenetv2_100", spec)
    if spec.size <= SMALL_IMAGE:
        net.conv_stem.stride = (1, 1)
    return TimmClassifier(net)


@register_model("mobilenetv2_s2", kind="image")
def mobilenetv2_s2(spec):
    """MobileNetV2 keeping its stride-2 stem on small images: about 3x cheaper a step on CPU (frontier_cpu)."""
    return TimmClassifier(_timm("mobilenetv2_100", spec))


@register_model("vit_tiny", kind="image")
def vit_tiny(spec):
    small = spec.size <= SMALL_IMAGE
    patch = (4 if spec.size % 4 == 0 and spec.size >= 16 else 2) if small else 16
    return TimmClassifier(_timm("vit_tiny_patch16_224", spec, img_size=spec.size, patch_size=patch))


@register_model("swin_tiny", kind="image")
def swin_tiny(spec):
    if spec.size <= SMALL_IMAGE:  # pad to 32: patch 2 and window 4 give stages 16, 8, 4, 2
        return TimmClassifier(_timm("swin_tiny_patch4_window7_224", spec, img_size=32, patch_size=2, window_size=4), pad_to=32)
    return TimmClassifier(_timm("swin_tiny_patch4_window7_224", spec, img_size=spec.size))
