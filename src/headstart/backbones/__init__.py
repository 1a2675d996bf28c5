"""Pretrained networks as data: registry, preprocessing, taps and embedded offline weights."""

from . import embedded, scratch  # noqa: F401  (register the offline backbones)
from .registry import get_backbone, list_backbones, register_backbone
from .spec import PRE_LOGITS, BackboneSpec, Preprocessing
from .taps import build_feature_map_model, build_tap_model

__all__ = [
    "PRE_LOGITS",
    "BackboneSpec",
    "Preprocessing",
    "build_feature_map_model",
    "build_tap_model",
    "get_backbone",
    "list_backbones",
    "register_backbone",
]
