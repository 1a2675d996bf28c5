"""headstart: a good image classifier from a few labelled images, by transfer from pretrained CNNs.

The public names below are imported on first use (PEP 562), so that ``import headstart`` and the
command line's ``--help`` do not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__
from .errors import BackboneError, DataError, HeadstartError, ModelFileError

# public name -> the module that defines it
_LAZY = {
    "BackboneSpec": "backbones",
    "Preprocessing": "backbones",
    "get_backbone": "backbones",
    "list_backbones": "backbones",
    "register_backbone": "backbones",
    "Dataset": "data",
    "load_dataset": "data",
    "FittedModel": "fitted",
    "TransferClassifier": "estimator",
    "Evaluation": "workflow",
    "FitSummary": "workflow",
    "evaluate_folder": "workflow",
    "fit_folder": "workflow",
    "predict_images": "workflow",
}

__all__ = [
    "BackboneError",
    "BackboneSpec",
    "DataError",
    "Dataset",
    "Evaluation",
    "FitSummary",
    "FittedModel",
    "HeadstartError",
    "ModelFileError",
    "Preprocessing",
    "TransferClassifier",
    "__version__",
    "evaluate_folder",
    "fit_folder",
    "get_backbone",
    "list_backbones",
    "load_dataset",
    "predict_images",
    "register_backbone",
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'headstart' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # for type checkers and editors, which do not run __getattr__
    from .backbones import BackboneSpec, Preprocessing, get_backbone, list_backbones, register_backbone
    from .data import Dataset, load_dataset
    from .estimator import TransferClassifier
    from .fitted import FittedModel
    from .workflow import Evaluation, FitSummary, evaluate_folder, fit_folder, predict_images
