"""Gram-matrix style descriptors (Gatys et al.): which layers, how to compute, how to compare.

A layer's activations F (C channels x P positions) become G = F F^T / (C P): channel-by-channel
correlations, with every trace of where things are thrown away. Two images' style distance is
sum_l w_l ||G_l(a) - G_l(b)||_F^2, the style loss of Gatys et al. (their 1/(4 N^2 M^2) is this
normalisation, up to the constant 1/4).

A symmetric G is stored as its upper triangle with the off-diagonal entries scaled by sqrt(2)
(a "Gram vector"): the squared Euclidean distance between two Gram vectors is exactly the squared
Frobenius distance between the matrices, at half the memory, and every fast vector tool applies.
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..backbones import BackboneSpec, get_backbone
from ..backbones.hooks import LayerCapture
from ..data.batches import ImageBatches
from ..data.images import ImageInput, ImageSource
from ..errors import BackboneError, HeadstartError
from ..hardware import autocast, resolve_bf16, resolve_device

# Default style layers: the first post-ReLU activation at each resolution.
# VGG19: relu1_1 ... relu5_1, Gatys et al.'s choice.
# MobileNetV2 and EfficientNet-Lite0: the ReLU6 expansion outputs that Keras users reach for
# (block_1/3/6/13_expand_relu and out_relu); a block's own output is a linear bottleneck, not a
# ReLU'd activation, so it is not what a Gram matrix of "activations" means.
STYLE_LAYERS: dict[str, tuple[str, ...]] = {
    "vgg19": ("features.1", "features.6", "features.11", "features.20", "features.29"),
    "mobilenet_v2": ("features.2.conv.0", "features.4.conv.0", "features.7.conv.0", "features.14.conv.0", "features.18"),
    "efficientnet_lite0": ("bn1", "blocks.1.0.bn1", "blocks.2.0.bn1", "blocks.4.0.bn1", "bn2"),
}
# The names people know VGG19's layers by.
LAYER_ALIASES: dict[str, dict[str, str]] = {
    "vgg19": {"relu1_1": "features.1", "relu2_1": "features.6", "relu3_1": "features.11", "relu4_1": "features.20", "relu5_1": "features.29"},
}
DEFAULT_STYLE_BACKBONE = "vgg19"
# 128 px: the size docs/style.md's findings were measured at, and small enough that a query with
# exact re-ranking (11 images through VGG19) answers in 165 ms on a 2-core CPU with bf16 (1.4 s at
# 224 px in fp32).
DEFAULT_STYLE_SIZE = 128


def base_name(backbone: str) -> str:
    """``vgg19@he_normal`` has vgg19's layers."""
    return backbone.split("@", 1)[0]


def default_layers(spec: BackboneSpec) -> tuple[str, ...]:
    """The spec's style layers: the table above, else five taps spread from input to output."""
    if base_name(spec.name) in STYLE_LAYERS:
        return STYLE_LAYERS[base_name(spec.name)]
    taps = [tap for tap in spec.taps if tap != "pre_logits"]
    if not taps:
        raise BackboneError(f"backbone {spec.name} has no spatial taps to take style from; name layers with --layers.")
    picks = np.unique(np.linspace(0, len(taps) - 1, num=min(5, len(taps))).round().astype(int))
    return tuple(taps[i] for i in picks)


def resolve_layers(spec: BackboneSpec, layers: Sequence[str] | None) -> tuple[str, ...]:
    """Module names for ``layers`` (aliases such as relu3_1 allowed), checked against the network."""
    if not layers:
        return default_layers(spec)
    aliases = LAYER_ALIASES.get(base_name(spec.name), {})
    return tuple(aliases.get(layer, layer) for layer in layers)


def display_name(backbone: str, layer: str) -> str:
    """relu3_1 rather than features.11, where the layer has a well-known name."""
    inverse = {module: alias for alias, module in LAYER_ALIASES.get(base_name(backbone), {}).items()}
    return inverse.get(layer, layer)


def smooth(fmap: torch.Tensor, temperature: float) -> torch.Tensor:
    """Softmax over each position's channels (Wang et al., CVPR 2021), on (N, C, H, W) activations.

    The temperature is in units of the layer's root-mean-square activation in that image, so one
    value means the same on VGG's 0-255 scale and on a ReLU6 network's 0-6: temperature 1 divides
    the activations by their RMS before the softmax; a large temperature flattens towards uniform.
    """
    rms = fmap.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(1e-12)
    return torch.softmax(fmap / (temperature * rms), dim=1)


def gram(fmap: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, C): F F^T / (C * positions)."""
    n, c, h, w = fmap.shape
    # float32 sums of ~50,000 products keep ~6 digits: plenty here.
    if fmap.is_contiguous(memory_format=torch.channels_last):
        # What StyleNetwork hands back: positions x channels is a view, so nothing is copied.
        flat = fmap.permute(0, 2, 3, 1).reshape(n, h * w, c).float()
        return flat.transpose(1, 2) @ flat / (c * h * w)
    flat = fmap.reshape(n, c, h * w).float()
    return flat @ flat.transpose(1, 2) / (c * h * w)


@functools.lru_cache(maxsize=32)
def triu_weights(channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat (row * C + column) indices of the upper triangle and the factor (1 on the diagonal,
    sqrt 2 off it) that make a Gram vector's Euclidean norm equal the matrix's Frobenius norm."""
    rows, cols = torch.triu_indices(channels, channels)
    return rows * channels + cols, torch.where(rows == cols, 1.0, math.sqrt(2.0))


