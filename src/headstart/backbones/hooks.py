"""The one hook helper: see what named layers of a network put out, or take in, during forward passes.

Forward hooks work for any architecture, where FX tracing does not (timm's "same" padding branches
on the input size).

    with LayerCapture(model, outputs=["features.13"]) as seen:
        model(batch)
    seen["features.13"]

``stop_when_complete=True`` ends the forward pass as soon as every named layer has been seen (the
layers after them are not run); ``on_value`` replaces storing with a callback (to accumulate
statistics over many passes, say).
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn


class _Complete(Exception):
    """Raised from a hook to end a pass whose remaining layers nobody needs."""


class LayerCapture(dict):
    """A dict of the latest value seen at each named layer, filled while the context is open."""

    def __init__(
        self,
        model: nn.Module,
        outputs: Iterable[str] = (),
        inputs: Iterable[str] = (),
        *,
        keep: Callable[[torch.Tensor], torch.Tensor] | None = None,
        on_value: Callable[[str, torch.Tensor], None] | None = None,
        stop_when_complete: bool = False,
    ):
        super().__init__()
        self.model = model
        self.outputs, self.inputs = list(outputs), list(inputs)
        self.keep = keep
        self.on_value = on_value
        self.stop_when_complete = stop_when_complete
        self._handles: list = []

    def _seen(self, name: str, value: torch.Tensor) -> None:
        value = self.keep(value) if self.keep is not None else value
        if self.on_value is not None:
            self.on_value(name, value)
        else:
            self[name] = value
        if self.stop_when_complete and len(self) == len(self.outputs) + len(self.inputs):
            raise _Complete

    def __enter__(self) -> "LayerCapture":
        for name in self.outputs:
            hook = lambda _module, _args, out, name=name: self._seen(name, out)  # noqa: E731
            self._handles.append(self.model.get_submodule(name).register_forward_hook(hook))
        for name in self.inputs:
            hook = lambda _module, args, name=name: self._seen(name, args[0])  # noqa: E731
            self._handles.append(self.model.get_submodule(name).register_forward_pre_hook(hook))
        return self

    def __exit__(self, kind, exc, traceback) -> bool:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        return kind is _Complete  # a pass stopped on purpose is not an error
