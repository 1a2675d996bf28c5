"""Training by backpropagation: the loop as plain functions, its schedule and parameter groups."""

from .loop import EarlyStopping, EpochRecord, History, evaluate, train
from .params import block_index, param_groups
from .schedule import warmup_cosine

__all__ = ["EarlyStopping", "EpochRecord", "History", "block_index", "evaluate", "param_groups", "train", "warmup_cosine"]
