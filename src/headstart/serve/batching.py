"""Dynamic batching: concurrent requests' images are run through the model together.

One worker task takes the first waiting image, gathers whatever else is waiting and, while other
requests are still being decoded, what arrives within ``max_wait`` seconds (up to ``max_batch``);
it runs the batch in one thread of its own, so the event loop keeps accepting and decoding requests
meanwhile, and under load the next batch fills while this one runs. A lone request does not wait
for company that is not coming (1 client: 9.4 ms a request, 17 ms when it waited; docs/benchmarks.md). The
queue is bounded by the number of images waiting or running: past it, ``submit`` refuses at once
(the server answers 429) instead of letting memory grow with the backlog, as TorchServe and Triton
do.

Each image carries the model it was prepared for, so a reload that swaps the model mid-stream never
runs an image through a graph with another input size: a batch is split by model.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np


class QueueFull(Exception):
    """More images are waiting than the queue holds."""


@dataclass
class _Waiting:
    model: object  # a ServedModel: its runner answers for this image
    row: np.ndarray  # (3, H, W) float32
    answer: asyncio.Future


class Batcher:
    def __init__(self, *, max_batch: int = 32, max_wait: float = 0.005, max_queue: int = 256, on_batch: Callable[[int], None] | None = None):
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait, max_queue
        self.on_batch = on_batch or (lambda size: None)
        self.pending = 0  # images queued or running
        self.preparing = 0  # requests admitted and being read or decoded: images on their way
        self._queue: asyncio.Queue[_Waiting] = asyncio.Queue()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="headstart-batch")
        self._worker: asyncio.Task | None = None

    @contextmanager
    def coming(self) -> Iterator[None]:
        """Around a request's reading and decoding: the worker waits for its images only meanwhile."""
        self.preparing += 1
        try:
            yield
        finally:
            self.preparing -= 1

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        """After the server has drained its requests: nothing is waiting any more."""
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._thread.shutdown(wait=True)

    async def submit(self, model, rows: list[np.ndarray]) -> list[tuple[np.ndarray, float | None]]:
        """Each row's probabilities and novelty score; all of a request's images are admitted or none."""
        if self.pending + len(rows) > self.max_queue:
            raise QueueFull(f"{self.pending} images are waiting (the queue holds {self.max_queue}); retry shortly")
        loop = asyncio.get_running_loop()
        waiting = [_Waiting(model, row, loop.create_future()) for row in rows]
        self.pending += len(waiting)
        for item in waiting:
            self._queue.put_nowait(item)
        try:
            return await asyncio.gather(*(item.answer for item in waiting))
        finally:
            for item in waiting:  # a timed-out request's images are skipped by the worker
                item.answer.cancel()

    async def _work(self) -> None:
        while True:
            batch = await self._gather()
            try:
                await self._run(batch)
            finally:
                self.pending -= len(batch)

    async def _gather(self) -> list[_Waiting]:
        """The first waiting image and what else is there; if that is not a full batch and other
        requests are on their way, what else arrives within ``max_wait`` (under load the queue fills
        while the previous batch runs, so full batches go without waiting)."""
        batch = [await self._queue.get()]
        self._take_waiting(batch)
        if len(batch) < self.max_batch and self.max_wait > 0 and self.preparing > 0:
            await asyncio.sleep(self.max_wait)
            self._take_waiting(batch)
        return batch

    def _take_waiting(self, batch: list[_Waiting]) -> None:
        while len(batch) < self.max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())

    async def _run(self, batch: list[_Waiting]) -> None:
        live = [item for item in batch if not item.answer.done()]
        by_model: dict[int, list[_Waiting]] = {}
        for item in live:
            by_model.setdefault(id(item.model), []).append(item)
        loop = asyncio.get_running_loop()
        for items in by_model.values():
            self.on_batch(len(items))
            try:
                probabilities, novelty = await loop.run_in_executor(self._thread, items[0].model.runner, np.stack([i.row for i in items]))
            except Exception as exc:  # the graph failed: every image of the batch gets the error
                for item in items:
                    if not item.answer.done():
                        item.answer.set_exception(exc)
                continue
            for k, item in enumerate(items):
                if not item.answer.done():
                    item.answer.set_result((probabilities[k], None if novelty is None else float(novelty[k])))
