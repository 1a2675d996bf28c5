"""Pretrained networks as data: registry, preprocessing, taps and embedded offline weights."""

from . import embedded, scratch  # noqa: F401  (register the offline backbones)
from .registry import get_backbone, list_backbones, register_backbone
from .spec import PRE_LOGITS, BackboneSpec, Preprocessing
from .taps import backbone_taps, build_feature_map_model, build_joined_model, build_tap_model

__all__ = [
    "PRE_LOGITS",
    "BackboneSpec",
    "Preprocessing",
    "backbone_taps",
    "build_feature_map_model",
    "build_joined_model",
    "build_tap_model",
    "get_backbone",
    "list_backbones",
    "register_backbone",
]
