"""What the advisor measures about a dataset, against one backbone, in one pass over its images.

- size: images per class (min, median), total, imbalance ratio;
- similarity to the pretraining data, two independent signals: how confident the backbone's own
  ImageNet head is on the images, and how far the per-channel statistics of the activations entering
  each BatchNorm layer sit from the running statistics stored in it (ImageNet's, so no ImageNet image
  is needed);
- a layer sweep: cross-validated linear-probe accuracy from taps spread over the network's depth,
  and from the best earlier tap concatenated with the top one.

One forward pass per image yields all of it (hooks read the taps, the BatchNorm inputs and the
ImageNet logits), and the tap codes go into the feature cache, so the fit that follows reads them
from there instead of recomputing them. On a CPU, once the images are enough to pay for exporting
it, a graph of the logits and the tap codes runs in ONNX Runtime, and only a spread sample of
batches runs eagerly with the BatchNorm hooks (``BN_SAMPLE``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import progress
from ..backbones import PRE_LOGITS, BackboneSpec, Preprocessing
from ..backbones.batchnorm import BatchNormMoments
from ..backbones.hooks import LayerCapture
from ..data.augment import mirror_check_sample, mirror_sensitivity
from ..data.batches import ImageBatches
from ..data.duplicates import near_duplicate_groups
from ..data.images import as_source, as_sources, hash_memo
from ..data.subsample import class_subset, largest_remainder, median_count
from ..errors import DataError
from ..features.cache import FeatureCache, default_cache_dir
from ..features.engine import LOGITS, cached_graph, export_pays_from, export_verified, taps_graph
from ..features.extract import CodeExtractor
from ..hardware import resolve_device
from ..strategies.linear import fit_linear_head

log = logging.getLogger(__name__)

# Taps the sweep tries besides the top one: the last of each stage, from the deepest back.
SWEEP_TAPS = 4
# A dataset larger than this is measured on a stratified sample: the decisions need no more.
MAX_IMAGES = 2000
# The sample holds this many images of every class (where it has them), so that every class is seen,
# up to this many images in all (2 of each of 5,000 classes): the bound on measuring thousands of classes.
MIN_PER_CLASS = 2
MAX_COVERING = 10_000
# Past this many classes, the sweep, the trial and the second backbone are decided on this many,
# chosen at random (see sweep_classes).
SWEEP_CLASSES = 100
# Images per eager forward pass while measuring. Its hooks see every BatchNorm input at full size:
# advising on 2,000 images (MobileNetV2, 224 px) peaked at 1.72 GB with 32 at a time and at
# 1.44-1.56 GB with 16, and was no slower on a CPU.
MEASURE_BATCH = 16
# Images whose BatchNorm inputs are read (eagerly, with hooks) when the rest of the pass runs in ONNX
# Runtime: whole batches, spread over the pass. MobileNetV2's BN-statistics distance from them against
# every image's (benchmarks/bench_measuring.py, six dev sets): within 0.023 with 64 (flowers 0.357
# against 0.334, hymenoptera 0.234 against 0.221), within 0.012 with 128; the threshold is 0.45, the
# nearest sets 0.11 and 0.16 from it, so 64 leave every set on its side with room. 128 would cost
# 1 to 3 s more at 288 px, and leave a first contact's few hundred images all eager (the rest must
# pay for the export: export_pays_from). The eager batches also time the forward pass that
# fine-tuning estimates rest on.
BN_SAMPLE = 64


@dataclass
class SizeStats:
    n_images: int
    n_classes: int
    min_per_class: int
    median_per_class: int  # a whole number: the lower middle class's count
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
    folds: int = 5  # of the cross-validation (fewer where a class has fewer images); plans from before it was kept: 5


@dataclass
class Measurements:
    size: SizeStats
    similarity: Similarity
    sweep: list[TapScore] = field(default_factory=list)
    n_measured: int = 0  # images that went through the network (a sample of large datasets)
    sweep_classes: int = 0  # classes the sweep was scored on (all, or SWEEP_CLASSES of thousands); 0: all (older plans)
    seconds_per_image: float = 0.0  # eager forward pass, this machine: the basis of time estimates
    seconds: float = 0.0


def size_stats(labels: np.ndarray) -> SizeStats:
    _, counts = np.unique(labels, return_counts=True)
    return SizeStats(int(counts.sum()), len(counts), int(counts.min()), median_count(counts), float(counts.max() / counts.min()))


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


def sample_index(labels: np.ndarray, max_images: int = MAX_IMAGES, random_state: int = 0) -> np.ndarray:
    """The images measured (in order): all of them, or a sample of about ``max_images`` that holds
    :data:`MIN_PER_CLASS` of every class (all of a smaller one), filled up to ``max_images`` from the
    sweep's classes (:func:`sweep_classes`) in proportion to their sizes. Every class is covered even
    when that takes more than ``max_images``, up to :data:`MAX_COVERING` images (5,000 classes);
    with more classes than that, one image of each."""
    labels = np.asarray(labels)
    if len(labels) <= max_images:
        return np.arange(len(labels))
    rng = np.random.default_rng(random_state)
    _, y, counts = np.unique(labels, return_inverse=True, return_counts=True)
    # One sort, not a pass per class: grouped by class, in random order within each (1M images, 5,000 classes).
    order = np.lexsort((rng.random(len(y)), y))
    per_class = MIN_PER_CLASS if MIN_PER_CLASS * len(counts) <= max(max_images, MAX_COVERING) else 1
    take = np.minimum(counts, per_class)
    fill_from = sweep_classes(len(counts), random_state)
    room = counts[fill_from] - take[fill_from]
    spare = max_images - int(take.sum())
    if spare > 0 and room.sum() > 0:
        take[fill_from] += largest_remainder(room, min(spare, int(room.sum())))
    rank_in_class = np.arange(len(y)) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.sort(order[rank_in_class < np.repeat(take, counts)])


def sweep_classes(n_classes: int, random_state: int = 0) -> np.ndarray:
    """The classes the layer sweep, the trial and the second backbone are decided on: all of them,
    or :data:`SWEEP_CLASSES` chosen at random. Which tap transfers best is a property of the images,
    not of how many classes share them, and a probe over thousands of classes with two images each
    would cost many minutes and say little."""
    return class_subset(n_classes, SWEEP_CLASSES, random_state)


def _pooled(tensor: torch.Tensor) -> torch.Tensor:
    return (tensor.mean(dim=(2, 3)) if tensor.ndim == 4 else tensor.flatten(1)).float()


class _Pass:
    """What one measuring pass accumulates: tap codes (also written to the feature cache), the
    ImageNet head's confidence and entropy, and which images went through."""

    def __init__(self, spec: BackboneSpec, model: nn.Module, taps: list[str], preprocessing: Preprocessing, cache: bool, cache_dir):
        root = cache_dir or default_cache_dir()
        self.moments = BatchNormMoments(model)
        self.caches = {tap: FeatureCache(spec.fingerprint(tap, preprocessing), spec.taps[tap], root) for tap in taps} if cache else {}
        self.codes = {tap: [] for tap in taps}
        self.kept, self.confidences, self.entropies = [], [], []
        self.hashes, self.phashes = [], []  # of the kept images: near duplicates stay in one CV fold
        self.forward_seconds, self.eager_images = 0.0, 0  # of the eager forward passes
        self.failed: list[int] = []  # positions in the pass of images that could not be read

    def add(self, batch, batches, logits: torch.Tensor, seen: dict[str, torch.Tensor]) -> None:
        probabilities = logits.softmax(dim=1)
        self.confidences.append(probabilities.max(dim=1).values.cpu())
        self.entropies.append((-(probabilities * probabilities.clamp_min(1e-12).log()).sum(dim=1) / np.log(logits.shape[1])).cpu())
        for tap, rows in self.codes.items():
            tap_rows = seen[tap].cpu().numpy()
            rows.append(tap_rows)
            if tap in self.caches:
                for index, content_hash, row in zip(batch.indices, batch.content_hashes, tap_rows):
                    self.caches[tap].put(content_hash, row, int(batches.phashes[index]))
        self.kept += batch.indices
        self.hashes += batch.content_hashes
        self.phashes += [int(batches.phashes[index]) for index in batch.indices]


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
    moments: bool = True,
) -> tuple[Measurements, dict]:
    """Measure ``images`` (with integer ``labels`` 0..k-1) against ``spec``, reading each measured
    image once. Without ``moments`` (a second backbone's pass, of which only the codes and the sweep
    are used) no BatchNorm statistics are read, so no batch need run eagerly for them.

    Returns the measurements and, for reuse by a fine-tuning trial, the sample's codes per tap,
    labels, image indices and content hashes
    (``{"codes": {tap: array}, "labels": ..., "index": ..., "hashes": [...], "groups": ...}``; ``groups``
    numbers the sample's near-duplicate groups, which every split of it keeps together).
    """
    start = time.perf_counter()
    labels = np.asarray(labels)
    preprocessing = preprocessing or spec.preprocessing
    sources = as_sources(images)
    index = sample_index(labels, max_images, random_state)
    taps = sweep_taps(spec)
    measured = "similarity to ImageNet, and codes" if moments else "codes"
    progress.announce(f"measuring {len(index)} training images against {spec.name}: {measured} at {len(taps)} depths")
    model = spec.build().to(resolve_device(device)).eval()
    bn_sample = BN_SAMPLE if moments else 0
    results = _run_pass(spec, model, [sources[i] for i in index], taps, preprocessing, min(batch_size, MEASURE_BATCH), cache, cache_dir, bn_sample)
    if not results.kept:
        raise DataError("none of the images could be read; check the paths and that they are images.")
    kept = index[np.asarray(results.kept, dtype=int)]
    n_measured = len(kept)
    # What the sweep (and after it the trial and the second backbone) decides on: the sweep classes' images.
    classes = np.unique(labels)
    decided_on = np.isin(labels[kept], classes[sweep_classes(len(classes), random_state)])
    codes = {tap: np.vstack(rows)[decided_on] for tap, rows in results.codes.items()}
    groups = near_duplicate_groups(results.hashes, np.array(results.phashes, dtype=np.uint64), labels=labels[kept])[decided_on]
    kept = kept[decided_on]
    _, sample_labels = np.unique(labels[kept], return_inverse=True)  # 0..k-1 over the classes decided on
    measurements = Measurements(
        size=size_stats(np.delete(labels, index[results.failed])),  # the images the fit will use: not those found unreadable
        similarity=_similarity(spec, model, results),
        sweep=layer_sweep(spec, codes, sample_labels, random_state, groups),
        n_measured=n_measured,
        sweep_classes=int(sample_labels.max()) + 1,
        seconds_per_image=results.forward_seconds / max(results.eager_images, 1),
        seconds=time.perf_counter() - start,
    )
    hashes = [sources[i].known_hash() for i in index]
    return measurements, {"codes": codes, "labels": sample_labels, "index": kept, "hashes": hashes, "groups": groups}


