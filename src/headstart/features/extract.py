"""CNN codes for a list of images: hash, look up, decode, preprocess and run the backbone, streaming.

Images stream through :class:`~headstart.data.batches.ImageBatches`: each is read at most once (its
bytes give the cache key and, on a cache miss, the pixels), and not at all when its content hash is
remembered (:class:`~headstart.data.images.HashMemo`) and its codes are cached.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..backbones import BackboneSpec, Preprocessing, backbone_taps, get_backbone
from ..backbones.taps import joined_signed_root
from ..data.batches import ImageBatches
from ..data.images import ImageInput, as_sources, hash_memo
from .cache import FeatureCache, default_cache_dir
from .engine import create_engine, export_pays_from

log = logging.getLogger(__name__)

__all__ = ["CodeExtractor", "Codes", "ConcatExtractor", "ImageInput", "code_extractor", "join_parts"]


@dataclass
class Codes:
    """Codes for a list of images; rows of images that could not be read are NaN."""

    codes: np.ndarray  # (n, d) float32
    content_hashes: list[str | None]
    phashes: np.ndarray  # (n,) uint64, 0 where unreadable
    failures: dict[int, str] = field(default_factory=dict)  # index -> why it was unreadable
    computed: int = 0  # images that went through the network (cache misses)
    engine: str = "cache"

    @property
    def ok(self) -> np.ndarray:
        mask = np.ones(len(self.content_hashes), dtype=bool)
        mask[list(self.failures)] = False
        return mask

    def subset(self, index: np.ndarray) -> "Codes":
        """The codes of the images at ``index`` (failures renumbered to match)."""
        position = {int(old): new for new, old in enumerate(index)}
        return Codes(
            codes=self.codes[index],
            content_hashes=[self.content_hashes[i] for i in index],
            phashes=self.phashes[index],
            failures={position[i]: why for i, why in self.failures.items() if i in position},
            computed=self.computed,
            engine=self.engine,
        )


class CodeExtractor:
    """Computes (and caches) codes at one tap of one backbone.

    The network is only built, or its ONNX graph loaded, on the first cache miss: a fit whose codes
    are all cached never touches the weights.
    """

    def __init__(
        self,
        spec: BackboneSpec,
        tap: str | None = None,
        *,
        input_size: int | None = None,
        engine: str = "auto",
        device: str = "auto",
        batch_size: int = 32,
        cache: bool = True,
        cache_dir: str | os.PathLike | None = None,
        num_workers: int | None = None,
    ):
        self.spec = spec
        self.tap = tap or spec.default_tap
        spec.require_tap(self.tap)  # now, not at the first cache miss
        self.preprocessing: Preprocessing = spec.preprocessing.with_size(input_size) if input_size else spec.preprocessing
        self.fingerprint = spec.fingerprint(self.tap, self.preprocessing)
        self.engine_name = engine
        self.device = device
        self.batch_size = batch_size
        self.cache_root = Path(cache_dir) if cache_dir else default_cache_dir()
        self.cache = FeatureCache(self.fingerprint, self.dim, self.cache_root) if cache else None
        # Content hashes of files are remembered beside the codes, and only where codes are cached.
        self.memo = hash_memo(self.cache_root) if cache else None
        self.num_workers = num_workers
        self._transform = self.preprocessing.transform()
        self._engine = None
        self._small_pass = False  # the engine was chosen for a pass too small to pay for an export

    @property
    def dim(self) -> int:
        return self.spec.taps[self.tap]

    def engine(self, images: int | None = None):
        """The engine for a pass of ``images`` images; a pass too small to pay for exporting the
        ONNX graph runs eagerly, and a larger one later may still export it."""
        pays_from = export_pays_from(self.preprocessing.crop)
        if self._engine is None or (self._small_pass and (images is None or images >= pays_from)):
            self._small_pass = images is not None and images < pays_from
            self._engine = create_engine(
                self.spec,
                self.tap,
                preprocessing=self.preprocessing,
                cache_root=self.cache_root,
                engine=self.engine_name,
                device=self.device,
                images=images,
            )
        return self._engine

    def __call__(self, images: Sequence[ImageInput], *, progress: bool = False, desc: str = "features") -> Codes:
        batches = ImageBatches(
            images, self._transform, batch_size=self.batch_size, draft_size=self.preprocessing.resize, phash=True,
            lookup=self.cache.get if self.cache is not None else None, memo=self.memo, workers=self.num_workers,
            prefetch=True, progress=progress, desc=desc,
        )
        codes = np.full((len(batches), self.dim), np.nan, dtype=np.float32)
        computed = 0
        engine = None
        for batch in batches:
            if engine is None:  # at the first batch to compute: hits and failures so far are known
                engine = self.engine(len(batches) - len(batches.cached) - len(batches.failures))
            rows = engine(batch.tensors)
            codes[batch.indices] = rows
            computed += len(batch.indices)
            if self.cache is not None:
                for index, content_hash, row in zip(batch.indices, batch.content_hashes, rows):
                    self.cache.put(content_hash, row, int(batches.phashes[index]))
        phashes = batches.phashes
        for index, hit in batches.cached.items():
            codes[index], phashes[index] = hit.codes, hit.phash
        return Codes(codes, batches.content_hashes, phashes, dict(batches.failures), computed, engine.name if computed else "cache")


def code_extractor(backbone: str, tap: str | None = None, *, input_size: int | None = None, **options) -> "CodeExtractor | ConcatExtractor":
    """The extractor of ``backbone``'s codes at ``tap``: one network at one tap, or (names or taps
    joined by "+") several side by side: one backbone at several taps (``"features.13+pre_logits"``),
    or several backbones, each at the one tap given, or at its own (``backbone="mobilenet_v2+
    efficientnet_lite0", tap="features.13+blocks.5"``, in the same order). ``options`` go to every
    :class:`CodeExtractor`."""
    # Each part keeps its own cache entries.
    parts = [CodeExtractor(get_backbone(name), part, input_size=input_size, **options) for name, part in backbone_taps(backbone, tap)]
    return parts[0] if len(parts) == 1 else ConcatExtractor(parts, across_backbones="+" in backbone)


def normalise_part(codes: np.ndarray) -> np.ndarray:
    """One backbone's codes made ready to sit beside another's: signed square root, then each row
    scaled to unit length. The square root damps the few large activations that dominate pooled
    codes (power normalisation, as for Fisher vectors and bilinear CNN codes); unit rows give each
    backbone the same say. Against plain concatenation it scored the same or better on all 6
    development sets of docs/advisor.md (digits and Fashion-MNIST, 15 to 200 per class). One
    implementation, in torch, serves this and the exported graph of a joined model."""
    return joined_signed_root(torch.as_tensor(np.asarray(codes, dtype=np.float32))).numpy()


def join_parts(parts: Sequence[np.ndarray]) -> np.ndarray:
    return np.hstack([normalise_part(p) for p in parts])


class ConcatExtractor:
    """Codes side by side: of several backbones (``backbone="mobilenet_v2+efficientnet_lite0"``),
    or of several taps of one (the advisor's ``tap="features.13+pre_logits"``).

    Different networks make different mistakes; a linear head on their joined codes is a cheap
    ensemble. Each part keeps its own preprocessing and cache (of raw codes). Codes of different
    backbones are joined by join_parts(); taps of one backbone are stacked as they are, as the
    advisor's layer sweep scored them.
    """

    def __init__(self, parts: list[CodeExtractor], *, across_backbones: bool = True):
        self.parts = parts
        self.across_backbones = across_backbones
        taps = [p.tap for p in parts]
        # Backbones' codes from the same tap (pre_logits, as always when joining backbones) name it once.
        self.tap = taps[0] if across_backbones and len(set(taps)) == 1 else "+".join(taps)
        self.preprocessing = parts[0].preprocessing
        # The joining is part of the fingerprint: a head trained on codes joined otherwise must not load.
        joined = "+".join(p.fingerprint for p in parts) + ("|signed-sqrt-l2" if across_backbones else "")
        self.fingerprint = hashlib.sha256(joined.encode()).hexdigest()[:20]

    @property
    def dim(self) -> int:
        return sum(p.dim for p in self.parts)

    def __call__(self, images: Sequence[ImageInput], *, progress: bool = False, desc: str = "features") -> Codes:
        sources = as_sources(images)  # one hash per image, whichever part needs it first
        results = [part(sources, progress=progress, desc=f"{desc} [{part.spec.name}]") for part in self.parts]
        first = results[0]
        failures: dict[int, str] = {}
        for result in results:
            failures.update(result.failures)
        return Codes(
            codes=(join_parts if self.across_backbones else np.hstack)([r.codes for r in results]),
            content_hashes=first.content_hashes,
            phashes=first.phashes,
            failures=failures,
            computed=max(r.computed for r in results),
            engine="+".join(dict.fromkeys(r.engine for r in results)),  # "cache", not "cache+cache"
        )
