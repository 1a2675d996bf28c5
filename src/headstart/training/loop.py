"""The training loop, as plain functions: no global state, the sampler and model passed in.

One epoch: the strategy sets which parameters train (``set_train_mode``), the loader's sampler is
told the epoch (balanced or distributed samplers reseed by it), then forward, loss, backward,
step, and the learning-rate schedule per step. After each epoch the validation split is scored;
:class:`EarlyStopping` keeps the weights of the best validation loss and stops after ``patience``
epochs without improvement.
"""

from __future__ import annotations

import math
import time
from functools import partial
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import distributed
from ..progress import announce
from ..hardware import autocast


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    learning_rates: dict[str, float]  # at the end of the epoch, per parameter group
    trainable_parameters: int
    seconds: float


@dataclass
class History:
    records: list[EpochRecord] = field(default_factory=list)
    best_epoch: int | None = None  # whose weights the model holds after training
    stopped_early: bool = False
    time_bound: int | None = None  # the epochs a deadline left room for, when fewer than asked

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        """The history :meth:`to_dict` gave (as read back from JSON)."""
        return cls([EpochRecord(**r) for r in d["records"]], d["best_epoch"], d["stopped_early"], d.get("time_bound"))

    def __str__(self) -> str:
        """One line per epoch, as fine-tuning printed them, the kept one marked."""
        return "\n".join(epoch_line("", r, None, best=r.epoch == self.best_epoch) for r in self.records)

    def __repr__(self) -> str:
        # The dataclass's own repr gave every epoch's learning rate of every parameter group.
        kept = self.kept()
        scores = f", val accuracy {kept.val_accuracy:.1%}" if kept is not None and kept.val_accuracy is not None else ""
        return f"History({len(self.records)} epochs, kept epoch {kept.epoch if kept else None}{scores}, stopped early: {self.stopped_early}; print() it for every epoch)"

    def kept(self) -> EpochRecord | None:
        """The record of the epoch whose weights the model holds (the last one without early stopping)."""
        if not self.records:
            return None
        return self.records[(self.best_epoch or len(self.records)) - 1]


class EarlyStopping:
    """Remember the weights of the lowest validation loss; say stop after ``patience`` worse epochs."""

    def __init__(self, patience: int = 4, min_delta: float = 1e-4):
        self.patience = patience
        self.min_delta = min_delta
        self.best_loss = math.inf
        self.best_epoch: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.epochs_without_improvement = 0

    def update(self, epoch: int, val_loss: float, net: nn.Module) -> bool:
        """Record this epoch; True when training should stop."""
        if val_loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_epoch = val_loss, epoch
            self.best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
        return self.epochs_without_improvement >= self.patience

    def restore(self, net: nn.Module) -> None:
        if self.best_state is not None:
            net.load_state_dict(self.best_state)


def _mixup_pairs(n: int, alpha: float, device: torch.device) -> tuple[float, torch.Tensor | None]:
    """The mixing share (Beta(alpha, alpha)) and a random partner for every image of a batch."""
    if alpha <= 0 or n < 2:
        return 1.0, None
    share = float(torch.distributions.Beta(alpha, alpha).sample())
    return share, torch.randperm(n, device=device)


def _train_epoch(net, optimizer, batches, criterion, lr_factor, step: int, device, bf16: bool, mixup: float) -> tuple[float, int, int]:
    """One pass over the training batches, from global step ``step``: summed loss, correct, count."""
    total_loss, correct, count = 0.0, 0, 0
    for images, labels in batches:
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * lr_factor(step)
        images, labels = images.to(device), labels.to(device)
        share, partner = _mixup_pairs(len(labels), mixup, device)
        if partner is not None:
            images = share * images + (1 - share) * images[partner]
        with autocast(device, bf16):
            logits = net(images)
        loss = criterion(logits.float(), labels)
        if partner is not None:
            loss = share * loss + (1 - share) * criterion(logits.float(), labels[partner])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        total_loss += float(loss.detach()) * len(labels)
        correct += int((logits.argmax(1) == labels).sum())
        count += len(labels)
    return total_loss, correct, count


@torch.no_grad()
def evaluate(net: nn.Module, loader, criterion: nn.Module, device: torch.device, *, bf16: bool = False) -> tuple[float, float]:
    """Mean loss and accuracy of ``net`` over ``loader``."""
    net.eval()
    total_loss, correct, count = 0.0, 0, 0
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        with autocast(device, bf16):
            logits = net(images)
        total_loss += float(criterion(logits.float(), labels)) * len(labels)
        correct += int((logits.argmax(1) == labels).sum())
        count += len(labels)
    return total_loss / count, correct / count


