"""The one loop that turns a list of images into network-ready batches.

Images are read and decoded by a small thread pool (PIL releases the GIL while decoding), at most
two batches ahead, so memory stays flat however many images there are. With ``prefetch`` the pool
keeps decoding while the consumer runs the network; without, each batch is decoded (in parallel),
then handed over, and nothing competes with the network for the cores: on the 2-core CPU an eager
PyTorch forward pass ran 25-40% slower with decoding alongside (the advisor's measuring pass on
hymenoptera). An image that cannot be read becomes a failure with a reason, never an exception:
one bad file does not stop the others. An image whose result a ``lookup`` already has (the feature
cache) is not decoded at all.

    batches = ImageBatches(images, transform, batch_size=32)
    for batch in batches:
        outputs[batch.indices] = network(batch.tensors)
    batches.failures  # {index: why}
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import imagehash
import numpy as np
import torch
from tqdm.auto import tqdm

from .duplicates import phash_to_int
from .images import READ_ERRORS, HashMemo, ImageSource, as_sources, describe_failure


@dataclass
class ImageBatch:
    indices: list[int]  # positions in the image list
    tensors: torch.Tensor  # (len(indices), 3, H, W)
    content_hashes: list[str | None]


@dataclass
class _Item:
    index: int
    content_hash: str | None = None
    tensor: torch.Tensor | None = None
    phash: int = 0
    cached: Any = None
    error: str | None = None


class ImageBatches:
    """Iterate once to get :class:`ImageBatch` es in order; meanwhile these fill in, per image:
    ``content_hashes``, ``phashes`` (when asked for), ``cached`` (index -> what ``lookup`` returned,
    for images that were not decoded) and ``failures`` (index -> why).

    ``hashes=False`` skips content hashing where nobody needs it (scoring a fine-tuned network).
    ``memo`` remembers and recalls file hashes across processes (see :class:`HashMemo`).
    """

    def __init__(
        self,
        images: Sequence,
        transform: Callable,
        *,
        batch_size: int,
        draft_size: int | None = None,
        hashes: bool = True,
        phash: bool = False,
        lookup: Callable[[str], Any] | None = None,
        memo: HashMemo | None = None,
        workers: int | None = None,
        prefetch: bool = False,
        progress: bool = False,
        desc: str = "images",
    ):
        self.sources: list[ImageSource] = as_sources(images)
        self.transform, self.batch_size, self.draft_size = transform, batch_size, draft_size
        self.hashes, self.phash, self.lookup, self.memo = hashes or lookup is not None, phash, lookup, memo
        self.workers = workers or min(4, (os.cpu_count() or 2) + 1)
        self.prefetch = prefetch
        self.progress, self.desc = progress, desc
        n = len(self.sources)
        self.content_hashes: list[str | None] = [None] * n
        self.phashes = np.zeros(n, dtype=np.uint64)
        self.cached: dict[int, Any] = {}
        self.failures: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.sources)

    def __iter__(self) -> Iterator[ImageBatch]:
        pending: list[_Item] = []
        with tqdm(total=len(self.sources), disable=not self.progress, unit="img", desc=self.desc, leave=False, dynamic_ncols=True) as bar:
            for item in self._prepared():
                self.content_hashes[item.index] = item.content_hash
                self.phashes[item.index] = item.phash
                if item.error is not None or item.cached is not None:
                    if item.error is not None:
                        self.failures[item.index] = item.error
                    else:
                        self.cached[item.index] = item.cached
                        bar.set_postfix_str(f"{len(self.cached)} from the cache", refresh=False)
                    bar.update(1)
                    continue
                pending.append(item)
                if len(pending) == self.batch_size:
                    yield self._batch(pending)
                    bar.update(len(pending))
                    pending = []
            if pending:
                yield self._batch(pending)
                bar.update(len(pending))
        if self.memo is not None:
            self.memo.flush()

    @staticmethod
    def _batch(items: list[_Item]) -> ImageBatch:
        return ImageBatch([i.index for i in items], torch.stack([i.tensor for i in items]), [i.content_hash for i in items])

    def _prepared(self) -> Iterator[_Item]:
        """Items in order: decoded ahead while the consumer works (prefetch), or a batch at a time."""
        if len(self.sources) == 1:  # a query: starting threads would cost more than they save
            yield self._prepare(0, self.sources[0])
            return
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="headstart-decode") as pool:
            if not self.prefetch:
                for first in range(0, len(self.sources), self.batch_size):
                    yield from pool.map(self._prepare, range(first, first + self.batch_size), self.sources[first : first + self.batch_size])
                return
            window = 2 * self.batch_size
            in_flight: deque = deque()
            for index, source in enumerate(self.sources):
                in_flight.append(pool.submit(self._prepare, index, source))
                if len(in_flight) >= window:
                    yield in_flight.popleft().result()
            while in_flight:
                yield in_flight.popleft().result()

    def _prepare(self, index: int, source: ImageSource) -> _Item:
        item = _Item(index)
        try:
            known = source.known_hash(self.memo) if self.hashes else None
            if known is not None and self._hit(item, known):
                return item
            opened = source.open(self.memo)  # the only read of this image in this pass
            if self.hashes:
                item.content_hash = opened.content_hash
                if known is None and self._hit(item, item.content_hash):
                    return item
            rgb = opened.rgb(self.draft_size)
        except READ_ERRORS as exc:
            item.error = describe_failure(exc)
            return item
        if self.phash:
            item.phash = phash_to_int(imagehash.phash(rgb).hash)
        item.tensor = self.transform(rgb)
        return item

    def _hit(self, item: _Item, content_hash: str) -> bool:
        item.content_hash = content_hash
        if self.lookup is not None:
            item.cached = self.lookup(content_hash)
        return item.cached is not None
