"""CNN codes for a list of images: read, hash, decode, preprocess and run the backbone, streaming.

Images are read and decoded by a small thread pool (PIL releases the GIL while decoding) a bounded
window ahead of the network, so memory stays flat however many images there are. Every image is
read exactly once: its bytes give the cache key and, on a cache miss, the pixels.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

import imagehash
import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..backbones import BackboneSpec, Preprocessing
from ..data.decode import UnreadableImage, array_to_image, decode_image, to_rgb
from ..data.duplicates import phash_to_int
from .cache import FeatureCache, default_cache_dir
from .engine import create_engine

log = logging.getLogger(__name__)

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]


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


@dataclass
class _Prepared:
    index: int
    content_hash: str | None = None
    cached: np.ndarray | None = None
    tensor: torch.Tensor | None = None
    phash: int = 0
    error: str | None = None


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
        self.num_workers = num_workers or min(4, (os.cpu_count() or 2) + 1)
        self._transform = self.preprocessing.transform()
        self._engine = None

    @property
    def dim(self) -> int:
        return self.spec.taps[self.tap]

    def engine(self):
        if self._engine is None:
            self._engine = create_engine(
                self.spec,
                self.tap,
                input_size=self.preprocessing.crop,
                fingerprint=self.fingerprint,
                cache_root=self.cache_root,
                engine=self.engine_name,
                device=self.device,
            )
        return self._engine

    def __call__(self, images: Sequence[ImageInput], *, progress: bool = False, desc: str = "features") -> Codes:
        n = len(images)
        result = Codes(
            codes=np.full((n, self.dim), np.nan, dtype=np.float32),
            content_hashes=[None] * n,
            phashes=np.zeros(n, dtype=np.uint64),
        )
        pending: list[_Prepared] = []
        with tqdm(total=n, disable=not progress, unit="img", desc=desc, leave=False) as bar:
            for prepared in self._prepared_stream(images):
                result.content_hashes[prepared.index] = prepared.content_hash
                result.phashes[prepared.index] = prepared.phash
                if prepared.error is not None:
                    result.failures[prepared.index] = prepared.error
                    bar.update(1)
                elif prepared.cached is not None:
                    result.codes[prepared.index] = prepared.cached
                    bar.update(1)
                else:
                    pending.append(prepared)
                    if len(pending) == self.batch_size:
                        self._run_batch(pending, result)
                        bar.update(len(pending))
                        pending = []
            if pending:
                self._run_batch(pending, result)
                bar.update(len(pending))
        if result.computed:
            result.engine = self.engine().name
        return result

    def _run_batch(self, batch: list[_Prepared], result: Codes) -> None:
        codes = self.engine()(torch.stack([p.tensor for p in batch]))
        for prepared, row in zip(batch, codes):
            result.codes[prepared.index] = row
            if self.cache is not None and prepared.content_hash:
                self.cache.put(prepared.content_hash, row, prepared.phash)
        result.computed += len(batch)

    def _prepared_stream(self, images: Sequence[ImageInput]):
        """Yield :class:`_Prepared` items in order, with a bounded number decoding ahead."""
        window = 2 * self.batch_size
        with ThreadPoolExecutor(max_workers=self.num_workers, thread_name_prefix="headstart-decode") as pool:
            in_flight: deque = deque()
            for index, image in enumerate(images):
                in_flight.append(pool.submit(self._prepare, index, image))
                if len(in_flight) >= window:
                    yield in_flight.popleft().result()
            while in_flight:
                yield in_flight.popleft().result()

    def _prepare(self, index: int, image: ImageInput) -> _Prepared:
        prepared = _Prepared(index)
        try:
            content_hash, load = read_content(image, self.preprocessing.resize)
        except OSError as exc:
            prepared.error = f"unreadable ({exc.strerror or exc})"
            return prepared
        except (TypeError, ValueError) as exc:
            prepared.error = f"not an image ({exc})"
            return prepared
        prepared.content_hash = content_hash
        cached = self.cache.get(content_hash) if self.cache is not None else None
        if cached is not None:
            prepared.cached, prepared.phash = cached.codes, cached.phash
            return prepared
        try:
            rgb = load()
        except UnreadableImage as exc:
            prepared.error = f"unreadable ({exc})"
            return prepared
        prepared.phash = phash_to_int(imagehash.phash(rgb).hash)
        prepared.tensor = self._transform(rgb)
        return prepared


def read_content(image: ImageInput, draft_size: int):
    """Return the content hash of ``image`` and a function that decodes it to RGB."""
    if isinstance(image, (str, os.PathLike)):
        data = Path(image).read_bytes()
        return hashlib.sha256(data).hexdigest(), lambda: decode_image(data, draft_size=draft_size)
    if isinstance(image, Image.Image):
        rgb = to_rgb(image.copy())
    elif isinstance(image, np.ndarray):
        rgb = array_to_image(image)
    else:
        raise TypeError(f"expected a file path, PIL image or array, got {type(image).__name__}")
    digest = hashlib.sha256(f"{rgb.size}".encode() + rgb.tobytes()).hexdigest()
    return digest, lambda: rgb


def normalise_part(codes: np.ndarray) -> np.ndarray:
    """One backbone's codes made ready to sit beside another's: signed square root, then each row
    scaled to unit length. The square root damps the few large activations that dominate pooled
    codes (power normalisation, as for Fisher vectors and bilinear CNN codes); unit rows give each
    backbone the same say. Against plain concatenation it scored the same or better on all 6
    development sets of docs/advisor.md (digits and Fashion-MNIST, 15 to 200 per class)."""
    rooted = np.sign(codes) * np.sqrt(np.abs(codes))
    return rooted / np.maximum(np.linalg.norm(rooted, axis=1, keepdims=True), 1e-12)


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
        results = [part(images, progress=progress, desc=f"{desc} [{part.spec.name}]") for part in self.parts]
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
            engine="+".join(r.engine for r in results),
        )
