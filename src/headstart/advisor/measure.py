"""What the advisor measures about a dataset, against one backbone, in one pass over its images.

- size: images per class (min, median), total, imbalance ratio;
- similarity to the pretraining data, two independent signals: how confident the backbone's own
  ImageNet head is on the images, and how far the per-channel statistics of the activations entering
  each BatchNorm layer sit from the running statistics stored in it (ImageNet's, so no ImageNet image
  is needed);
- a layer sweep: cross-validated linear-probe accuracy from taps spread over the network's depth,
  and from the best earlier tap concatenated with the top one.

One eager forward pass per image yields all of it (hooks read the taps, the BatchNorm inputs and
the ImageNet logits), and the tap codes go into the feature cache, so the fit that follows reads
them from there instead of recomputing them.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import imagehash
import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import nn

from ..backbones import PRE_LOGITS, BackboneSpec, Preprocessing
from ..backbones.batchnorm import BatchNormMoments
from ..data.decode import UnreadableImage
from ..data.duplicates import phash_to_int
from ..errors import DataError
from ..features.cache import FeatureCache, default_cache_dir
from ..features.engine import resolve_device
from ..features.extract import read_content
from ..strategies.linear import fit_linear_head

log = logging.getLogger(__name__)

# Taps the sweep tries besides the top one: the last of each stage, from the deepest back.
SWEEP_TAPS = 4
# A dataset larger than this is measured on a stratified sample: the decisions need no more.
MAX_IMAGES = 2000
# Images per eager forward pass while measuring. Its hooks see every BatchNorm input at full size:
# advising on 2,000 images (MobileNetV2, 224 px) peaked at 1.72 GB with 32 at a time and at
# 1.44-1.56 GB with 16, and was no slower on a CPU.
MEASURE_BATCH = 16


@dataclass
class SizeStats:
    n_images: int
    n_classes: int
    min_per_class: int
    median_per_class: float
    imbalance_ratio: float  # largest class / smallest class


@dataclass
class Similarity:
    head_confidence: float | None  # mean max-probability of the ImageNet head (None: no head)
    head_entropy: float | None  # mean entropy of the head's softmax, as a share of log(n_outputs)
    bn_distance: float | None  # mean |mean shift| / running std + |log std ratio| over BN channels
    bn_layers: int


@dataclass
class TapScore:
    tap: str
    depth: float  # position in the network, 0 (input) to 1 (pre-logits)
    width: int
    cv_accuracy: float
    cv_std: float


@dataclass
class Measurements:
    size: SizeStats
    similarity: Similarity
    sweep: list[TapScore] = field(default_factory=list)
    n_measured: int = 0  # images that went through the network (a sample of large datasets)
    seconds_per_image: float = 0.0  # eager forward pass, this machine: the basis of time estimates
    seconds: float = 0.0


def size_stats(labels: np.ndarray) -> SizeStats:
    _, counts = np.unique(labels, return_counts=True)
    return SizeStats(int(counts.sum()), len(counts), int(counts.min()), float(np.median(counts)), float(counts.max() / counts.min()))


def sweep_taps(spec: BackboneSpec) -> list[str]:
    """The top tap and the last tap of each of the deepest stages (a stage: consecutive taps of one
    width), deepest first. Pooled early stages are too narrow to be good codes, so the sweep stops
    after ``SWEEP_TAPS``."""
    named = [tap for tap in spec.taps if tap != PRE_LOGITS]
    stage_ends = [tap for tap, following in zip(named, named[1:] + [None]) if following is None or spec.taps[following] != spec.taps[tap]]
    if stage_ends and spec.taps[stage_ends[-1]] == spec.taps[PRE_LOGITS]:
        stage_ends = stage_ends[:-1]  # pooled, the last map is the pre-logits codes themselves
    return [PRE_LOGITS, *reversed(stage_ends[-SWEEP_TAPS:])]


def tap_depth(spec: BackboneSpec, tap: str) -> float:
    named = list(spec.taps)
    return 1.0 if tap == PRE_LOGITS else (named.index(tap)) / max(1, len(named) - 1)


class _Probe:
    """Hooks on one network: pooled tap outputs and BatchNorm input moments (the logits are its output)."""

    def __init__(self, spec: BackboneSpec, model: nn.Module, taps: list[str]):
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles = []
        for tap in taps:
            if tap == PRE_LOGITS:  # what enters the ImageNet classifier
                self._hook(model.get_submodule(spec.classifier), tap, pre=True)
            else:
                self._hook(model.get_submodule(tap), tap, pre=False)
        self.moments = BatchNormMoments(model)

    def _hook(self, module: nn.Module, tap: str, pre: bool) -> None:
        def store(tensor: torch.Tensor) -> None:
            self.outputs[tap] = (tensor.mean(dim=(2, 3)) if tensor.ndim == 4 else tensor.flatten(1)).float()

        if pre:
            self.handles.append(module.register_forward_pre_hook(lambda _m, inputs: store(inputs[0])))
        else:
            self.handles.append(module.register_forward_hook(lambda _m, _i, out: store(out)))

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.moments.close()


def measure(
    spec: BackboneSpec,
    images: list,
    labels: np.ndarray,
    *,
    preprocessing: Preprocessing | None = None,
    device: str = "auto",
    batch_size: int = 32,
    cache: bool = True,
    cache_dir=None,
    max_images: int = MAX_IMAGES,
    random_state: int = 0,
) -> tuple[Measurements, dict]:
    """Measure ``images`` (with integer ``labels`` 0..k-1) against ``spec``.

    Returns the measurements and, for reuse by a fine-tuning trial, the sample's codes per tap,
    labels and image indices (``{"codes": {tap: array}, "labels": ..., "index": ...}``).
    """
    start = time.perf_counter()
    labels = np.asarray(labels)
    preprocessing = preprocessing or spec.preprocessing
    index = np.arange(len(images))
    if len(images) > max_images:
        index, _ = train_test_split(index, train_size=max_images, stratify=labels, random_state=random_state)
        index = np.sort(index)
    taps = sweep_taps(spec)
    model = spec.build()
    probe = _Probe(spec, model, taps)
    caches = {tap: FeatureCache(spec.fingerprint(tap, preprocessing), spec.taps[tap], cache_dir or default_cache_dir()) for tap in taps} if cache else {}
    torch_device = resolve_device(device)
    model.to(torch_device).eval()
    transform = preprocessing.transform()
    codes = {tap: [] for tap in taps}
    kept, confidences, entropies = [], [], []
    forward_seconds = 0.0

    def prepare(i: int):
        try:
            content_hash, load = read_content(images[i], preprocessing.resize)
            rgb = load()
        except (OSError, UnreadableImage, TypeError, ValueError):
            return i, None, None, 0
        return i, transform(rgb), content_hash, phash_to_int(imagehash.phash(rgb).hash)

    try:
        with ThreadPoolExecutor(max_workers=3, thread_name_prefix="headstart-advise") as pool:
            step = min(batch_size, MEASURE_BATCH)
            for begin in range(0, len(index), step):
                batch = [item for item in pool.map(prepare, index[begin : begin + step]) if item[1] is not None]
                if not batch:
                    continue
                tick = time.perf_counter()
                with torch.inference_mode():
                    logits = model(torch.stack([item[1] for item in batch]).to(torch_device)).float()
                forward_seconds += time.perf_counter() - tick
                probabilities = logits.softmax(dim=1)
                confidences.append(probabilities.max(dim=1).values.cpu())
                entropies.append((-(probabilities * probabilities.clamp_min(1e-12).log()).sum(dim=1) / np.log(logits.shape[1])).cpu())
                for tap in taps:
                    rows = probe.outputs[tap].cpu().numpy()
                    codes[tap].append(rows)
                    if tap in caches:
                        for (_, _, content_hash, phash), row in zip(batch, rows):
                            caches[tap].put(content_hash, row, phash)
                kept += [item[0] for item in batch]
    finally:
        probe.close()

    kept = np.asarray(kept, dtype=int)
    if len(kept) == 0:
        raise DataError("none of the images could be read; check the paths and that they are images.")
    codes = {tap: np.vstack(rows) for tap, rows in codes.items()}
    # An ImageNet head: named categories, or (timm and hub models) a 1000-way classifier.
    has_head = spec.categories is not None or getattr(model.get_submodule(spec.classifier), "out_features", 0) == 1000
    similarity = Similarity(
        head_confidence=float(torch.cat(confidences).mean()) if has_head else None,
        head_entropy=float(torch.cat(entropies).mean()) if has_head else None,
        bn_distance=probe.moments.distance(),
        bn_layers=len(probe.moments.norms),
    )
    sample_labels = labels[kept]
    sweep = layer_sweep(spec, codes, sample_labels, random_state)
    measurements = Measurements(
        size=size_stats(labels),
        similarity=similarity,
        sweep=sweep,
        n_measured=len(kept),
        seconds_per_image=forward_seconds / len(kept),
        seconds=time.perf_counter() - start,
    )
    return measurements, {"codes": codes, "labels": sample_labels, "index": kept}


def layer_sweep(spec: BackboneSpec, codes: dict[str, np.ndarray], labels: np.ndarray, random_state: int = 0) -> list[TapScore]:
    """Cross-validated linear-probe accuracy per tap, then for the best earlier tap joined to the top."""
    scores = []
    for tap, matrix in codes.items():
        _, report = fit_linear_head(matrix, labels, random_state=random_state)
        scores.append(TapScore(tap, tap_depth(spec, tap), matrix.shape[1], report.cv_score or 0.0, report.cv_score_std or 0.0))
    earlier = [s for s in scores if s.tap != PRE_LOGITS]
    if earlier:
        best = max(earlier, key=lambda s: s.cv_accuracy)
        joined = np.hstack([codes[best.tap], codes[PRE_LOGITS]])
        _, report = fit_linear_head(joined, labels, random_state=random_state)
        scores.append(TapScore(f"{best.tap}+{PRE_LOGITS}", 1.0, joined.shape[1], report.cv_score or 0.0, report.cv_score_std or 0.0))
    return scores


__all__ = ["Measurements", "Similarity", "SizeStats", "TapScore", "measure", "size_stats", "sweep_taps"]