class _MeasuringOutputs(nn.Module):
    """The network's logits and the pooled codes of ``taps``, as one graph's outputs (for ONNX Runtime)."""

    def __init__(self, spec: BackboneSpec, model: nn.Module, taps: list[str]):
        super().__init__()
        self.model, self.taps, self.classifier = model, taps, spec.classifier

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = [tap for tap in self.taps if tap != PRE_LOGITS]
        with LayerCapture(self.model, outputs, [self.classifier], keep=_pooled) as seen:
            logits = self.model(x)
        return (logits, *[seen[self.classifier if tap == PRE_LOGITS else tap] for tap in self.taps])


def _measuring_graph(spec, model, taps, preprocessing, n_images, cache_dir, bn_sample):
    """ONNX Runtime on the measuring graph (exported and checked against eager fp32, or read from the
    cache), when the images it would run (all but ``bn_sample``) are enough to pay for the export;
    else None (all eager). Cached as the backbone's taps graph, it also serves the fit's later passes
    at any of its taps."""
    if n_images <= bn_sample:
        return None  # every batch runs eagerly for the BatchNorm sample
    graph = taps_graph(Path(cache_dir or default_cache_dir()), spec, preprocessing)
    pays = n_images - bn_sample >= export_pays_from(preprocessing.crop)  # the images left to the graph pay for exporting it
    export = lambda path: export_verified(_MeasuringOutputs(spec, model, taps).eval(), path, preprocessing.crop, [LOGITS, *taps])  # noqa: E731
    try:
        return cached_graph(graph, export if pays else None, taps)
    except Exception as exc:  # an op the exporters cannot take, or no ONNX Runtime: measure eagerly
        log.info("measuring eagerly: no ONNX graph for %s (%s)", spec.name, str(exc).splitlines()[0][:200])
        return None


