"""headstart: a good image classifier from a few labelled images, by transfer from pretrained CNNs."""

from .backbones import BackboneSpec, Preprocessing, get_backbone, list_backbones, register_backbone
from .data import Dataset, load_dataset
from .errors import BackboneError, DataError, HeadstartError, ModelFileError
from .estimator import TransferClassifier
from .workflow import Evaluation, FitSummary, evaluate_folder, fit_folder, predict_images

__version__ = "0.1.0"

__all__ = [
    "BackboneError",
    "BackboneSpec",
    "DataError",
    "Dataset",
    "Evaluation",
    "FitSummary",
    "HeadstartError",
    "ModelFileError",
    "Preprocessing",
    "TransferClassifier",
    "evaluate_folder",
    "fit_folder",
    "get_backbone",
    "list_backbones",
    "load_dataset",
    "predict_images",
    "register_backbone",
]
