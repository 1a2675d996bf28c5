"""A small CNN to train from scratch: the typical first attempt (three conv blocks with pooling),
kept as the baseline that transfer must beat on the user's own data (``--strategy scratch``)."""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_backbone
from .spec import PRE_LOGITS, BackboneSpec, Preprocessing

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WIDTHS = (32, 64, 128)
DEFAULT_INIT = "he_normal"  # ReLU networks: He et al. 2015


class SmallCNN(nn.Module):
    """conv3x3-BN-ReLU-maxpool blocks doubling the width (32, 64, 128), global average pooling and
    a linear classifier; works at any input size (64 px by default: each block halves it)."""

    def __init__(self, widths: tuple[int, ...] = WIDTHS, num_classes: int = 10):
        super().__init__()
        blocks, c_in = [], 3
        for c_out in widths:
            blocks.append(nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)))
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@register_backbone("scratch_cnn")
def scratch_cnn() -> BackboneSpec:
    def build() -> nn.Module:
        from ..weight_init import initialize

        return initialize(SmallCNN(), DEFAULT_INIT, seed=0).eval()

    return BackboneSpec(
        name="scratch_cnn",
        build=build,
        preprocessing=Preprocessing(resize=72, crop=64, mean=IMAGENET_MEAN, std=IMAGENET_STD),
        classifier="classifier",
        taps={PRE_LOGITS: WIDTHS[-1], **{f"features.{i}": w for i, w in enumerate(WIDTHS)}},
        weights_id=f"scratch-cnn-{DEFAULT_INIT}-seed0-v1",
        source=f"random ({DEFAULT_INIT}, seed 0): a small CNN to train from scratch",
        license="MIT",
        block_groups=tuple(f"features.{i}" for i in range(len(WIDTHS))) + ("classifier",),
        feature_map="features",
    )
