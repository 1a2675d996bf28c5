"""Backbones from torchvision and timm, with pretrained weights from their usual download cache.

For users with internet. Offline, a missing weights file becomes a one-line error naming the file
and the folder to put it in.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.error import URLError

import torch
from torch import nn

from ..errors import BackboneError
from .spec import FORWARD_FEATURES, PRE_LOGITS, BackboneSpec, Preprocessing

_CLASSIFIER_ATTRIBUTES = ("fc", "classifier", "head", "heads")


def known_names() -> list[str]:
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models))


def is_torchvision_model(name: str) -> bool:
    return name in known_names()


def is_timm_model(name: str) -> bool:
    try:
        import timm
    except ImportError:
        return False
    return timm.is_model(name)


def find_classifier(model: nn.Module) -> tuple[str, int]:
    """Dotted name and input width of the last Linear layer of the model's classifier."""
    for attribute in _CLASSIFIER_ATTRIBUTES:
        head = getattr(model, attribute, None)
        if head is None:
            continue
        linears = [(n, m) for n, m in head.named_modules() if isinstance(m, nn.Linear)]
        if isinstance(head, nn.Linear):
            return attribute, head.in_features
        if linears:
            name, layer = linears[-1]
            return f"{attribute}.{name}", layer.in_features
    raise BackboneError(f"cannot find the classifier of {type(model).__name__}; use a registered backbone.")


def _checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def torchvision_spec(name: str) -> BackboneSpec:
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError) as exc:
        raise BackboneError(f"torchvision has no pretrained weights for {name!r}: {exc}") from None
    preset = weights.transforms()
    crop = preset.crop_size[0]
    resize = preset.resize_size[0]
    filename = os.path.basename(weights.url)

    def build() -> nn.Module:
        try:
            return torchvision.models.get_model(name, weights=weights).eval()
        except (URLError, OSError, RuntimeError) as exc:
            raise BackboneError(
                f"cannot load {name} weights ({type(exc).__name__}); offline, copy {filename} into {_checkpoint_dir()}"
            ) from None

    # Building the architecture without weights is cheap and tells us the classifier's shape.
    skeleton = torchvision.models.get_model(name, weights=None)
    classifier, width = find_classifier(skeleton)
    return BackboneSpec(
        name=f"torchvision/{name}",
        build=build,
        preprocessing=Preprocessing(
            resize=resize,
            crop=crop,
            mean=tuple(preset.mean),
            std=tuple(preset.std),
            interpolation=preset.interpolation.value,
        ),
        classifier=classifier,
        taps={PRE_LOGITS: width},
        weights_id=f"torchvision/{filename}",
        source=f"torchvision {weights}",
        license="see torchvision's model documentation",
        categories=tuple(weights.meta.get("categories") or ()) or None,
        feature_map=_torchvision_feature_map(skeleton),
    )


def _torchvision_feature_map(model: nn.Module) -> str | None:
    """The module whose output is pooled into the codes, for the common families: ResNets end in
    ``layer4``, MobileNets, EfficientNets and DenseNets in ``features``. A guess that does not fit
    (a classifier with hidden layers) is caught when the feature map's width is checked."""
    if hasattr(model, "layer4"):
        return "layer4"
    if isinstance(getattr(model, "features", None), nn.Module):
        return "features"
    return None


def timm_spec(name: str) -> BackboneSpec:
    try:
        import timm
    except ImportError:
        raise BackboneError(f"backbone {name!r} needs timm; run: pip install timm") from None
    skeleton = timm.create_model(name, pretrained=False)
    cfg = skeleton.pretrained_cfg
    crop = cfg["input_size"][-1]
    classifier, width = find_classifier(skeleton)

    def build() -> nn.Module:
        try:
            return timm.create_model(name, pretrained=True).eval()
        except Exception as exc:  # timm surfaces network failures as many different types
            raise BackboneError(
                f"cannot load timm weights for {name} ({type(exc).__name__}); offline, pre-download them "
                "into the Hugging Face cache (HF_HOME) on a machine with internet."
            ) from None

    return BackboneSpec(
        name=f"timm/{name}",
        build=build,
        preprocessing=Preprocessing(
            resize=int(crop / cfg.get("crop_pct", 0.875)),
            crop=crop,
            mean=tuple(cfg["mean"]),
            std=tuple(cfg["std"]),
            interpolation=cfg.get("interpolation", "bilinear"),
        ),
        classifier=classifier,
        taps={PRE_LOGITS: width},
        weights_id=f"timm/{name}/{cfg.get('tag') or cfg.get('hf_hub_id') or 'default'}",
        source=f"timm {name} pretrained weights",
        license=str(cfg.get("license", "see timm's model card")),
        categories=None,
        feature_map=FORWARD_FEATURES,
        test_crop=_larger_test_crop(cfg, crop),
    )


def _larger_test_crop(cfg: dict, crop: int) -> int | None:
    """timm's ``test_input_size`` where a model card gives one larger than the training crop."""
    test = (cfg.get("test_input_size") or (None,))[-1]
    return test if test and test > crop else None
