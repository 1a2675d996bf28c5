"""A generated long-tailed image folder: hundreds of classes of small striped pictures.

A class is a grating (a frequency and an angle) in two colours; an image of it has a random phase,
jittered colours, a random crop offset and pixel noise, so classes that drew similar gratings and
colours overlap and accuracy stays informative. Written as DATA/train/CLASS/*.jpg (long-tailed,
counts from benchmarks/_synthetic.class_counts) and DATA/test/CLASS/*.jpg (the same number of every
class), once per shape: a folder that is already complete is reused.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from _synthetic import class_counts

SIDE = 40


def generated_folder(root: Path, n_classes: int, mean: float, low: int, high: int, test_per_class: int = 5, seed: int = 0) -> Path:
    data = root / f"images-{n_classes}x{mean:g}-{low}-{high}-{seed}"
    done = data / "done.json"
    if done.exists():
        return data
    counts = class_counts(n_classes, low=low, high=high, mean=mean, seed=seed)
    rng = np.random.default_rng(seed)
    classes = {
        "frequency": rng.uniform(1.0, 6.0, n_classes),
        "angle": rng.uniform(0, np.pi, n_classes),
        "fg": rng.uniform(0, 255, (n_classes, 3)),
        "bg": rng.uniform(0, 255, (n_classes, 3)),
    }
    for k in range(n_classes):
        for split, n in (("train", int(counts[k])), ("test", test_per_class)):
            folder = data / split / f"c{k:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (folder / f"{i:05d}.jpg").write_bytes(_image(classes, k, rng))
    done.write_text(json.dumps({"train": int(counts.sum()), "test": n_classes * test_per_class, "classes": n_classes}))
    return data


def _image(classes: dict, k: int, rng: np.random.Generator) -> bytes:
    y, x = np.mgrid[0:SIDE, 0:SIDE] / SIDE
    angle = classes["angle"][k] + rng.normal(0, 0.15)
    wave = np.sin(2 * np.pi * classes["frequency"][k] * (x * np.cos(angle) + y * np.sin(angle)) + rng.uniform(0, 2 * np.pi))
    mask = (wave > 0)[..., None]
    fg = classes["fg"][k] + rng.normal(0, 25, 3)
    bg = classes["bg"][k] + rng.normal(0, 25, 3)
    pixels = np.where(mask, fg, bg) + rng.normal(0, 20, (SIDE, SIDE, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()
