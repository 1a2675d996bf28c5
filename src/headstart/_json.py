"""Values as JSON holds them: what a model file, a plan or metrics.json stores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def to_json_label(label):
    """numpy scalars become plain ints/floats/strings so labels survive JSON unchanged."""
    return label.item() if isinstance(label, np.generic) else label


def jsonable(value):
    """``json.dumps(default=...)``: tuples, numpy values and paths as JSON has them."""
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value


def as_json(data):
    """``data`` as it reads back from JSON (numpy scalars and arrays become plain values)."""
    return json.loads(json.dumps(data, default=jsonable))
