"""On-disk cache of CNN codes, one small file per (backbone tap, image content).

Keys are content hashes, so renaming or moving an image keeps its entry, and editing it does not.
Each entry is written to a temporary file and renamed into place: a killed run or two runs writing
the same entry at once can only leave whole entries (or stray temporaries, which are never read).
"""

from __future__ import annotations

import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._atomic import atomic_path

log = logging.getLogger(__name__)


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
    """Codes for one backbone/tap/preprocessing fingerprint, under ``root/features/<fingerprint>``."""

    def __init__(self, fingerprint: str, root: Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.directory = self.root / "features" / fingerprint

    def _path(self, content_hash: str) -> Path:
        return self.directory / content_hash[:2] / f"{content_hash}.npz"

    def get(self, content_hash: str) -> CachedCodes | None:
        path = self._path(content_hash)
        try:
            with np.load(path, allow_pickle=False) as entry:
                return CachedCodes(entry["codes"], int(entry["phash"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            # Only possible if something outside headstart damaged the file: recompute it.
            log.warning("ignoring damaged cache entry %s", path)
            return None

    def put(self, content_hash: str, codes: np.ndarray, phash: int) -> None:
        path = self._path(content_hash)
        try:
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, codes=np.asarray(codes, dtype=np.float32), phash=np.uint64(phash))
        except OSError as exc:  # a full or read-only cache must not stop a fit
            log.warning("could not write cache entry %s: %s", path, exc)
