"""Training by backpropagation: the loop as plain functions, its schedule and parameter groups."""

from .loop import EarlyStopping, EpochRecord, History, evaluate, train
from .lr_finder import RangeTest, lr_range_test
from .params import block_index, param_groups
from .schedule import warmup_cosine

__all__ = [
    "EarlyStopping",
    "EpochRecord",
    "History",
    "RangeTest",
    "block_index",
    "evaluate",
    "lr_range_test",
    "param_groups",
    "train",
    "warmup_cosine",
]
