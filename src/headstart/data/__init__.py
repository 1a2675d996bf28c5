"""Reading labelled images: discovery, decoding, splits and duplicates."""

from .dataset import Dataset, ImageRecord, Skipped, load_dataset, stratified_split
from .decode import UnreadableImage, decode_image
from .duplicates import DuplicatePair, find_duplicates

__all__ = [
    "Dataset",
    "DuplicatePair",
    "ImageRecord",
    "Skipped",
    "UnreadableImage",
    "decode_image",
    "find_duplicates",
    "load_dataset",
    "stratified_split",
]
