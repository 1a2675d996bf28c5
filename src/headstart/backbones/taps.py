"""Cut a backbone at a named tap: a module mapping an image batch to one code vector per image."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import BackboneError, HeadstartError
from .hooks import LayerCapture
from .spec import FORWARD_FEATURES, PRE_LOGITS, BackboneSpec, Preprocessing


def global_pool(out: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) maps averaged to (N, C) codes; codes pass unchanged."""
    return out.mean(dim=(2, 3)) if out.ndim == 4 else out


class PreLogitsTap(nn.Module):
    """The network with its ImageNet classifier replaced by Identity: what reached it are the codes."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return global_pool(self.model(x))


class ModuleTap(nn.Module):
    """The pooled output of one named module, captured with a forward hook.

    A hook works for any architecture (FX tracing does not: timm's "same" padding branches on input
    size). The layers after the tap still run in eager mode; graph exports drop them as dead code.
    """

    def __init__(self, model: nn.Module, tap: str):
        super().__init__()
        self.model = model
        self.tap = tap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with LayerCapture(self.model, [self.tap]) as seen:
            self.model(x)
        return global_pool(seen[self.tap])


class MultiTap(nn.Module):
    """Several taps of one network side by side (``"features.13+pre_logits"``), from one pass."""

    def __init__(self, model: nn.Module, taps: list[str]):
        super().__init__()
        self.model = model  # its classifier already replaced by Identity
        self.taps = taps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with LayerCapture(self.model, [tap for tap in self.taps if tap != PRE_LOGITS]) as seen:
            seen[PRE_LOGITS] = self.model(x)
        return torch.cat([global_pool(seen[tap]) for tap in self.taps], dim=1)


class FeatureMapTap(nn.Module):
    """The last spatial feature map, unpooled (N, C, H, W): what global pooling would reduce to the
    codes, for a head that pools it another way. Same parameters and state as :class:`PreLogitsTap`."""

    def __init__(self, model: nn.Module, feature_map: str):
        super().__init__()
        self.model = model
        self.feature_map = feature_map

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.feature_map == FORWARD_FEATURES:
            return self.model.forward_features(x)
        with LayerCapture(self.model, [self.feature_map]) as seen:
            self.model(x)
        return seen[self.feature_map]


def _without_classifier(spec: BackboneSpec, model: nn.Module) -> nn.Module:
    parent_name, _, child = spec.classifier.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, nn.Identity())
    return model


def build_tap_model(spec: BackboneSpec, tap: str, model: nn.Module | None = None) -> nn.Module:
    """Return an eval-mode module computing the codes at ``tap`` of ``spec``'s network; taps joined
    by ``+`` give their codes side by side."""
    if "+" in tap:
        taps = tap.split("+")
        for part in taps:
            spec.require_tap(part)
        return MultiTap(_without_classifier(spec, model if model is not None else spec.build()), taps).eval()
    spec.require_tap(tap)
    model = model if model is not None else spec.build()
    if tap == PRE_LOGITS:
        return PreLogitsTap(_without_classifier(spec, model)).eval()
    return ModuleTap(model, tap).eval()


def backbone_taps(backbone: str, tap: str | None) -> list[tuple[str, str | None]]:
    """(backbone, tap) of each part of codes joined by "+": one backbone at one or several taps,
    or several backbones, each at the one tap given or at its own (as many taps as backbones, in
    their order: ``"mobilenet_v2+efficientnet_lite0"`` at ``"features.13+blocks.5"``)."""
    names = backbone.split("+")
    taps = tap.split("+") if tap else [None]
    if len(names) > 1 and len(taps) == len(names):
        return list(zip(names, taps))
    return [(name, part) for name in names for part in taps]


def joined_signed_root(codes: torch.Tensor) -> torch.Tensor:
    """One backbone's codes made ready to sit beside another's: signed square root, unit rows
    (why: headstart.features.extract.normalise_part, which calls this)."""
    rooted = torch.sign(codes) * torch.sqrt(torch.abs(codes))
    return rooted / torch.clamp(torch.linalg.vector_norm(rooted, dim=1, keepdim=True), min=1e-12)


class JoinedCodes(nn.Module):
    """Several backbones' codes side by side from one input tensor, joined as the feature
    extractor joins them. The input is prepared for the first backbone; every other one takes it
    re-normalised for itself, ``(x * std_1 + mean_1 - mean_k) / std_k``, which is exact where the
    backbones' preparations differ only in mean and std."""

    def __init__(self, parts: list[nn.Module], preprocessings: list[Preprocessing]):
        super().__init__()
        first = preprocessings[0]
        for other in preprocessings[1:]:
            if {**other.to_dict(), "mean": first.mean, "std": first.std} != first.to_dict():
                raise HeadstartError(
                    "these backbones resize, crop or scale their inputs differently, so one input tensor cannot feed them all; use one backbone."
                )
        self.parts = nn.ModuleList(parts)
        std, mean = torch.tensor([p.std for p in preprocessings]), torch.tensor([p.mean for p in preprocessings])
        self.register_buffer("scales", (std[0] / std).view(-1, 1, 3, 1, 1))
        self.register_buffer("shifts", ((mean[0] - mean) / std).view(-1, 1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([joined_signed_root(part(x * self.scales[i] + self.shifts[i])) for i, part in enumerate(self.parts)], dim=1)


def build_joined_model(specs: list[BackboneSpec], taps: list[str], preprocessings: list[Preprocessing]) -> JoinedCodes:
    """The codes of several backbones, each at its tap, joined, from the first one's input."""
    return JoinedCodes([build_tap_model(spec, tap) for spec, tap in zip(specs, taps)], preprocessings).eval()


def build_feature_map_model(spec: BackboneSpec) -> FeatureMapTap:
    """Return an eval-mode module computing ``spec``'s last feature map, before global pooling."""
    if spec.feature_map is None:
        raise BackboneError(f"backbone {spec.name} does not name its last feature map; use pooling='avg' with it.")
    return FeatureMapTap(_without_classifier(spec, spec.build()), spec.feature_map).eval()