def gram_vector(grams: torch.Tensor) -> np.ndarray:
    """(N, C, C) symmetric -> (N, C (C + 1) / 2) Gram vectors."""
    n, channels = grams.shape[0], grams.shape[-1]
    flat, factor = triu_weights(channels)
    return (grams.float().cpu().reshape(n, channels * channels).index_select(1, flat) * factor).numpy()


def unpack_gram_vector(vector: np.ndarray) -> np.ndarray:
    """A Gram vector back to its symmetric C x C matrix."""
    channels = int((math.isqrt(8 * vector.shape[-1] + 1) - 1) // 2)
    flat, factor = (t.numpy() for t in triu_weights(channels))
    rows, cols = np.divmod(flat, channels)
    matrix = np.zeros((channels, channels), dtype=np.float32)
    matrix[rows, cols] = matrix[cols, rows] = vector / factor
    return matrix


def activation_entropy(fmap: torch.Tensor) -> np.ndarray:
    """Per image, the mean over positions of the entropy of the activations across channels, read
    as a distribution (non-negative part, normalised to sum 1), divided by log C: 1 is perfectly
    flat, 0 is one channel carrying everything ("peaky")."""
    n, c = fmap.shape[:2]
    mass = fmap.clamp_min(0).reshape(n, c, -1).double()
    total = mass.sum(dim=1, keepdim=True)
    p = mass / total.clamp_min(1e-30)
    entropy = -(p * torch.log(p.clamp_min(1e-30))).sum(dim=1) / math.log(c)  # (n, positions)
    alive = (total.squeeze(1) > 0).double()
    return ((entropy * alive).sum(dim=1) / alive.sum(dim=1).clamp_min(1)).float().numpy()


def channel_correlation(fmap: torch.Tensor) -> np.ndarray:
    """Per image, the mean absolute Pearson correlation between distinct channels across positions
    (channels that never vary are left out)."""
    n, c = fmap.shape[:2]
    flat = fmap.reshape(n, c, -1).double()
    centred = flat - flat.mean(dim=2, keepdim=True)
    norm = centred.norm(dim=2)
    out = np.zeros(n, dtype=np.float32)
    for i in range(n):
        live = norm[i] > 1e-12
        k = int(live.sum())
        if k < 2:
            continue
        unit = centred[i][live] / norm[i][live][:, None]
        corr = (unit @ unit.T).abs()
        out[i] = float((corr.sum() - corr.diagonal().sum()) / (k * (k - 1)))
    return out


@dataclass
class StyleDescriptors:
    """Gram vectors of n images: one (n, C_l (C_l + 1) / 2) array per layer."""

    backbone: str
    layers: tuple[str, ...]
    temperature: float | None
    vectors: list[np.ndarray]
    content_hashes: list[str | None] = field(default_factory=list)
    failures: dict[int, str] = field(default_factory=dict)  # index -> why the image was skipped

    def __len__(self) -> int:
        return self.vectors[0].shape[0] if self.vectors else 0


def layer_weights(layers: Sequence[str], weights: Sequence[float] | None) -> np.ndarray:
    """Equal weights summing to 1 (Gatys et al.'s w_l = 1/5 for five layers), unless given."""
    if weights is None:
        return np.full(len(layers), 1.0 / len(layers))
    if len(weights) != len(layers) or any(w < 0 for w in weights):
        raise HeadstartError(f"give one non-negative weight per style layer ({len(layers)}), got {list(weights)}.")
    return np.asarray(weights, dtype=np.float64)


def style_distance(a: list[np.ndarray], b: list[np.ndarray], weights: np.ndarray) -> tuple[float, list[float]]:
    """Weighted sum over layers of squared Frobenius differences between two images' Grams, and
    each layer's unweighted term. ``a`` and ``b``: one Gram vector per layer."""
    per_layer = [float(np.sum((np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64)) ** 2)) for x, y in zip(a, b)]
    return float(np.dot(weights, per_layer)), per_layer


