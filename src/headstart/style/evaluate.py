"""How well a backbone's Gram matrices separate styles, on a set labelled by style, and why.

For each backbone, layer (and all layers combined, by the style distance) and smoothing setting:
- ratio: mean style distance between images of different styles over the mean within a style
  (1.0: the descriptor cannot tell styles apart);
- retrieval: leave-one-out nearest-neighbour accuracy (is an image's closest other image of its style?);
- entropy: mean normalised activation entropy across channels (low: "peaky" activations);
- correlation: mean absolute correlation between channels across positions.
The last two test the two explanations for why modern networks' Grams separate styles poorly.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from ..data.images import ImageInput
from ..errors import DataError
from .descriptors import (
    DEFAULT_STYLE_SIZE,
    StyleNetwork,
    activation_entropy,
    channel_correlation,
    display_name,
    gram,
    gram_vector,
    layer_weights,
    smooth,
)

ALL_LAYERS = "all"
# The same sum with each layer's distances divided by their mean over the set: a control that
# tells "this layer set separates styles" apart from "one layer's large Grams drown the others".
BALANCED_LAYERS = "all, balanced"
# The same sum over Gram vectors scaled to unit length per layer and image (cosine distance): a
# per-layer normalisation that needs no set, so a search or a comparison of two images could use it.
UNIT_LAYERS = "all, unit"
DEFAULT_EVALUATE_BACKBONES = ("vgg19", "mobilenet_v2", "efficientnet_lite0", "vgg19@he_normal")
DEFAULT_TEMPERATURES = (None, 1.0)


@dataclass
class StyleRow:
    backbone: str
    smoothing: float | None  # temperature, or None for raw activations
    layer: str  # a layer's name, or "all" for the weighted sum over layers
    ratio: float
    retrieval: float
    entropy: float
    correlation: float

    def to_dict(self) -> dict:
        return asdict(self)


def pairwise_sq_distances(vectors: np.ndarray) -> np.ndarray:
    """(n, p) -> (n, n) squared Euclidean distances, in float64 after centring (the Grams of similar
    images are close relative to their size, where |a|^2 + |b|^2 - 2ab loses digits)."""
    x = vectors.astype(np.float64)
    x -= x.mean(axis=0)
    sq = np.einsum("ij,ij->i", x, x)
    d = sq[:, None] + sq[None, :] - 2 * x @ x.T
    np.fill_diagonal(d, 0.0)
    return np.maximum(d, 0.0)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    x = vectors.astype(np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)


def off_diagonal(n: int) -> np.ndarray:
    return ~np.eye(n, dtype=bool)


def separation(distances: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Between/within mean-distance ratio and leave-one-out 1-NN accuracy."""
    same = labels[:, None] == labels[None, :]
    within = distances[same & off_diagonal(len(labels))].mean()
    between = distances[~same].mean()
    ratio = float(between / within) if within > 0 else float("inf")
    masked = distances + np.diag(np.full(len(labels), np.inf))
    retrieval = float((labels[masked.argmin(axis=1)] == labels).mean())
    return ratio, retrieval


def _check_labels(labels: np.ndarray) -> None:
    values, counts = np.unique(labels, return_counts=True)
    if len(values) < 2 or counts.min() < 2:
        raise DataError("style evaluation needs at least 2 styles with at least 2 images each; put each style's images in a folder of its own.")


