"""headstart: a good image classifier from a few labelled images, by transfer from pretrained CNNs.

The public names below are imported on first use (PEP 562), so that ``import headstart`` and the
command line's ``--help`` do not pay for importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import attach
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


__getattr__, __dir__ = attach(__name__, _LAZY, globals())


if TYPE_CHECKING:  # for type checkers and editors, which do not run __getattr__
    from .backbones import BackboneSpec, Preprocessing, get_backbone, list_backbones, register_backbone
    from .data import Dataset, load_dataset
    from .estimator import TransferClassifier
    from .fitted import FittedModel
    from .workflow import Evaluation, FitSummary, evaluate_folder, fit_folder, predict_images
