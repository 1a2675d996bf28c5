"""Reading labelled images: discovery, decoding, splits, duplicates; augmentation and sampling.

The names below are imported on first use (PEP 562), as the package's are: finding the images
(``dataset``, ``decode``, ``duplicates``) needs only NumPy and Pillow, so the command line refuses
a folder it cannot train on before PyTorch loads (augmentation and sampling import it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import attach

# public name -> the module of this package that defines it
_LAZY = {
    "POLICIES": "augment",
    "augmentation_transform": "augment",
    "check_mirroring": "augment",
    "mirror_sensitivity": "augment",
    "Dataset": "dataset",
    "ImageRecord": "dataset",
    "Skipped": "dataset",
    "load_dataset": "dataset",
    "stratified_split": "dataset",
    "UnreadableImage": "decode",
    "decode_image": "decode",
    "DuplicatePair": "duplicates",
    "describe_groups": "duplicates",
    "find_duplicates": "duplicates",
    "grouped_hold_out": "duplicates",
    "near_duplicate_groups": "duplicates",
    "stratified_folds": "duplicates",
    "ClassBalancedSampler": "sampling",
    "ImbalancePlan": "sampling",
    "inverse_frequency_weights": "sampling",
    "plan_imbalance": "sampling",
}

__all__ = [
    "ClassBalancedSampler",
    "Dataset",
    "DuplicatePair",
    "ImageRecord",
    "ImbalancePlan",
    "POLICIES",
    "Skipped",
    "UnreadableImage",
    "augmentation_transform",
    "check_mirroring",
    "decode_image",
    "describe_groups",
    "find_duplicates",
    "grouped_hold_out",
    "inverse_frequency_weights",
    "load_dataset",
    "mirror_sensitivity",
    "near_duplicate_groups",
    "plan_imbalance",
    "stratified_folds",
    "stratified_split",
]


__getattr__, __dir__ = attach(__name__, _LAZY, globals())


if TYPE_CHECKING:  # for type checkers and editors, which do not run __getattr__
    from .augment import POLICIES, augmentation_transform, check_mirroring, mirror_sensitivity
    from .dataset import Dataset, ImageRecord, Skipped, load_dataset, stratified_split
    from .decode import UnreadableImage, decode_image
    from .duplicates import DuplicatePair, describe_groups, find_duplicates, grouped_hold_out, near_duplicate_groups, stratified_folds
    from .sampling import ClassBalancedSampler, ImbalancePlan, inverse_frequency_weights, plan_imbalance
