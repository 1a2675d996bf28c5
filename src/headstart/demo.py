"""The offline demo: scikit-learn's handwritten digits written out as an image folder, then fit.

15 training images per class mirrors the small-data case headstart exists for; digits are also far
from ImageNet photos, so the demo shows transfer working on a different domain.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ._atomic import atomic_path

TRAIN_PER_CLASS = 15
TEST_PER_CLASS = 30
IMAGE_SIZE = 64


def write_digits_folder(root: Path, *, train_per_class: int = TRAIN_PER_CLASS, test_per_class: int = TEST_PER_CLASS, seed: int = 0) -> Path:
    """Write ``root/{train,test}/<digit>/<n>.png`` from ``sklearn.datasets.load_digits``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    for digit in range(10):
        members = rng.permutation(np.flatnonzero(digits.target == digit))
        for split, chosen in (("train", members[:train_per_class]), ("test", members[train_per_class : train_per_class + test_per_class])):
            folder = root / split / str(digit)
            folder.mkdir(parents=True, exist_ok=True)
            for index in chosen:
                target = folder / f"{index:04d}.png"
                if target.exists():
                    continue
                # 0..16 ink levels -> dark ink on white paper, upscaled so the backbone sees strokes.
                pixels = (255 - digits.images[index] * (255 / 16)).astype(np.uint8)
                image = Image.fromarray(pixels).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
                with atomic_path(target) as tmp:
                    image.save(tmp, format="PNG")
    return root
