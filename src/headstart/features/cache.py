"""On-disk cache of CNN codes, one small file per (backbone tap, image content).

Keys are content hashes, so renaming or moving an image keeps its entry, and editing it does not.
Each entry is written to a temporary file and renamed into place: a killed run or two runs writing
the same entry at once can only leave whole entries (or stray temporaries, which are never read).

An entry is raw little-endian bytes: the image's 64-bit perceptual hash, then its codes as float32.
Reading one is a single small read, which keeps a fully cached fit dominated by hashing the images.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._atomic import atomic_path

log = logging.getLogger(__name__)

_PHASH = np.dtype("<u8")
_CODES = np.dtype("<f4")


def default_cache_dir() -> Path:
    """``$HEADSTART_CACHE`` if set, else the platform's user cache folder."""
    env = os.environ.get("HEADSTART_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("headstart"))


@dataclass(frozen=True)
class CachedCodes:
    codes: np.ndarray  # (d,) float32
    phash: int  # 64-bit perceptual hash of the decoded image


class FeatureCache:
    """Codes of width ``dim`` for one fingerprint, under ``root/features/<fingerprint>``."""

    def __init__(self, fingerprint: str, dim: int, root: Path | None = None):
        self.dim = dim
        self.root = Path(root) if root is not None else default_cache_dir()
        self.directory = self.root / "features" / fingerprint

    def _path(self, content_hash: str) -> Path:
        return self.directory / content_hash[:2] / f"{content_hash}.codes"

    def get(self, content_hash: str) -> CachedCodes | None:
        path = self._path(content_hash)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot read cache entry %s: %s", path, exc)
            return None
        if len(data) != _PHASH.itemsize + self.dim * _CODES.itemsize:
            # Only possible if something outside headstart damaged the file: recompute it.
            log.warning("ignoring damaged cache entry %s", path)
            return None
        phash = int(np.frombuffer(data, _PHASH, count=1)[0])
        return CachedCodes(np.frombuffer(data, _CODES, offset=_PHASH.itemsize).copy(), phash)

    def put(self, content_hash: str, codes: np.ndarray, phash: int) -> None:
        path = self._path(content_hash)
        payload = np.array([phash], _PHASH).tobytes() + np.asarray(codes, _CODES).tobytes()
        try:
            with atomic_path(path) as tmp:
                tmp.write_bytes(payload)
        except OSError as exc:  # a full or read-only cache must not stop a fit
            log.warning("could not write cache entry %s: %s", path, exc)
