"""Several processes, on one machine or many: PyTorch's own engine, as torchrun starts it.

``torchrun --nproc-per-node N -m headstart fit ...`` (``--nnodes`` and a rendezvous endpoint for
several machines) starts N copies of headstart with RANK, WORLD_SIZE and LOCAL_RANK in their
environment; :func:`start` joins them into one process group (NCCL on CUDA, gloo on the CPU). A
fit then shares its work out: each rank computes the codes of its share of the images, the
mini-batch head and fine-tuning train with DistributedDataParallel on disjoint shares of every
epoch, and rank 0 alone searches the folder and makes the advisor's plan (each broadcast to the
others) and writes the run directory, checkpoints and report.

Every collective waits at most ``HEADSTART_COLLECTIVE_TIMEOUT`` seconds (default 600): a rank that
hangs ends the job with one line and a non-zero exit instead of a silent wait; one that dies is
seen by torchrun, which stops the others.

PyTorch is imported when a process group is joined or used, not with this module: a single process
(no launcher) asks only :func:`launched`, so the command line can check the data before PyTorch loads.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .errors import DataError

if TYPE_CHECKING:
    import torch

TIMEOUT_VARIABLE = "HEADSTART_COLLECTIVE_TIMEOUT"
DEFAULT_TIMEOUT = 600.0
PATIENT_TIMEOUT = 24 * 3600.0  # rank 0's search of a folder: 2 minutes a million images, on a slow share many times that


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one job (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def main(self) -> bool:
        """The rank that writes files and makes the advisor's plan."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1

    def describe(self) -> dict:
        """How the run was made, for metrics.json and model.json."""
        return {"world_size": self.size, "backend": self.backend}

    def share(self, n: int) -> np.ndarray:
        """This rank's share of ``n`` items: every size-th from its rank (disjoint, together all)."""
        return np.arange(self.rank, n, self.size)

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def from_main(self, make: Callable[[], Any], *, patient: bool = False) -> Any:
        """``make()`` run on rank 0 only, its result handed to every rank (an exception too:
        every rank raises it, so no rank is left waiting). ``patient``: the others wait for it
        up to PATIENT_TIMEOUT instead of the collective timeout, for work whose time grows with
        the data (searching a folder of millions of images)."""
        if not self.active:
            return make()
        import torch.distributed as dist

        group = dist.new_group(timeout=timedelta(seconds=max(PATIENT_TIMEOUT, collective_timeout()))) if patient else None
        box: list = [None]
        if self.main:
            try:
                box[0] = ("ok", make())
            except Exception as exc:  # noqa: BLE001 (re-raised on every rank below)
                box[0] = ("error", exc)
        dist.broadcast_object_list(box, src=0, group=group)
        if group is not None:
            dist.destroy_process_group(group)
        status, value = box[0]
        if status == "error":
            raise value
        return value

    def gather(self, part: Any) -> list:
        """Every rank's ``part``, in rank order, on every rank."""
        if not self.active:
            return [part]
        import torch.distributed as dist

        parts: list = [None] * self.size
        dist.all_gather_object(parts, part)
        return parts

    def sum(self, values: list[float]) -> list[float]:
        """``values`` summed over the ranks, element by element."""
        if not self.active:
            return list(values)
        import torch
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def wrap(self, module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """``module`` under DistributedDataParallel (gradients averaged over the ranks each step)."""
        if not self.active:
            return module
        import torch

        ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)


def _joined():
    """``torch.distributed`` where this process has joined a group, else None (and where PyTorch
    was never imported, no group was joined: nothing is imported to find that out)."""
    dist = sys.modules.get("torch.distributed")
    return dist if dist is not None and dist.is_available() and dist.is_initialized() else None


def current() -> World:
    """The world this process belongs to (one process unless :func:`start` joined a group)."""
    dist = _joined()
    if dist is None:
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), dist.get_backend())


def launched() -> bool:
    """Whether torchrun (or another launcher setting WORLD_SIZE) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start(device: str = "auto") -> World:
    """Join the process group torchrun describes; one process when it describes none."""
    if not launched() or _joined():
        return current()
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)  # one GPU per process, by its rank on this machine
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=collective_timeout()))
    return current()


def stop(wait: bool = True) -> None:
    """Leave the process group. ``wait=False`` after a collective failed: another rank is gone, and
    a barrier would fail again with a traceback, or wait out the collective timeout once more."""
    dist = _joined()
    if dist is not None:
        # Every rank's collectives done before any tears its connections down, as PyTorch's
        # shutdown notes advise. (It did not stop the rare SIGABRT of a rank at exit: see cmd_fit.)
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def collective_timeout() -> float:
    text = os.environ.get(TIMEOUT_VARIABLE)
    try:
        seconds = float(text) if text else DEFAULT_TIMEOUT
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise DataError(f"{TIMEOUT_VARIABLE}={text!r} must be a number of seconds above 0 (default {DEFAULT_TIMEOUT:g}).")
    return seconds