def _run_pass(spec, model, sources, taps, preprocessing, batch_size, cache, cache_dir, bn_sample: int) -> _Pass:
    """One forward pass over ``sources``: the taps' codes (pooled), the ImageNet logits, and (with a
    ``bn_sample``) the BatchNorm inputs' moments. Eagerly with hooks; on a CPU with enough images,
    every batch but a spread sample of ``bn_sample`` images (eager, for the moments) runs in ONNX Runtime."""
    results = _Pass(spec, model, taps, preprocessing, cache, cache_dir)
    device = next(model.parameters()).device
    graph = _measuring_graph(spec, model, taps, preprocessing, len(sources), cache_dir, bn_sample) if device.type == "cpu" else None
    n_batches = -(-len(sources) // batch_size)
    moment_batches = -(-bn_sample // batch_size)
    if graph is None:
        eager_every = 1  # every batch
    elif moment_batches:
        eager_every = max(1, n_batches // moment_batches)  # a spread sample, for the moments
    else:
        eager_every = None  # none
    # channels_last: the same numbers, 1.8x faster convolutions on the CPU (22 against 12 ms per image)
    memory_format = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    model.to(memory_format=memory_format)
    batches = ImageBatches(
        sources, preprocessing.transform(), batch_size=batch_size, draft_size=preprocessing.resize, phash=True,
        memo=hash_memo(cache_dir or default_cache_dir()) if cache else None, progress=progress.enabled(), desc="measuring",
    )
    inputs = [spec.classifier] if PRE_LOGITS in taps else []  # what enters the ImageNet classifier is pre_logits
    taps_out = [tap for tap in taps if tap != PRE_LOGITS]
    moments = results.moments.capture() if bn_sample else contextlib.nullcontext()
    with LayerCapture(model, taps_out, inputs, keep=_pooled) as seen, moments:
        for number, batch in enumerate(batches):
            if eager_every is None or number % eager_every:
                logits, *codes = (torch.from_numpy(output) for output in graph.outputs(batch.tensors, [LOGITS, *taps]))
                results.add(batch, batches, logits, dict(zip(taps, codes)))
                continue
            tick = time.perf_counter()
            with torch.inference_mode():
                logits = model(batch.tensors.to(device, memory_format=memory_format)).float()
            results.forward_seconds += time.perf_counter() - tick
            results.eager_images += len(batch.indices)
            results.add(batch, batches, logits, {**seen, PRE_LOGITS: seen.get(spec.classifier)})
    results.failed = sorted(batches.failures)
    return results


def _similarity(spec: BackboneSpec, model: nn.Module, results: _Pass) -> Similarity:
    # An ImageNet head: named categories, or (timm and hub models) a 1000-way classifier.
    has_head = spec.categories is not None or getattr(model.get_submodule(spec.classifier), "out_features", 0) == 1000
    return Similarity(
        head_confidence=float(torch.cat(results.confidences).mean()) if has_head else None,
        head_entropy=float(torch.cat(results.entropies).mean()) if has_head else None,
        bn_distance=results.moments.distance(),
        bn_layers=len(results.moments.norms),
    )


def mirror_probe(
    spec: BackboneSpec, images: list, preprocessing: Preprocessing, random_state: int = 0, codes: np.ndarray | None = None, cache_dir=None,
) -> tuple[float, int]:
    """How well a linear probe tells the mirror-check sample of ``images`` from their mirror images
    (cross-validated accuracy; chance 0.5), and the sample's size. ``codes``: the top codes of
    ``images`` from the measuring pass (the same pixels), so that only the mirrors are computed;
    they run in the measuring pass's graph where it was exported (in ``cache_dir``), else eagerly."""
    chosen = mirror_check_sample(len(images), random_state)
    # Decoded images, not files, go in: their cache keys would differ from the files', so skip the code
    # cache; a graph already exported is still used (too few to pay for a new export, they run eagerly).
    extractor = CodeExtractor(spec, PRE_LOGITS, input_size=preprocessing.crop, cache=False, cache_dir=cache_dir)
    rgb = [as_source(images[i]).rgb(preprocessing.resize) for i in chosen]
    return mirror_sensitivity(extractor, rgb, random_state=random_state, codes=codes[chosen] if codes is not None else None), len(chosen)


def layer_sweep(spec: BackboneSpec, codes: dict[str, np.ndarray], labels: np.ndarray, random_state: int = 0, groups: np.ndarray | None = None) -> list[TapScore]:
    """Cross-validated linear-probe accuracy per tap, then for the best earlier tap joined to the top."""
    scores = []
    n_images = len(labels)
    progress.announce(f"layer sweep: a linear head cross-validated on {n_images} images' codes at each of {len(codes)} depths, then the best two joined")
    for tap, matrix in progress.bar(codes.items(), total=len(codes), desc="layer sweep", unit="depth"):
        _, report = fit_linear_head(matrix, labels, random_state=random_state, groups=groups)
        scores.append(TapScore(tap, tap_depth(spec, tap), matrix.shape[1], report.cv_score or 0.0, report.cv_score_std or 0.0, report.cv_folds))
    earlier = [s for s in scores if s.tap != PRE_LOGITS]
    if earlier:
        best = max(earlier, key=lambda s: s.cv_accuracy)
        joined = np.hstack([codes[best.tap], codes[PRE_LOGITS]])
        _, report = fit_linear_head(joined, labels, random_state=random_state, groups=groups)
        scores.append(TapScore(f"{best.tap}+{PRE_LOGITS}", 1.0, joined.shape[1], report.cv_score or 0.0, report.cv_score_std or 0.0, report.cv_folds))
    return scores


__all__ = ["Measurements", "Similarity", "SizeStats", "TapScore", "measure", "mirror_probe", "sample_index", "size_stats", "sweep_classes", "sweep_taps"]
