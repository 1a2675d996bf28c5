"""Sets of images labelled by style, made offline and written as folders (STYLE/image.png).

- textures: 128 px patches cut at random from 10 images scikit-image ships (brick, grass, gravel,
  a cat, coffee, ...): the patches of one image share its texture and colours.
- photo_patches: patches of 10 photos from a shared dataset, 8 per photo (the same idea on
  real photos).
- renderings: 10 photos from a shared dataset, each rendered in 8 styles (pencil-like edges,
  posterised, sepia, halftone-like dots, pixelated, oil-like median filter, inverted, original).
  Every style holds the same 10 contents, so content gives no help and is a distraction: the
  descriptor has to see the rendering, which is what a style search is for.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from headstart._atomic import atomic_path

ROOT = Path(os.environ.get("HEADSTART_BENCH_DATA", "/tmp/headstart-bench-data")) / "style"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
PATCH = 128
TEXTURE_SOURCES = ("brick", "grass", "gravel", "camera", "coins", "moon", "chelsea", "coffee", "rocket", "hubble_deep_field")


def _write(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def _rgb(array: np.ndarray) -> Image.Image:
    return Image.fromarray(array).convert("RGB")


def _patches(image: Image.Image, count: int, rng: np.random.Generator, size: int = PATCH) -> list[Image.Image]:
    """``count`` random square crops, each covering a quarter to a half of the shorter side, resized to ``size``."""
    w, h = image.size
    out = []
    for _ in range(count):
        side = int(rng.uniform(0.25, 0.5) * min(w, h))
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        out.append(image.crop((x, y, x + side, y + side)).resize((size, size), Image.Resampling.BICUBIC))
    return out


def textures(per_style: int = 10, seed: int = 0) -> Path:
    import skimage.data

    root = ROOT / f"textures-{per_style}"
    if not root.exists():
        rng = np.random.default_rng(seed)
        for name in TEXTURE_SOURCES:
            for i, patch in enumerate(_patches(_rgb(getattr(skimage.data, name)()), per_style, rng)):
                _write(patch, root / name / f"{i:03d}.png")
    return root


def _photos(count: int, seed: int) -> list[Image.Image]:
    files = sorted((SHARED / "oxford17flowers" / "test").rglob("*.jpg"))
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(files), size=count, replace=False)
    return [ImageOps.fit(Image.open(files[i]).convert("RGB"), (PATCH * 2, PATCH * 2)) for i in picks]


def photo_patches(photos: int = 10, per_photo: int = 8, seed: int = 0) -> Path:
    root = ROOT / f"photo-patches-{photos}x{per_photo}"
    if not root.exists():
        rng = np.random.default_rng(seed)
        for p, photo in enumerate(_photos(photos, seed)):
            for i, patch in enumerate(_patches(photo, per_photo, rng)):
                _write(patch, root / f"photo{p:02d}" / f"{i:03d}.png")
    return root


def _renderers() -> dict:
    def pencil(im):
        edges = ImageOps.invert(im.convert("L").filter(ImageFilter.FIND_EDGES))
        return ImageOps.autocontrast(edges).convert("RGB")

    def sepia(im):
        return ImageOps.colorize(im.convert("L"), black="#2e1a05", white="#f5e6c4")

    def dots(im):
        small = im.convert("L").resize((im.width // 4, im.height // 4))
        return small.convert("1").resize(im.size, Image.Resampling.NEAREST).convert("RGB")

    return {
        "original": lambda im: im,
        "pencil": pencil,
        "posterised": lambda im: ImageOps.posterize(im, 2),
        "sepia": sepia,
        "dots": dots,
        "pixelated": lambda im: im.resize((im.width // 16, im.height // 16)).resize(im.size, Image.Resampling.NEAREST),
        "oil": lambda im: im.filter(ImageFilter.ModeFilter(9)),
        "inverted": ImageOps.invert,
    }


def renderings(photos: int = 10, seed: int = 1) -> Path:
    root = ROOT / f"renderings-{photos}"
    if not root.exists():
        sources = [photo.resize((PATCH, PATCH), Image.Resampling.BICUBIC) for photo in _photos(photos, seed)]
        for style, render in _renderers().items():
            for p, photo in enumerate(sources):
                _write(render(photo), root / style / f"photo{p:02d}.png")
    return root


SETS = {"textures": textures, "photo_patches": photo_patches, "renderings": renderings}
