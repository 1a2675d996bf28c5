"""What a backbone is, as data: how to build it, how to feed it, where to tap it.

Modelled on torchvision's weights-with-metadata and timm's PretrainedCfg: the preprocessing travels
with the weights, so a saved classifier always sees images the way its backbone was trained to.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn
from torchvision.transforms import v2

from ..errors import BackboneError

# The tap that gives the classic "CNN codes": the globally pooled, ReLU'd activations that feed the
# ImageNet classifier.
PRE_LOGITS = "pre_logits"
# BackboneSpec.feature_map value for timm models: their forward_features() returns the unpooled map.
FORWARD_FEATURES = "forward_features()"


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB image becomes the backbone's input tensor."""

    resize: int  # shorter side after resizing
    crop: int  # side of the centre crop fed to the network
    mean: tuple[float, float, float]  # per channel, in the units of ``value_scale``
    std: tuple[float, float, float]
    interpolation: str = "bilinear"
    value_scale: float = 1.0  # 1.0: pixels in [0, 1]; 255.0: pixels in [0, 255] (Caffe/VGG style)
    channel_order: str = "RGB"  # "BGR" for weights converted from Caffe

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocessing":
        data = dict(data)
        data["mean"] = tuple(data["mean"])
        data["std"] = tuple(data["std"])
        return cls(**data)

    def with_size(self, crop: int) -> "Preprocessing":
        """The same recipe at another input size, keeping the resize/crop ratio."""
        resize = round(crop * self.resize / self.crop)
        return Preprocessing(**{**self.to_dict(), "crop": crop, "resize": resize})

    def transform(self) -> Callable:
        """A torchvision transform from a PIL RGB image to a normalised CHW float tensor."""
        return v2.Compose([*self.resize_and_crop(), *self.tensor_steps()])

    def resize_and_crop(self) -> list:
        """The deterministic geometry: shorter side to ``resize``, centre crop to ``crop``."""
        return [
            v2.Resize(self.resize, interpolation=v2.InterpolationMode(self.interpolation), antialias=True),
            v2.CenterCrop(self.crop),
        ]

    def tensor_steps(self) -> list:
        """PIL image of the final size -> float tensor in the units, channel order and normalisation
        the backbone was trained with (shared by evaluation and training-time augmentation)."""
        steps = [v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True)]
        if self.value_scale != 1.0:
            steps.append(v2.Lambda(lambda x: x * self.value_scale))
        if self.channel_order == "BGR":
            steps.append(v2.Lambda(lambda x: x.flip(0)))
        steps.append(v2.Normalize(self.mean, self.std))
        return steps


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone: builder, weights identity, preprocessing and named feature taps.

    ``build()`` returns the full ImageNet network in eval mode with its weights loaded.
    ``taps`` maps tap names to channel counts: ``pre_logits`` (the default) and the outputs of named
    modules, each global-average-pooled to one vector per image.
    ``block_groups`` lists module-name prefixes from input to output; fine-tuning freezes and sets
    learning rates by these groups.
    ``feature_map`` names the module whose output is the last spatial map, the one global pooling
    reduces to the codes (fine-tuning can pool it another way, e.g. stochastically), or
    ``FORWARD_FEATURES`` for models whose ``forward_features()`` returns it.
    """

    name: str
    build: Callable[[], nn.Module]
    preprocessing: Preprocessing
    classifier: str  # dotted path of the ImageNet classifier module (a Linear)
    taps: dict[str, int]
    weights_id: str  # identifies the exact weights; part of every cache key
    source: str  # where the weights come from, in words
    license: str
    block_groups: tuple[str, ...] = ()
    categories: tuple[str, ...] | None = None  # ImageNet class names, when the head is kept
    default_tap: str = PRE_LOGITS
    feature_map: str | None = None
    # The input size at which the pretrained network reads images best, when larger than its
    # training crop (timm's ``test_input_size``). Training on random resized crops shows objects
    # larger than a centre crop of the same size does, so at test time a larger input brings them
    # back to the size the filters learnt (Touvron et al. 2019, "Fixing the train-test resolution
    # discrepancy": 288 px for 224 px training). None: the training crop.
    test_crop: int | None = None

    def require_tap(self, tap: str) -> None:
        """Raise a one-line error naming the real taps when ``tap`` is not one of them."""
        if tap not in self.taps:
            raise BackboneError(f"backbone {self.name} has no tap {tap!r}; choose one of: {', '.join(self.taps)}.")

    def fingerprint(self, tap: str, preprocessing: Preprocessing | None = None) -> str:
        """A short hash naming what codes from this tap mean, for cache keys and saved models."""
        payload = {
            "weights": self.weights_id,
            "tap": tap,
            "preprocessing": (preprocessing or self.preprocessing).to_dict(),
            "codes_version": 1,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]