def evaluate_style(
    images: Sequence[ImageInput],
    labels: Sequence,
    *,
    backbones: Sequence[str] = DEFAULT_EVALUATE_BACKBONES,
    temperatures: Sequence[float | None] = DEFAULT_TEMPERATURES,
    input_size: int = DEFAULT_STYLE_SIZE,
    layers: dict[str, Sequence[str]] | None = None,
    batch_size: int = 16,
    device: str = "auto",
    precision: str = "fp32",
    progress: bool = False,
) -> list[StyleRow]:
    """Score every backbone x smoothing x layer on ``images`` labelled by style (one pass per backbone).
    In fp32 by default, unlike search: a measurement should reproduce on any machine. (In bf16 the
    figures of docs/style.md move by up to 0.08 in ratio and 2 images of 80 in retrieval; every
    verdict stays the same.)"""
    labels = np.asarray(labels)
    _check_labels(labels)
    rows: list[StyleRow] = []
    for backbone in backbones:
        network = StyleNetwork(backbone, (layers or {}).get(backbone), input_size=input_size, device=device, precision=precision)
        _check_memory(network, len(images), len(temperatures))
        per_setting = _describe_all(network, images, temperatures, batch_size, progress)
        weights = layer_weights(network.layers, None)
        for temperature, (vectors, entropy, correlation) in zip(temperatures, per_setting):
            distances = [pairwise_sq_distances(v) for v in vectors]
            for layer, d, ent, cor in zip(network.layers, distances, entropy, correlation):
                ratio, retrieval = separation(d, labels)
                rows.append(StyleRow(network.spec.name, temperature, display_name(backbone, layer), ratio, retrieval, float(ent.mean()), float(cor.mean())))
            mean_entropy = float(np.mean([e.mean() for e in entropy]))
            mean_correlation = float(np.mean([c.mean() for c in correlation]))
            combined = {
                ALL_LAYERS: sum(w * d for w, d in zip(weights, distances)),
                BALANCED_LAYERS: sum(d / max(d[off_diagonal(len(d))].mean(), 1e-300) for d in distances),
                UNIT_LAYERS: sum(w * pairwise_sq_distances(unit_rows(v)) for w, v in zip(weights, vectors)),
            }
            for name, d in combined.items():
                ratio, retrieval = separation(d, labels)
                rows.append(StyleRow(network.spec.name, temperature, name, ratio, retrieval, mean_entropy, mean_correlation))
    return rows


def physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _check_memory(network: StyleNetwork, n: int, settings: int) -> None:
    """Refuse, before any work, a set whose Gram vectors would not fit in half the machine's memory
    (evaluation keeps them all: exact pairwise distances need them)."""
    needed = n * settings * sum(c * (c + 1) // 2 for c in network.channels) * 4
    available = physical_memory()
    if needed > available / 2:
        raise DataError(
            f"evaluating {n} images on {network.spec.name} needs ~{needed / 1e9:.1f} GB for its Gram matrices, over half of "
            f"this machine's {available / 1e9:.1f} GB; evaluate a sample of each style (a few hundred images are plenty)."
        )


def _describe_all(network: StyleNetwork, images, temperatures, batch_size, progress):
    """Per temperature: Gram vectors, entropies and correlations per layer, from one forward pass."""
    acc = [([[] for _ in network.layers], [[] for _ in network.layers], [[] for _ in network.layers]) for _ in temperatures]
    batches = network.batches(images, batch_size=batch_size, progress=progress, desc=f"style {network.spec.name}")
    for batch in batches:
        _refuse_failures(batches.failures, images)
        for layer, fmap in enumerate(network.activations(batch.tensors)):
            for (vectors, entropy, correlation), temperature in zip(acc, temperatures):
                seen = smooth(fmap, temperature) if temperature is not None else fmap
                vectors[layer].append(gram_vector(gram(seen)))
                entropy[layer].append(activation_entropy(seen))
                correlation[layer].append(channel_correlation(seen))
    _refuse_failures(batches.failures, images)
    return [tuple([np.concatenate(parts) for parts in stat] for stat in setting) for setting in acc]


def _refuse_failures(failures: dict[int, str], images) -> None:
    """Every image of a style set is compared with every other: one that cannot be read stops it."""
    if failures:
        index, why = next(iter(failures.items()))
        raise DataError(f"cannot read {images[index]} ({why}); remove or replace it and run again.")


def format_table(rows: list[StyleRow]) -> str:
    """A plain-text table, one line per backbone x smoothing x layer."""
    lines = [f"{'backbone':<22} {'smoothing':>9} {'layer':<20} {'between/within':>14} {'1-NN':>7} {'entropy':>8} {'|corr|':>7}"]
    for r in rows:
        smoothing = "-" if r.smoothing is None else f"T={r.smoothing:g}"
        lines.append(f"{r.backbone:<22} {smoothing:>9} {r.layer:<20} {r.ratio:>14.3f} {r.retrieval:>7.1%} {r.entropy:>8.3f} {r.correlation:>7.3f}")
    return "\n".join(lines)
