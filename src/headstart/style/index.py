"""A style index over a folder of images: compact sketches in memory, exact re-ranking on demand.

VGG19's five style Grams hold ~306,000 numbers per image (1.2 MB in float32), so 100,000 images
cannot be held, or even stored, as they are. The index keeps a count sketch of each image's
weighted Gram vectors (signed feature hashing, the sparse Johnson-Lindenstrauss transform: every
coordinate is added with a random sign to one of ``dim`` buckets). Its squared distances are
unbiased estimates of the style distance, with a relative spread of about sqrt(2 / dim), 4% at the
default 1,024 buckets; 10,000 images take 41 MB. A query ranks every sketch, then recomputes the
exact Grams of the best few candidates from their files and re-ranks those by the true distance.

On disk: INDEX/index.json (settings, files with size, mtime and content hash) and
INDEX/sketches.safetensors, written atomically; loading runs no code. Re-indexing a folder only
describes files that are new or whose content changed.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file
from scipy import sparse
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from .._atomic import atomic_directory
from .._version import __version__
from ..data.dataset import classify_file, files_under
from ..data.decode import FORMATS_IN_WORDS
from ..data.images import ImageInput, ImageSource
from ..errors import DataError, ModelFileError
from ..hardware import check_precision
from .descriptors import (
    DEFAULT_STYLE_BACKBONE,
    DEFAULT_STYLE_SIZE,
    StyleDescriptors,
    StyleExtractor,
    display_name,
    layer_weights,
    style_distance,
)

INDEX_JSON = "index.json"
SKETCH_FILE = "sketches.safetensors"
INDEX_FORMAT = 1
DEFAULT_SKETCH_DIM = 1024
UPDATE_CHUNK = 128  # images described at a time while indexing


@dataclass(frozen=True)
class StyleSettings:
    """What a style descriptor means; an index answers only queries described the same way."""

    backbone: str = DEFAULT_STYLE_BACKBONE
    layers: tuple[str, ...] = ()  # empty: the backbone's defaults
    input_size: int = DEFAULT_STYLE_SIZE
    temperature: float | None = None
    weights: tuple[float, ...] | None = None
    sketch_dim: int = DEFAULT_SKETCH_DIM
    seed: int = 0
    precision: str = "auto"  # "auto": bf16 where the hardware has it natively (see StyleNetwork)

    def __post_init__(self):
        check_precision(self.precision)

    def extractor(self, **kwargs) -> StyleExtractor:
        return StyleExtractor(self.backbone, self.layers or None, input_size=self.input_size, temperature=self.temperature,
                              precision=self.precision, **kwargs)


class CountSketch:
    """Signed hashing of weighted Gram vectors into ``dim`` buckets: E|S(a) - S(b)|^2 equals the
    style distance sum_l w_l |a_l - b_l|^2. The hash is regenerated from ``seed``, never stored."""

    def __init__(self, sizes: Sequence[int], weights: np.ndarray, dim: int, seed: int):
        rng = np.random.default_rng(seed)
        self.dim = dim
        self.matrices = []
        for size, weight in zip(sizes, weights):
            buckets = rng.integers(0, dim, size=size)
            signs = rng.choice(np.array([-1.0, 1.0]), size=size) * np.sqrt(weight)
            self.matrices.append(sparse.csr_matrix((signs, (np.arange(size), buckets)), shape=(size, dim)))

    def __call__(self, vectors: list[np.ndarray]) -> np.ndarray:
        out = np.zeros((vectors[0].shape[0], self.dim))
        for matrix, v in zip(self.matrices, vectors):
            out += np.asarray(matrix.T @ v.astype(np.float64).T).T
        return out.astype(np.float32)


@dataclass
class Entry:
    path: str  # relative to the indexed folder, with forward slashes
    size: int
    mtime_ns: int
    sha256: str


@dataclass
class Match:
    path: Path
    distance: float
    exact: bool  # False: the sketch's estimate (not re-ranked, or the file could not be re-read)
    note: str = ""


@dataclass
class UpdateReport:
    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    seconds: float = 0.0

    def summary(self) -> str:
        skipped = f", {len(self.skipped)} skipped (not images or unreadable)" if self.skipped else ""
        return f"{self.added} added, {self.changed} changed, {self.removed} removed, {self.unchanged} unchanged{skipped} in {self.seconds:.1f} s"


def _file_hash(path: Path) -> str:
    return ImageSource(path).open().content_hash


def scan_folder(root: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """Image files under ``root`` (recursively, sorted) and the files passed over, with why."""
    images, skipped = [], []
    for path in files_under(root):
        reason = classify_file(path)
        if reason is None:
            images.append(path)
        elif not path.name.startswith("."):
            skipped.append((str(path.relative_to(root)), reason))
    return images, skipped


class StyleIndex:
    """Sketches of every image under one folder, and the settings that made them."""

    def __init__(self, root: Path, settings: StyleSettings, entries: list[Entry], sketches: np.ndarray, layers: tuple[str, ...], sizes: tuple[int, ...]):
        self.root = Path(root)
        self.settings = settings
        self.entries = entries
        self.sketches = sketches
        self.layers = layers  # resolved module names
        self.sizes = sizes  # Gram-vector length per layer
        self._extractor: StyleExtractor | None = None
        self._sketch: CountSketch | None = None
        self._norms: np.ndarray | None = None  # squared norms of the sketches, for the scan

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def extractor(self) -> StyleExtractor:
        if self._extractor is None:
            self._extractor = self.settings.extractor()
        return self._extractor

    @property
    def sketch(self) -> CountSketch:
        if self._sketch is None:
            weights = layer_weights(self.layers, self.settings.weights)
            self._sketch = CountSketch(self.sizes, weights, self.settings.sketch_dim, self.settings.seed)
        return self._sketch

    # -- building ------------------------------------------------------------------------------

    @classmethod
    def build(cls, folder: str | os.PathLike, settings: StyleSettings | None = None, *, progress: bool = False,
              checkpoint: Callable[["StyleIndex"], None] | None = None, checkpoint_every: float = 60.0) -> tuple["StyleIndex", UpdateReport]:
        """Index every image under ``folder`` (``checkpoint`` as in :meth:`update`)."""
        root = Path(folder).expanduser().resolve()
        if not root.is_dir():
            raise DataError(f"{folder} is not a folder; give the folder of images to index.")
        settings = settings or StyleSettings()
        extractor = settings.extractor()
        sizes = tuple(c * (c + 1) // 2 for c in extractor.network.channels)
        index = cls(root, settings, [], np.zeros((0, settings.sketch_dim), np.float32), extractor.layers, sizes)
        index._extractor = extractor
        return index, index.update(progress=progress, checkpoint=checkpoint, checkpoint_every=checkpoint_every)

    def update(self, *, progress: bool = False, checkpoint: Callable[["StyleIndex"], None] | None = None,
               checkpoint_every: float = 60.0) -> UpdateReport:
        """Bring the index up to date with its folder: describe new and changed files, drop removed ones.

        ``checkpoint(self)`` is called every ``checkpoint_every`` seconds with the index as far as it
        has got (files not reached yet are simply absent), so an interrupted run resumes where the
        last checkpoint left off: those files are new to the next update."""
        start = time.perf_counter()
        report = UpdateReport()
        files, report.skipped = scan_folder(self.root)
        known = {e.path: (e, row) for row, e in enumerate(self.entries)}
        keep_entries, keep_rows, todo = [], [], []
        for path in files:
            rel = path.relative_to(self.root).as_posix()
            stat = path.stat()
            old = known.pop(rel, None)
            if old and (old[0].size, old[0].mtime_ns) == (stat.st_size, stat.st_mtime_ns):
                keep_entries.append(old[0])
                keep_rows.append(old[1])
                report.unchanged += 1
                continue
            # A known file with a new size or mtime is hashed first: if only touched, it is not
            # described again. A new file's hash comes from describing it (one read, not two).
            digest = _file_hash(path) if old else ""
            if old and old[0].sha256 == digest:  # touched, not changed
                keep_entries.append(Entry(rel, stat.st_size, stat.st_mtime_ns, digest))
                keep_rows.append(old[1])
                report.unchanged += 1
                continue
            todo.append((path, Entry(rel, stat.st_size, stat.st_mtime_ns, digest), old is not None))
        report.removed = len(known)

        kept_sketches = self.sketches[keep_rows]
        new_entries, new_sketches = [], []
        last_checkpoint = time.perf_counter()
        with tqdm(total=len(todo), disable=not progress or not todo, unit="img", desc="style index", leave=False) as bar:
            # In chunks: one image's Gram vectors take 1.2 MB (VGG19), its sketch 4 kB.
            for first in range(0, len(todo), UPDATE_CHUNK):
                chunk = todo[first : first + UPDATE_CHUNK]
                described = self.extractor([str(p) for p, _, _ in chunk])
                ok = [i for i in range(len(chunk)) if i not in described.failures]
                report.skipped += [(chunk[i][1].path, why) for i, why in described.failures.items()]
                if ok:
                    new_sketches.append(self.sketch([v[ok] for v in described.vectors]))
                    new_entries += [replace(chunk[i][1], sha256=described.content_hashes[i]) for i in ok]
                    report.changed += sum(chunk[i][2] for i in ok)
                bar.update(len(chunk))
                if checkpoint and time.perf_counter() - last_checkpoint > checkpoint_every and first + UPDATE_CHUNK < len(todo):
                    self._set(keep_entries + new_entries, [kept_sketches, *new_sketches])
                    checkpoint(self)
                    last_checkpoint = time.perf_counter()
        report.added = len(new_entries) - report.changed
        self._set(keep_entries + new_entries, [kept_sketches, *new_sketches])
        report.seconds = time.perf_counter() - start
        return report

    def _set(self, entries: list[Entry], sketch_blocks: list[np.ndarray]) -> None:
        self.entries = entries
        self.sketches = np.concatenate(sketch_blocks).astype(np.float32)
        self._norms = None

    # -- querying ------------------------------------------------------------------------------

    def describe(self, images: Sequence[ImageInput]) -> StyleDescriptors:
        return describe_readable(self.extractor, images)

    def search(self, image: ImageInput, k: int = 5, *, rerank: int | None = None) -> list[Match]:
        """The ``k`` indexed images closest in style to ``image``. The ``rerank`` best by sketch
        (default 2k) are re-described from their files and ordered by the exact distance; 0 skips that."""
        if not self.entries:
            raise DataError("the style index is empty; index a folder with images first.")
        if k < 1:
            raise DataError(f"k must be at least 1, got {k}.")
        query = self.describe([image])
        estimates = self.sketch_distances(self.sketch(query.vectors)[0])
        rerank = 2 * k if rerank is None else rerank
        shortlist = _smallest(estimates, max(k, rerank))
        if rerank <= 0:
            return [Match(self.root / self.entries[i].path, float(estimates[i]), exact=False) for i in shortlist[:k]]
        matches = self._exact(query, shortlist, estimates)
        return sorted(matches, key=lambda m: m.distance)[:k]

    def sketch_distances(self, query_sketch: np.ndarray) -> np.ndarray:
        """Estimated style distance from one sketch to every indexed image."""
        # One BLAS thread: a matrix-vector product gains nothing from more, and idle OpenBLAS threads
        # spin for a while after each call, stealing both cores from the next forward pass.
        with threadpool_limits(limits=1, user_api="blas"):
            if self._norms is None or len(self._norms) != len(self.sketches):
                self._norms = np.einsum("ij,ij->i", self.sketches, self.sketches)
            diff_sq = self._norms - 2 * (self.sketches @ query_sketch) + query_sketch @ query_sketch
        return np.maximum(diff_sq, 0.0)

    def _exact(self, query: StyleDescriptors, rows: np.ndarray, estimates: np.ndarray) -> list[Match]:
        paths = [self.root / self.entries[i].path for i in rows]
        described = self.extractor([str(p) for p in paths])
        weights = layer_weights(self.layers, self.settings.weights)
        matches = []
        for j, (row, path) in enumerate(zip(rows, paths)):
            if j in described.failures:
                matches.append(Match(path, float(estimates[row]), exact=False, note="could not be re-read; sketch estimate"))
                continue
            distance, _ = style_distance([q[0] for q in query.vectors], [v[j] for v in described.vectors], weights)
            if query.content_hashes and described.content_hashes[j] == query.content_hashes[0]:
                distance = 0.0  # the same pixels: what is left is rounding, which varies with the batch (3e-16 on some CPUs)
            stale = described.content_hashes[j] != self.entries[row].sha256
            matches.append(Match(path, distance, exact=True, note="changed since indexed" if stale else ""))
        return matches

    # -- persistence ---------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory).expanduser()
        meta = {
            "format": INDEX_FORMAT,
            "headstart": __version__,
            "root": str(self.root),
            "settings": asdict(self.settings),
            "layers": list(self.layers),
            "sizes": list(self.sizes),
            "entries": [asdict(e) for e in self.entries],
        }
        with atomic_directory(directory, (INDEX_JSON, SKETCH_FILE), "style index") as staging:
            (staging / INDEX_JSON).write_text(json.dumps(meta), encoding="utf-8")
            save_file({"sketches": np.ascontiguousarray(self.sketches, dtype=np.float32)}, str(staging / SKETCH_FILE))
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "StyleIndex":
        directory = Path(directory).expanduser()
        try:
            meta = json.loads((directory / INDEX_JSON).read_text(encoding="utf-8"))
            sketches = load_file(str(directory / SKETCH_FILE))["sketches"]
        except FileNotFoundError:
            raise ModelFileError(f"{directory} is not a style index; make one with: headstart style index DIR -o {directory}") from None
        except (ValueError, KeyError, OSError, SafetensorError) as exc:
            raise ModelFileError(f"{directory} holds a damaged style index ({exc}); rebuild it with: headstart style index DIR -o {directory}") from None
        if not isinstance(meta, dict) or meta.get("format") != INDEX_FORMAT:
            version = meta.get("headstart") if isinstance(meta, dict) else None
            raise ModelFileError(f"{directory} was written by an incompatible headstart ({version}); rebuild it with headstart style index.")
        try:
            raw = meta["settings"]
            settings = StyleSettings(**{**raw, "layers": tuple(raw["layers"]), "weights": tuple(raw["weights"]) if raw["weights"] else None})
            entries = [Entry(**e) for e in meta["entries"]]
            layers, sizes = tuple(meta["layers"]), tuple(int(n) for n in meta["sizes"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{directory} holds a damaged style index ({exc!r}); rebuild it with: headstart style index DIR -o {directory}") from None
        if sketches.shape != (len(entries), settings.sketch_dim):
            raise ModelFileError(f"{directory}: {sketches.shape[0]} sketches for {len(entries)} files; rebuild it with headstart style index.")
        return cls(Path(meta["root"]), settings, entries, sketches, layers, sizes)


@contextmanager
def writing_lock(directory: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock for writing the index at ``directory``: a second ``style index`` on the
    same INDEX fails at once instead of silently throwing the first one's work away. The lock file
    sits beside the folder, which saving replaces as a whole."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f".{directory.name}.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataError(f"another headstart is writing {directory}; wait for it to finish, then run again.") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def describe_readable(extractor: StyleExtractor, images: Sequence[ImageInput]) -> StyleDescriptors:
    """Descriptors of ``images``, every one of which must be readable (a query, a comparison)."""
    described = extractor(list(images))
    if described.failures:
        index, why = next(iter(described.failures.items()))
        raise DataError(f"cannot read {images[index]}: {why}; give a {FORMATS_IN_WORDS} image.")
    return described


def _smallest(values: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` smallest values, in increasing order."""
    count = min(count, len(values))
    part = np.argpartition(values, count - 1)[:count]
    return part[np.argsort(values[part], kind="stable")]


def style_compare(a: ImageInput, b: ImageInput, settings: StyleSettings | None = None) -> tuple[float, list[tuple[str, float]]]:
    """Style distance between two images, and each layer's (unweighted) term."""
    settings = settings or StyleSettings()
    extractor = settings.extractor()
    described = describe_readable(extractor, [a, b])
    weights = layer_weights(extractor.layers, settings.weights)
    total, per_layer = style_distance([v[0] for v in described.vectors], [v[1] for v in described.vectors], weights)
    return total, [(display_name(settings.backbone, layer), d) for layer, d in zip(extractor.layers, per_layer)]
