"""Parameter groups for discriminative learning rates, read off the backbone's block structure.

The backbone spec lists its block groups from input to output (``features.0`` ... ``features.18``).
Each parameter belongs to the group whose name prefix matches; the new head is a group of its own.
Learning rates fall from the head down through the blocks, either in one step (``lr_mult``: the
whole backbone at head_lr / lr_mult) or geometrically (``layer_decay``: block g of G learns at
head_lr * decay ** (G - g)). Weight decay applies to weight matrices and kernels only: decaying
biases and normalisation scales towards zero only hurts.
"""

from __future__ import annotations

from collections import defaultdict

from torch import nn

from ..backbones import BackboneSpec

HEAD = "head"


def block_index(name: str, block_groups: tuple[str, ...]) -> int | None:
    """Index of the block group ``name`` (a parameter or module name inside the backbone) belongs to."""
    best, best_length = None, -1
    for index, prefix in enumerate(block_groups):
        if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_length:
            best, best_length = index, len(prefix)
    return best


def backbone_blocks(spec: BackboneSpec) -> tuple[str, ...]:
    """The spec's block groups that hold backbone parameters (the ImageNet classifier is replaced)."""
    classifier_root = spec.classifier.split(".")[0]
    return tuple(group for group in spec.block_groups if group != classifier_root)


def param_groups(
    net: nn.Module,
    spec: BackboneSpec,
    *,
    head_lr: float,
    lr_mult: float = 10.0,
    layer_decay: float | None = None,
    weight_decay: float = 1e-4,
) -> list[dict]:
    """Optimizer parameter groups for a :class:`~headstart.strategies.finetune.FineTuneNet`.

    Every parameter is included, frozen or not: freezing is ``requires_grad=False``, so unfreezing
    later (gradual unfreezing) needs no new optimizer.
    """
    blocks = backbone_blocks(spec)
    grouped: dict[tuple[str, bool], list] = defaultdict(list)
    lrs: dict[str, float] = {HEAD: head_lr}
    for name, parameter in net.named_parameters():
        if name.startswith("backbone."):
            inner = name.removeprefix("backbone.").removeprefix("model.")
            index = block_index(inner, blocks)
            index = 0 if index is None else index  # stray parameters learn as slowly as the stem
            key = blocks[index] if blocks else "backbone"
            if layer_decay is not None:
                lrs[key] = head_lr * layer_decay ** (len(blocks) - index)
            else:
                lrs[key] = head_lr / lr_mult
        else:
            key = HEAD
        grouped[(key, parameter.ndim > 1)].append(parameter)
    return [
        {"params": params, "lr": lrs[key], "weight_decay": weight_decay if decays else 0.0, "name": f"{key}{'' if decays else ' (no decay)'}"}
        for (key, decays), params in grouped.items()
    ]
