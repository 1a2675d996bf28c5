"""On-disk cache of CNN codes, per (backbone tap, image content), in append-only packs.

Keys are content hashes, so renaming or moving an image keeps its entry, and editing it does not.

Layout: ``features/<fingerprint>/packs/<writer>.pack`` holds fixed-size records (the image's 64-bit
perceptual hash, a CRC-32 of the record, its codes as float32) and ``<writer>.keys`` the 32-byte
content hash of each record, in the same order. Every cache object that writes gets a pack of its
own (named by host, process and a random part), so any number of processes and machines can share
one cache on shared storage with no locks: nobody else ever writes a writer's files. A reader
indexes every pack's keys and reads each record where its key says; a record counts once both its
bytes and its key are whole, so a writer killed mid-record leaves a tail that is never read, and the
CRC drops a damaged record, which is then computed again.

Why packs: at 100,000 entries, one small file per entry (the layout before, still read) took 350 to
630 us an entry to write (a temporary file, a flush, a rename) and 19 to 92 us to read; a pack
11 us to write and 9 to 16 us to read (benchmarks/bench_cache.py).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
import weakref
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._atomic import cache_write_failed

log = logging.getLogger(__name__)

_PHASH = np.dtype("<u8")
_CODES = np.dtype("<f4")
_KEY_BYTES = 32  # a SHA-256 content hash
# How often a lookup that misses looks for records other processes have written since.
RESCAN_SECONDS = 1.0
OPEN_PACKS = 16  # packs kept open for reading


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
    """Codes of width ``dim`` for one fingerprint, under ``root/features/<fingerprint>``. Safe to
    use from several threads."""

    def __init__(self, fingerprint: str, dim: int, root: Path | None = None):
        self.dim = dim
        self.root = Path(root) if root is not None else default_cache_dir()
        self.directory = self.root / "features" / fingerprint
        self.packs = self.directory / "packs"
        self._record = np.dtype([("phash", _PHASH), ("crc", "<u4"), ("codes", _CODES, (dim,))])
        self._index: dict[bytes, tuple[str, int]] = {}  # content hash -> (pack, row)
        self._indexed: dict[str, int] = {}  # pack -> rows indexed
        self._open: dict[str, int] = {}  # pack -> an open descriptor, least recently used first
        self._scanned_at = -float("inf")
        self._writer: _Writer | None = None
        self._unwritable = False
        self._lock = threading.Lock()
        weakref.finalize(self, _close_descriptors, self._open)

    def get(self, content_hash: str) -> CachedCodes | None:
        key = bytes.fromhex(content_hash)
        with self._lock:
            where = self._index.get(key)
            if where is None and time.monotonic() - self._scanned_at > RESCAN_SECONDS:
                self._scan()
                where = self._index.get(key)
            record = self._read(*where) if where is not None else None
        if record is None:
            return self._get_file(content_hash) if where is None else None
        if _crc(record["phash"], record["codes"]) != int(record["crc"]):
            log.warning("ignoring damaged cache record for %s in %s", content_hash, self.packs)
            return None
        return CachedCodes(np.array(record["codes"], dtype=np.float32), int(record["phash"]))

    def put(self, content_hash: str, codes: np.ndarray, phash: int) -> None:
        codes = np.asarray(codes, _CODES)
        record = np.zeros(1, self._record)
        record["phash"], record["codes"], record["crc"] = phash, codes, _crc(np.uint64(phash), codes)
        key = bytes.fromhex(content_hash)
        with self._lock:
            if self._unwritable:
                return
            try:
                if self._writer is None or self._writer.pid != os.getpid():  # a forked child writes its own pack
                    self._writer = _Writer(self.packs)
                row = self._writer.append(record.tobytes(), key)
            except OSError as exc:  # a full or read-only cache must not stop a fit...
                cache_write_failed(self.root, exc)
                self._unwritable = True  # ...and a half-written record must not shift the ones after it
                return
            self._index[key] = (self._writer.name, row)

    def _scan(self) -> None:
        """Index the records of every pack written since the last scan (the caller holds the lock)."""
        self._scanned_at = time.monotonic()
        try:
            names = [p.name[: -len(".keys")] for p in os.scandir(self.packs) if p.name.endswith(".keys")]
        except OSError:
            return
        for name in names:
            try:
                rows = min(os.path.getsize(self.packs / f"{name}.keys") // _KEY_BYTES, os.path.getsize(self.packs / f"{name}.pack") // self._record.itemsize)
                done = self._indexed.get(name, 0)
                if rows <= done:
                    continue
                with open(self.packs / f"{name}.keys", "rb") as f:
                    f.seek(done * _KEY_BYTES)
                    keys = f.read((rows - done) * _KEY_BYTES)
            except OSError:
                continue
            for row in range(done, rows):
                self._index[keys[(row - done) * _KEY_BYTES : (row - done + 1) * _KEY_BYTES]] = (name, row)
            self._indexed[name] = rows

    def _read(self, name: str, row: int) -> np.void | None:
        # pread on a few open packs, not a memory map per pack: a cache filled by a thousand fits
        # would hold a thousand file descriptors.
        try:
            fd = self._open.pop(name, None)
            if fd is None:
                fd = os.open(self.packs / f"{name}.pack", os.O_RDONLY)
            self._open[name] = fd  # the most recently used last
            while len(self._open) > OPEN_PACKS:
                os.close(self._open.pop(next(iter(self._open))))
            data = os.pread(fd, self._record.itemsize, row * self._record.itemsize)
        except OSError as exc:
            log.warning("cannot read cache pack %s: %s", name, exc)
            return None
        return np.frombuffer(data, self._record)[0] if len(data) == self._record.itemsize else None

    def _get_file(self, content_hash: str) -> CachedCodes | None:
        """An entry of the layout before packs: one file of perceptual hash and codes."""
        path = self.directory / content_hash[:2] / f"{content_hash}.codes"
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if len(data) != _PHASH.itemsize + self.dim * _CODES.itemsize:
            log.warning("ignoring damaged cache entry %s", path)
            return None
        phash = int(np.frombuffer(data, _PHASH, count=1)[0])
        return CachedCodes(np.frombuffer(data, _CODES, offset=_PHASH.itemsize).copy(), phash)


class _Writer:
    """This process's pack: records appended, then their keys (so a key never runs ahead of its record)."""

    def __init__(self, packs: Path):
        packs.mkdir(parents=True, exist_ok=True)
        self.pid = os.getpid()
        self.name = f"{socket.gethostname()}-{self.pid}-{uuid.uuid4().hex[:12]}"
        self._records = open(packs / f"{self.name}.pack", "ab")
        self._keys = open(packs / f"{self.name}.keys", "ab")
        self.rows = 0
        weakref.finalize(self, _close, self._records, self._keys)

    def append(self, record: bytes, key: bytes) -> int:
        self._records.write(record)
        self._records.flush()  # visible to other processes now, record before key
        self._keys.write(key)
        self._keys.flush()
        self.rows += 1
        return self.rows - 1


def _close_descriptors(descriptors: dict[str, int]) -> None:
    for fd in descriptors.values():
        os.close(fd)


def _close(*files) -> None:
    for f in files:
        f.close()


def _crc(phash, codes: np.ndarray) -> int:
    return zlib.crc32(np.asarray(codes, _CODES).tobytes(), zlib.crc32(np.asarray(phash, _PHASH).tobytes()))
