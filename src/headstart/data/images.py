"""The one way headstart opens an image: its content hash first, then its pixels, from one read.

An input is a file path, a PIL image, an array or a tensor. :class:`ImageSource` wraps one and remembers its
SHA-256 content hash (the key of every cache) once known, so that the advisor, extraction and
fine-tuning, which each pass over the same images, hash each one once. Opening a file reads it
once: the same bytes give the hash and, when asked, the decoded RGB image.

A :class:`HashMemo` remembers the hashes of files across processes, by path, size, times and inode,
so that a warm fit knows every hash without reading a single file. An entry is trusted only when
the file's last change (its ctime) is older than the hashing by more than :data:`RACY_SECONDS`: a
file rewritten within the clock's granularity of being hashed could otherwise keep its size and
times with other content (git's "racy clean" problem, solved the same way).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Union

import numpy as np
from PIL import Image

from .._atomic import cache_write_failed, write_text
from .decode import UnreadableImage, array_to_image, channels_last, decode_image, open_file, to_rgb

log = logging.getLogger(__name__)

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]  # or a torch tensor, CHW or HWC
# What opening or decoding an image input can raise; describe_failure() words each for a person.
READ_ERRORS = (OSError, UnreadableImage, TypeError, ValueError)
# A file changed this recently before it was hashed may change again without its size or times
# showing it (mtime granularity is up to 2 s on FAT and some network filesystems).
RACY_SECONDS = 2.0


def describe_failure(exc: BaseException) -> str:
    """Why an image could not be used, in the words every report shows."""
    if isinstance(exc, UnreadableImage):
        return f"unreadable ({exc})"
    if isinstance(exc, OSError):
        return f"unreadable ({exc.strerror or exc})"
    return f"not an image ({exc})"


def _read_file(path: Path) -> bytes:
    """Every file headstart decodes or hashes is read here (tests count the calls)."""
    return path.read_bytes()


def _content_hash(data: bytes) -> str:
    """Every image's content hash is computed here: the key of the feature cache, the plan cache
    and the duplicate report (tests count the calls)."""
    return hashlib.sha256(data).hexdigest()


@dataclass
class OpenedImage:
    """One read of an image input: its content hash (computed on first use) and its pixels."""

    _content: bytes | None  # a file's bytes; None for in-memory images
    _rgb: Image.Image | None = None
    _hash: str | None = None
    _on_hash: Callable[[str], None] | None = field(default=None, repr=False)

    @property
    def content_hash(self) -> str:
        if self._hash is None:
            if self._content is not None:
                self._hash = _content_hash(self._content)
            else:  # the pixels and their size: the same image always hashes the same
                self._hash = _content_hash(f"{self._rgb.size}".encode() + self._rgb.tobytes())
            if self._on_hash is not None:
                self._on_hash(self._hash)
        return self._hash

    def rgb(self, draft_size: int | None = None) -> Image.Image:
        """The decoded RGB image; ``draft_size`` lets JPEG decoding skip detail a resize to that
        size would drop. Raises UnreadableImage for a truncated, corrupt or oversized file."""
        if self._content is not None:
            return decode_image(self._content, draft_size=draft_size)
        return self._rgb


class ImageSource:
    """An image input whose content hash, once known, is remembered."""

    __slots__ = ("image", "_hash")

    def __init__(self, image: ImageInput):
        self.image = _channels_last(image) if isinstance(image, np.ndarray) or _is_tensor(image) else image
        self._hash: str | None = None

    @property
    def path(self) -> Path | None:
        return Path(self.image).expanduser() if isinstance(self.image, (str, os.PathLike)) else None  # '~/a.jpg' is the home folder's, as on a shell

    def __repr__(self) -> str:
        return f"ImageSource({self.image!r})" if self.path else f"ImageSource(<{type(self.image).__name__}>)"

    def known_hash(self, memo: HashMemo | None = None) -> str | None:
        """The content hash if it is known without reading a file: remembered, in the memo, or
        (for an in-memory image) computed from the pixels. None otherwise."""
        if self._hash is None:
            if self.path is None:
                return self.open().content_hash if isinstance(self.image, (Image.Image, np.ndarray)) else None
            if memo is not None:
                self._hash = memo.get(self.path)
        return self._hash

    def open(self, memo: HashMemo | None = None) -> OpenedImage:
        """Read the input once (raises OSError, TypeError or ValueError); the hash it gives is
        remembered here and, for files, in ``memo``."""
        path = self.path
        if path is not None:
            started = time.time_ns()
            content = _read_file(path)

            def remember(digest: str) -> None:
                self._hash = digest
                if memo is not None:
                    memo.put(path, digest, started)

            return OpenedImage(content, _hash=self._hash, _on_hash=remember)
        if isinstance(self.image, Image.Image):
            rgb = to_rgb(self.image.copy())
        elif isinstance(self.image, np.ndarray):
            rgb = array_to_image(self.image)
        else:
            raise TypeError(f"expected a file path, PIL image, array or tensor, got {type(self.image).__name__}")
        return OpenedImage(None, rgb, _hash=self._hash, _on_hash=self._remember)

    def rgb(self, draft_size: int | None = None, memo: HashMemo | None = None) -> Image.Image:
        """Read and decode the input (one read)."""
        return self.open(memo).rgb(draft_size)

    def pixel_size(self) -> tuple[int, int] | None:
        """Width and height, for a file from its header alone (the first few kB: no decoding, and
        not the one read that hashes and decodes it); None when it cannot be read."""
        if isinstance(self.image, Image.Image):
            return self.image.size
        if isinstance(self.image, np.ndarray):
            return (self.image.shape[1], self.image.shape[0]) if self.image.ndim >= 2 else None
        if self.path is None:
            return None
        try:
            with open_file(self.path) as header:
                return header.size
        except (*READ_ERRORS, Image.DecompressionBombError):  # PIL's UnidentifiedImageError is an OSError
            return None

    def _remember(self, digest: str) -> None:
        self._hash = digest


def _is_tensor(image) -> bool:
    """A torch tensor (or any array library's), told by duck typing so this layer needs no torch."""
    return hasattr(image, "detach") and hasattr(image, "numpy")


def _channels_last(image) -> np.ndarray:
    """An array or tensor as HxW or HxWxC (so that its pixel size reads right before decoding)."""
    return channels_last(image.detach().cpu().numpy() if _is_tensor(image) else image)


def as_source(image: ImageInput | ImageSource) -> ImageSource:
    return image if isinstance(image, ImageSource) else ImageSource(image)


def as_sources(images) -> list[ImageSource]:
    return [as_source(image) for image in images]


class HashMemo:
    """Content hashes of files, remembered under ``root/hashes`` as one JSON file per folder.

    Entries are validated against the file's size, mtime, ctime and inode at every lookup, and
    written atomically, so several processes (or machines on shared storage) can share one memo:
    at worst an entry another process wrote at the same moment is lost, and that file is hashed again.
    """

    def __init__(self, root: Path):
        self.directory = Path(root) / "hashes"
        self._folders: dict[Path, dict[str, list]] = {}
        self._dirty: set[Path] = set()
        self._lock = threading.Lock()

    def get(self, path: Path) -> str | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        path = Path(path).absolute()
        with self._lock:
            entry = self._folder(path.parent).get(path.name)
        if entry is None or entry[:4] != _signature(st):
            return None
        hashed_at, digest = entry[4], entry[5]
        if st.st_ctime_ns + RACY_SECONDS * 1e9 > hashed_at:
            return None  # the file changed too close to its hashing to vouch for it
        return digest

    def put(self, path: Path, digest: str, hashed_at: int) -> None:
        """Remember ``digest`` for ``path`` as read from time ``hashed_at`` (ns) on."""
        path = Path(path).absolute()
        try:
            st = os.stat(path)
        except OSError:
            return
        with self._lock:
            self._folder(path.parent)[path.name] = [*_signature(st), hashed_at, digest]
            self._dirty.add(path.parent)

    def flush(self) -> None:
        """Write the folders that gained entries, merged with what other processes wrote meanwhile."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            for folder in dirty:
                merged = {**self._load(folder), **self._folders[folder]}
                try:
                    write_text(self._file(folder), json.dumps({"folder": str(folder), "files": merged}))
                except OSError as exc:  # a read-only cache costs hashing next time, nothing else
                    cache_write_failed(self.directory.parent, exc)
                    return

    def _folder(self, folder: Path) -> dict[str, list]:
        if folder not in self._folders:
            self._folders[folder] = self._load(folder)
        return self._folders[folder]

    def _file(self, folder: Path) -> Path:
        key = hashlib.sha256(os.fsencode(folder)).hexdigest()
        return self.directory / key[:2] / f"{key[:32]}.json"

    def _load(self, folder: Path) -> dict[str, list]:
        try:
            stored = json.loads(self._file(folder).read_text(encoding="utf-8"))
            return stored["files"] if stored.get("folder") == str(folder) else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}  # damaged: its files are hashed again and the entry rewritten


def _signature(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


_MEMOS: dict[Path, HashMemo] = {}
_MEMOS_LOCK = threading.Lock()


def hash_memo(root: Path) -> HashMemo:
    """The process's memo for the cache folder ``root`` (one per folder, shared by every pass)."""
    root = Path(root).absolute()
    with _MEMOS_LOCK:
        if root not in _MEMOS:
            _MEMOS[root] = HashMemo(root)
        return _MEMOS[root]


def unreadable_files(paths: list[Path], *, draft_size: int | None = None, desc: str = "checking") -> dict[Path, str]:
    """Every file of ``paths`` that cannot be decoded, with why: one full decode of each, in threads
    (PIL releases the GIL while decoding), so that one pass finds them all."""
    from concurrent.futures import ThreadPoolExecutor

    from ..progress import bar

    def failure(path: Path) -> str | None:
        try:
            ImageSource(path).rgb(draft_size)
        except READ_ERRORS as exc:
            return describe_failure(exc)
        return None

    with ThreadPoolExecutor(max_workers=min(4, (os.cpu_count() or 2) + 1)) as pool:
        reasons = list(bar(pool.map(failure, paths), total=len(paths), desc=desc, unit="img"))
    return {path: why for path, why in zip(paths, reasons) if why is not None}
