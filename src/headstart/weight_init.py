"""How filters start: initialisation schemes by name, for any model or layer.

``initialize(module, scheme)`` re-draws the weight of every convolution and linear layer inside
``module`` (biases to zero; BatchNorm back to scale 1, shift 0 and fresh statistics) from the
scheme's distribution. Fan-in and fan-out follow the usual definitions: for a linear layer, its
input and output widths; for a convolution, (input channels / groups) x kernel height x kernel
width, and output channels x kernel height x kernel width. ``"pretrained"`` keeps the weights as
they are: build the module from pretrained weights to use it.

| scheme           | distribution                                  | std                         |
|------------------|-----------------------------------------------|-----------------------------|
| uniform_fan_in   | U[-1/fan_in, 1/fan_in] (the classic recipe)   | 1 / (sqrt(3) fan_in)        |
| lecun_normal     | N(0, 1/fan_in)                                | 1 / sqrt(fan_in)            |
| glorot_uniform   | U[-a, a], a = sqrt(6 / (fan_in + fan_out))    | sqrt(2 / (fan_in + fan_out))|
| glorot_normal    | N(0, 2 / (fan_in + fan_out))                  | sqrt(2 / (fan_in + fan_out))|
| he_uniform       | U[-a, a], a = sqrt(6 / fan_in)                | sqrt(2 / fan_in)            |
| he_normal        | N(0, 2 / fan_in)                              | sqrt(2 / fan_in)            |
| orthogonal       | rows (or columns) of a random orthogonal matrix | 1 / sqrt(max(fan_out_channels, fan_in)) |
"""

from __future__ import annotations

import copy
import dataclasses
import math

import torch
from torch import nn

from .backbones.spec import BackboneSpec
from .errors import HeadstartError

SCHEMES = ("uniform_fan_in", "lecun_normal", "glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "orthogonal", "pretrained")
WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a linear (out, in) or convolution (out, in / groups, *kernel) weight."""
    if weight.ndim < 2:
        raise HeadstartError(f"fan-in needs a weight of 2 or more dimensions, got shape {tuple(weight.shape)}.")
    receptive = math.prod(weight.shape[2:])
    return weight.shape[1] * receptive, weight.shape[0] * receptive


def expected(scheme: str, weight_shape: tuple[int, ...]) -> dict:
    """The scheme's theoretical bound (None for unbounded distributions) and standard deviation."""
    check_scheme(scheme)
    fan_in, fan_out = fans(torch.empty(weight_shape, device="meta"))
    if scheme == "uniform_fan_in":
        return {"bound": 1 / fan_in, "std": 1 / (math.sqrt(3) * fan_in)}
    if scheme == "lecun_normal":
        return {"bound": None, "std": 1 / math.sqrt(fan_in)}
    if scheme in ("glorot_uniform", "glorot_normal"):
        std = math.sqrt(2 / (fan_in + fan_out))
        return {"bound": math.sqrt(3) * std if scheme == "glorot_uniform" else None, "std": std}
    if scheme in ("he_uniform", "he_normal"):
        std = math.sqrt(2 / fan_in)
        return {"bound": math.sqrt(3) * std if scheme == "he_uniform" else None, "std": std}
    if scheme == "orthogonal":
        # The flattened (out, fan_in) matrix has orthonormal rows (or columns): each row (column)
        # has unit norm, so its entries have mean square 1 / row length (column length).
        return {"bound": 1.0, "std": 1 / math.sqrt(max(weight_shape[0], fan_in))}
    return {"bound": None, "std": None}  # pretrained: whatever training left


def check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        import difflib

        close = difflib.get_close_matches(scheme, SCHEMES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise HeadstartError(f"unknown initialisation {scheme!r}.{hint} Known: {', '.join(SCHEMES)}.")


@torch.no_grad()
def init_weight(weight: torch.Tensor, scheme: str, generator: torch.Generator | None = None) -> None:
    """Draw ``weight`` in place from ``scheme``."""
    spec = expected(scheme, tuple(weight.shape))
    if scheme == "pretrained":
        return
    if scheme == "orthogonal":
        flat = weight.reshape(weight.shape[0], -1)
        rows, cols = flat.shape
        q, r = torch.linalg.qr(torch.randn(max(rows, cols), min(rows, cols), generator=generator))
        q = q * torch.sign(torch.diagonal(r))  # a uniformly random orthogonal matrix (Mezzadri 2007)
        flat.copy_(q if rows > cols else q.T)
        return
    if spec["bound"] is not None:
        weight.copy_(torch.rand(weight.shape, generator=generator) * 2 * spec["bound"] - spec["bound"])
    else:
        weight.copy_(torch.randn(weight.shape, generator=generator) * spec["std"])


@torch.no_grad()
def initialize(module: nn.Module, scheme: str, *, seed: int | None = 0) -> nn.Module:
    """Re-initialise every convolution and linear layer in ``module`` (itself included) with
    ``scheme`` and zero biases; BatchNorm layers go back to scale 1, shift 0 and fresh running
    statistics. ``"pretrained"`` leaves the module as it is. Returns ``module``."""
    check_scheme(scheme)
    if scheme == "pretrained":
        return module
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    for layer in module.modules():
        if isinstance(layer, WEIGHTED):
            init_weight(layer.weight, scheme, generator)
            if layer.bias is not None:
                layer.bias.zero_()
        elif isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.reset_parameters()
    return module


def with_init(spec: BackboneSpec, scheme: str, seed: int = 0) -> BackboneSpec:
    """``spec``'s architecture with every layer re-initialised by ``scheme`` (``NAME@SCHEME`` in
    :func:`~headstart.get_backbone`): its codes are random features, cached apart from the
    pretrained ones."""
    check_scheme(scheme)
    if scheme == "pretrained":
        return spec
    return dataclasses.replace(
        spec,
        name=f"{spec.name}@{scheme}",
        build=lambda: initialize(spec.build(), scheme, seed=seed).eval(),
        weights_id=f"{spec.weights_id}@{scheme}-seed{seed}",
        source=f"{spec.source}, re-initialised ({scheme}, seed {seed})",
        categories=None,  # its classifier is random: no ImageNet head to ask
    )


def init_table(module: nn.Module, scheme: str, *, seed: int = 0) -> list[dict]:
    """Per layer of ``module`` re-initialised with ``scheme``: fans, the theoretical bound and
    standard deviation, and the observed min, max and standard deviation. ``module`` is copied,
    never changed; with ``"pretrained"`` the table describes it as it is."""
    model = initialize(copy.deepcopy(module), scheme, seed=seed)
    rows = []
    for name, layer in model.named_modules():
        if isinstance(layer, WEIGHTED):
            w = layer.weight.detach().float()
            fan_in, fan_out = fans(w)
            theory = expected(scheme, tuple(w.shape))
            rows.append(
                {
                    "layer": name,
                    "shape": list(w.shape),
                    "fan_in": fan_in,
                    "fan_out": fan_out,
                    "bound": theory["bound"],
                    "expected_std": theory["std"],
                    "min": float(w.min()),
                    "max": float(w.max()),
                    "std": float(w.std()),
                }
            )
    return rows


def first_filters(module: nn.Module, schemes: tuple[str, ...] = SCHEMES, *, seed: int = 0) -> dict[str, list]:
    """The first convolution's filters under each scheme ("pretrained": as ``module`` holds them)."""
    first = next((layer for layer in module.modules() if isinstance(layer, nn.Conv2d)), None)
    if first is None:
        return {}
    return {scheme: initialize(copy.deepcopy(first), scheme, seed=seed).weight.detach().float().numpy().round(5).tolist() for scheme in schemes}