def train(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_loader,
    *,
    epochs: int,
    criterion: nn.Module,
    lr_factor: Callable[[int, int], float],
    val_loader=None,
    set_train_mode: Callable[[nn.Module, int], None] | None = None,
    early_stopping: EarlyStopping | None = None,
    device: torch.device = torch.device("cpu"),
    bf16: bool = False,
    progress: bool = False,
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
    mixup: float = 0.0,
    start_epoch: int = 0,
    history: History | None = None,
    deadline: float | None = None,
    wrap: Callable[[nn.Module], nn.Module] | None = None,
    name: str | None = None,
) -> History:
    """Train ``net`` for up to ``epochs``; returns the per-epoch history.

    ``lr_factor(step, total_steps)`` multiplies every group's initial learning rate (see
    :func:`~headstart.training.warmup_cosine`). With ``early_stopping`` and a ``val_loader``, the
    model ends with the weights of its best validation loss. ``mixup`` > 0 trains on convex
    mixtures of image pairs with the same mixture of their labels (Zhang et al. 2018). ``on_epoch_end`` runs after each
    epoch's bookkeeping (a checkpoint written there holds the whole state); ``start_epoch`` and
    ``history`` continue a run restored from such a checkpoint. ``deadline`` (a ``time.perf_counter()``
    value) shortens the schedule to the epochs that fit (:func:`_epochs_that_fit`), so the rate has
    decayed when time runs out. ``wrap(net)`` gives the module the steps run through (DDP under
    several processes). With a ``name``, each epoch ends with one line while progress is on.
    """
    world = distributed.current()
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])  # restored with the optimizer's state on resume
    history = history if history is not None else History()
    planned = epochs
    for epoch in range(start_epoch, epochs):
        start = time.perf_counter()
        (set_train_mode or (lambda n, _e: n.train()))(net, epoch)
        _set_epoch(train_loader, net, epoch)
        bar = tqdm(train_loader, disable=not progress, desc=f"epoch {epoch + 1}/{epochs}", leave=False, unit="batch", dynamic_ncols=True)
        sums = _train_epoch(wrap(net) if wrap else net, optimizer, bar, criterion, partial(_bound, lr_factor, planned * len(train_loader)), epoch * len(train_loader), device, bf16, mixup)
        total_loss, correct, count = world.sum(list(sums))  # every rank's share of the epoch
        val_loss, val_accuracy = evaluate(net, val_loader, criterion, device, bf16=bf16) if val_loader is not None else (None, None)
        record = _record(epoch, total_loss / count, correct / count, val_loss, val_accuracy, optimizer, net, start)
        history.records.append(record)
        stop = early_stopping is not None and val_loss is not None and early_stopping.update(epoch + 1, val_loss, net)
        if name is not None:
            announce(epoch_line(name, record, planned, best=early_stopping is not None and early_stopping.best_epoch == epoch + 1))
        if on_epoch_end is not None:
            on_epoch_end(record)
        if deadline is not None:
            planned = _epochs_that_fit(deadline, epoch, start_epoch, epochs, record.seconds, history, name, world)
        if world.sum([float(stop)])[0] > 0 or epoch + 1 >= planned:  # one decision for every rank
            history.stopped_early = epoch + 1 < epochs
            break
    return _keep_best(net, history, early_stopping)


def _bound(lr_factor: Callable[[int, int], float], total_steps: int, step: int) -> float:
    return lr_factor(step, total_steps)


def _epochs_that_fit(deadline: float, epoch: int, start_epoch: int, epochs: int, seconds: float, history: History, name: str | None, world) -> int:
    """The schedule's length after ``epoch`` (0-based): the epochs that still fit before ``deadline``
    at ``seconds`` an epoch, at most ``epochs``; sets ``history.time_bound``. Rank 0's clock
    decides, so every rank keeps one schedule."""
    fits = world.from_main(lambda: epoch + 1 + int(max(0.0, deadline - time.perf_counter()) // max(seconds, 1e-6)))
    if epoch == start_epoch and fits > epoch + 1:
        fits = epochs  # the first epoch pays for warming up (6-8 s against 3-4 s after): pace is judged from the next
    if fits < epochs and history.time_bound is None and name is not None:
        announce(f"{name}: about {max(fits, epoch + 1)} of {epochs} epochs fit in the time left; the learning rate's schedule is shortened to end there")
    planned = max(epoch + 1, min(fits, epochs))
    history.time_bound = planned if planned < epochs else None
    return planned


def epoch_line(name: str, record: EpochRecord, epochs: int | None, best: bool = False) -> str:
    """``fine-tuning epoch 3/12: train loss 0.412 acc 86.2% | held-out loss 0.388 acc 88.0% | lr 1.0e-03 | 12.4 s``
    (the learning rate is the largest group's: the head's); without ``name`` and ``epochs``,
    ``epoch 3: ...``. "held-out", not "val": a dataset's own val split is scored after the fit, and
    hymenoptera's epochs read "val ... acc 100.0%" above "val accuracy 90.8% on 153 images"."""
    which = f"{name} epoch {record.epoch}".lstrip() + (f"/{epochs}" if epochs else "")
    parts = [f"{which}: train loss {record.train_loss:.3f} acc {record.train_accuracy:.1%}"]
    if record.val_loss is not None:
        parts.append(f"held-out loss {record.val_loss:.3f} acc {record.val_accuracy:.1%}" + (" (best)" if best else ""))
    parts.append(f"lr {max(record.learning_rates.values()):.1e}")
    parts.append(f"{record.seconds:.1f} s")
    return " | ".join(parts)


def _set_epoch(loader, net: nn.Module, epoch: int) -> None:
    """Tell everything that draws per epoch which epoch this is: the sampler (its order), the
    dataset (its augmentation) and modules such as BatchDropout (their masks)."""
    for part in (loader.sampler, loader.dataset, *net.modules()):
        if hasattr(part, "set_epoch"):
            part.set_epoch(epoch)


def _record(epoch, train_loss, train_accuracy, val_loss, val_accuracy, optimizer, net, start) -> EpochRecord:
    return EpochRecord(
        epoch + 1, train_loss, train_accuracy, val_loss, val_accuracy,
        learning_rates={group.get("name", str(i)): group["lr"] for i, group in enumerate(optimizer.param_groups)},
        trainable_parameters=sum(p.numel() for p in net.parameters() if p.requires_grad),
        seconds=time.perf_counter() - start,
    )


def _keep_best(net: nn.Module, history: History, early_stopping: EarlyStopping | None) -> History:
    """End with the best validation epoch's weights (the last epoch's without early stopping)."""
    if early_stopping is not None and early_stopping.best_state is not None:
        early_stopping.restore(net)
        history.best_epoch = early_stopping.best_epoch
    else:
        history.best_epoch = len(history.records)
    return history