class StyleNetwork:
    """A backbone that hands back the activations of named layers (unpooled) for an image batch.

    ``precision="auto"`` runs the convolutions in bfloat16 where the hardware has native bf16
    (AMX / AVX512-BF16 CPUs, recent GPUs): ~4x faster for VGG19 on such a CPU, at a cost measured on
    the three style sets of docs/style.md: distances 0.9% lower on average (std 0.3%, worst 1.7%),
    with the same nearest neighbours and the same top 5 for every image. Grams are summed in fp32.
    """

    def __init__(self, backbone: str | BackboneSpec = DEFAULT_STYLE_BACKBONE, layers: Sequence[str] | None = None,
                 *, input_size: int = DEFAULT_STYLE_SIZE, device: str = "auto", precision: str = "auto"):
        self.spec = get_backbone(backbone) if isinstance(backbone, str) else backbone
        self.layers = resolve_layers(self.spec, layers)
        self.preprocessing = self.spec.preprocessing.with_size(input_size)
        self.transform = self.preprocessing.transform()
        self.device = resolve_device(device)
        self.bf16 = resolve_bf16(precision, self.device)
        self._model: nn.Module | None = None

    @property
    def model(self) -> nn.Module:
        if self._model is None:
            # channels_last: oneDNN's convolutions run ~1.3x faster on it (VGG19 at 224 px, this CPU).
            model = self.spec.build().to(self.device, memory_format=torch.channels_last).eval()
            for layer in self.layers:
                try:
                    model.get_submodule(layer)
                except AttributeError:
                    examples = ", ".join(default_layers(self.spec)[:3])
                    raise BackboneError(
                        f"backbone {self.spec.name} has no layer {layer!r}; name modules as model.named_modules() does, e.g. {examples}."
                    ) from None
            self._model = model
        return self._model

    @functools.cached_property
    def channels(self) -> tuple[int, ...]:
        """Channel count of each style layer, from one forward pass of a blank image."""
        size = self.preprocessing.crop
        return tuple(a.shape[1] for a in self.activations(torch.zeros(1, 3, size, size)))

    def tensor(self, image: ImageInput) -> tuple[str, torch.Tensor]:
        """Content hash and network input of one image (path, PIL image or array)."""
        opened = ImageSource(image).open()
        return opened.content_hash, self.transform(opened.rgb(self.preprocessing.resize))

    def batches(self, images: Sequence[ImageInput], *, batch_size: int, progress: bool = False, desc: str = "style") -> ImageBatches:
        """The images as this network's input batches (see :class:`~headstart.data.batches.ImageBatches`)."""
        return ImageBatches(images, self.transform, batch_size=batch_size, draft_size=self.preprocessing.resize, progress=progress, desc=desc)

    @torch.no_grad()
    def activations(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """The style layers' outputs for a (N, 3, H, W) batch, in ``self.layers`` order, on the CPU.
        The forward pass stops as soon as every style layer has run (VGG19 skips its last 3 convs)."""
        with LayerCapture(self.model, self.layers, stop_when_complete=True) as seen, autocast(self.device, self.bf16):
            self.model(batch.to(self.device).contiguous(memory_format=torch.channels_last))
        return [seen[layer].float().cpu() for layer in self.layers]


class StyleExtractor:
    """Images in, style descriptors (Gram vectors per layer) out, in batches."""

    def __init__(self, backbone: str | BackboneSpec = DEFAULT_STYLE_BACKBONE, layers: Sequence[str] | None = None,
                 *, input_size: int = DEFAULT_STYLE_SIZE, temperature: float | None = None, batch_size: int = 16,
                 device: str = "auto", precision: str = "auto"):
        if temperature is not None and temperature <= 0:
            raise HeadstartError(f"the smoothing temperature must be positive, got {temperature}.")
        if not isinstance(input_size, numbers.Integral) or input_size < 16:
            raise HeadstartError(f"the style input size must be a whole number of pixels, 16 or more (default {DEFAULT_STYLE_SIZE}), got {input_size}.")
        self.network = StyleNetwork(backbone, layers, input_size=input_size, device=device, precision=precision)
        self.temperature = temperature
        self.batch_size = batch_size

    @property
    def layers(self) -> tuple[str, ...]:
        return self.network.layers

    def describe(self, activations: list[torch.Tensor]) -> list[np.ndarray]:
        """Gram vectors of one batch's activations, smoothed first when a temperature is set."""
        if self.temperature is not None:
            activations = [smooth(a, self.temperature) for a in activations]
        return [gram_vector(gram(a)) for a in activations]

    def __call__(self, images: Sequence[ImageInput], *, progress: bool = False) -> StyleDescriptors:
        per_batch: list[list[np.ndarray]] = []
        kept: list[int] = []
        batches = self.network.batches(images, batch_size=self.batch_size, progress=progress)
        for batch in batches:
            per_batch.append(self.describe(self.network.activations(batch.tensors)))
            kept += batch.indices
        vectors = [np.concatenate([b[layer] for b in per_batch]) if per_batch else np.zeros((0, 0), np.float32)
                   for layer in range(len(self.layers))]
        if batches.failures:  # keep rows aligned with ``images``: failed images get NaN rows
            vectors = [_scatter(v, kept, len(images)) for v in vectors]
        return StyleDescriptors(self.network.spec.name, self.layers, self.temperature, vectors, batches.content_hashes, dict(batches.failures))


def _scatter(rows: np.ndarray, kept: list[int], n: int) -> np.ndarray:
    out = np.full((n, rows.shape[1]), np.nan, dtype=np.float32)
    out[kept] = rows
    return out
