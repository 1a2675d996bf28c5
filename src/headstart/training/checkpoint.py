"""Checkpoints: everything a fine-tuning run needs to continue exactly where it stopped.

One safetensors file per checkpoint (tensors: the network, the optimizer's moments, the best
epoch's weights, every rank's random generator state; metadata: epoch, history, early-stopping counters,
the run's identity), written atomically after every epoch. Loading reads tensors and JSON only.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .._atomic import atomic_path
from ..errors import HeadstartError
from .loop import EarlyStopping, History

CHECKPOINT_FILE = "last.safetensors"


def save_checkpoint(
    path: Path,
    *,
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    early_stopping: EarlyStopping,
    history: History,
    generator: torch.Generator,
    identity: dict,
    rng_states: list[torch.Tensor] | None = None,
) -> None:
    """``rng_states``: every rank's torch generator state, in rank order (default: this process's)."""
    tensors = {f"net.{k}": v for k, v in net.state_dict().items()}
    optimizer_state = optimizer.state_dict()
    for index, state in optimizer_state["state"].items():
        for key, value in state.items():
            tensors[f"opt.{index}.{key}"] = torch.as_tensor(value)
    if early_stopping.best_state is not None:
        tensors |= {f"best.{k}": v for k, v in early_stopping.best_state.items()}
    for rank, state in enumerate(rng_states or [torch.get_rng_state()]):
        tensors[f"rng.torch.{rank}"] = state
    tensors["rng.loader"] = generator.get_state()  # the same on every rank
    meta = {
        "identity": identity,
        "epoch": len(history.records),
        "history": history.to_dict(),
        "optimizer_groups": optimizer_state["param_groups"],
        "early_stopping": {
            "best_loss": early_stopping.best_loss,
            "best_epoch": early_stopping.best_epoch,
            "epochs_without_improvement": early_stopping.epochs_without_improvement,
        },
    }
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}, str(tmp), metadata={"headstart": json.dumps(meta)})


def restore_checkpoint(
    path: Path,
    *,
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    early_stopping: EarlyStopping,
    generator: torch.Generator,
    identity: dict,
    rank: int = 0,
) -> tuple[int, History]:
    """Load the state saved at ``path`` into the given objects (and rank ``rank``'s random state
    into torch's generator); returns (epochs done, history)."""
    if not path.is_file():
        raise HeadstartError(f"nothing to resume: no checkpoint at {path}; run fit without --resume.")
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["headstart"])
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    if meta["identity"] != identity:
        changed = sorted(k for k in identity if meta["identity"].get(k) != identity[k])
        raise HeadstartError(
            f"the checkpoint in {path.parent} is from a different run (changed: {', '.join(changed)}); "
            "resume with the same data and settings, or fit again without --resume."
        )
    net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer_groups"]})
    stopping = meta["early_stopping"]
    early_stopping.best_loss = stopping["best_loss"]
    early_stopping.best_epoch = stopping["best_epoch"]
    early_stopping.epochs_without_improvement = stopping["epochs_without_improvement"]
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    early_stopping.best_state = best or None
    torch.set_rng_state(tensors.get(f"rng.torch.{rank}", tensors.get("rng.torch", torch.get_rng_state())))  # "rng.torch": older files
    generator.set_state(tensors["rng.loader"])
    saved = meta["history"]
    history = History.from_dict(saved)
    return meta["epoch"], history


def run_identity(config, n_classes: int, n_images: int, weights_id: str) -> dict:
    """What must match for a checkpoint to be continued: settings that shape the run, the data."""
    settings = {k: v for k, v in asdict(config).items() if k not in ("progress", "num_workers", "device", "time_limit")}
    return json.loads(json.dumps({**settings, "n_classes": n_classes, "n_images": n_images, "weights": weights_id}))
