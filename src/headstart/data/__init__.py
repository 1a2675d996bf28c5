"""Reading labelled images: discovery, decoding, splits, duplicates; augmentation and sampling."""

from .augment import POLICIES, augmentation_transform, check_mirroring, mirror_sensitivity
from .dataset import Dataset, ImageRecord, Skipped, load_dataset, stratified_split
from .decode import UnreadableImage, decode_image
from .duplicates import DuplicatePair, describe_groups, find_duplicates, grouped_hold_out, near_duplicate_groups, stratified_folds
from .sampling import ClassBalancedSampler, ImbalancePlan, inverse_frequency_weights, plan_imbalance

__all__ = [
    "POLICIES",
    "ClassBalancedSampler",
    "Dataset",
    "DuplicatePair",
    "ImageRecord",
    "ImbalancePlan",
    "Skipped",
    "UnreadableImage",
    "augmentation_transform",
    "check_mirroring",
    "decode_image",
    "describe_groups",
    "find_duplicates",
    "grouped_hold_out",
    "near_duplicate_groups",
    "stratified_folds",
    "inverse_frequency_weights",
    "load_dataset",
    "mirror_sensitivity",
    "plan_imbalance",
    "stratified_split",
]
