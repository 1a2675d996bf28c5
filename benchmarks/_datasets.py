"""Benchmark datasets that can be made offline, written once as image folders outside the project.

- digits: scikit-learn's 8x8 handwritten digits, upscaled to 64 px (as the demo does);
- fashion: Fashion-MNIST from the Debian package ``dataset-fashion-mnist``
  (``apt install dataset-fashion-mnist``; files under /usr/share/datasets/fashion-mnist).

Both are far from ImageNet photos: grey, centred, tiny. Each is written at a given number of
training images per class, with a fixed test split shared by every size.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
from PIL import Image

from headstart._atomic import atomic_path
from headstart.demo import write_digits_folder

ROOT = Path(os.environ.get("HEADSTART_BENCH_DATA", "/tmp/headstart-bench-data"))
FASHION = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["tshirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]
DIGITS_TEST_PER_CLASS = 40  # digits has ~180 images per class: 40 test leaves up to ~130 for training
FASHION_TEST_PER_CLASS = 100


def digits(train_per_class: int) -> Path:
    root = ROOT / f"digits-{train_per_class}"
    # Test images come first in each class's shuffled order, so every size shares one test split.
    return _swap_splits(write_digits_folder(ROOT / f"raw-digits-{train_per_class}", train_per_class=DIGITS_TEST_PER_CLASS, test_per_class=train_per_class), root)


def _swap_splits(raw: Path, root: Path) -> Path:
    """write_digits_folder fills train first; here the first block is the shared test split."""
    for split, target in (("train", "test"), ("test", "train")):
        for folder in (raw / split).iterdir():
            destination = root / target / folder.name
            destination.mkdir(parents=True, exist_ok=True)
            for image in folder.iterdir():
                link = destination / image.name
                if not link.exists():
                    link.symlink_to(image)
    return root


def fashion(train_per_class: int) -> Path:
    root = ROOT / f"fashion-{train_per_class}"
    if (root / "done").exists():
        return root
    if not FASHION.is_dir():
        raise SystemExit("Fashion-MNIST is missing: apt install dataset-fashion-mnist")
    for split, stem, per_class in (("train", "train", train_per_class), ("test", "t10k", FASHION_TEST_PER_CLASS)):
        images = _idx(FASHION / f"{stem}-images-idx3-ubyte.gz")
        labels = _idx(FASHION / f"{stem}-labels-idx1-ubyte.gz")
        rng = np.random.default_rng(0)
        for label, name in enumerate(FASHION_CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in rng.permutation(np.flatnonzero(labels == label))[:per_class]:
                with atomic_path(folder / f"{index:05d}.png") as tmp:
                    Image.fromarray(images[index]).save(tmp, format="PNG")
    (root / "done").touch()
    return root


def _idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format): magic, dimensions, then unsigned bytes."""
    data = gzip.decompress(path.read_bytes())
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)
