"""Shared fixtures: a private feature cache, and tiny generated image datasets."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Mean colours of the generated classes; noise on top keeps every image distinct.
CLASS_COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}


@contextlib.contextmanager
def logging_restored():
    """The command line configures the "headstart" logger (its own handler, no propagation); this
    undoes that, so that caplog sees the library's warnings whatever ran before."""
    import logging

    logger = logging.getLogger("headstart")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    try:
        yield
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


@pytest.fixture(autouse=True)
def restore_logging():
    with logging_restored():
        yield


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets an empty feature cache of its own."""
    cache = tmp_path / "headstart-cache"
    monkeypatch.setenv("HEADSTART_CACHE", str(cache))
    return cache


def colour_image(colour, seed: int, size: int = 40) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.asarray(colour)[None, None, :] + rng.normal(0, 25, (size, size, 3)), 0, 255)
    return Image.fromarray(pixels.astype(np.uint8))


def write_class_folders(root: Path, per_class: int = 6, colours: dict | None = None, seed: int = 0, fmt: str = "PNG") -> Path:
    """root/CLASS/NN.png for each colour class."""
    for c, (name, colour) in enumerate((colours or CLASS_COLOURS).items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            suffix = ".png" if fmt == "PNG" else ".jpg"
            colour_image(colour, seed=seed * 10_000 + c * 1000 + i).save(folder / f"{i:02d}{suffix}", format=fmt)
    return root


@pytest.fixture
def colour_folders(tmp_path) -> Path:
    return write_class_folders(tmp_path / "colours")


def write_colour_splits(root: Path) -> Path:
    """root/train (6 images a class) and root/test (3): the same images wherever written."""
    write_class_folders(root / "train", per_class=6, seed=1)
    write_class_folders(root / "test", per_class=3, seed=2)
    return root


@pytest.fixture
def colour_splits(tmp_path) -> Path:
    return write_colour_splits(tmp_path / "splits")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
browser_needed = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="headless Chromium not found: install the Debian packages chromium and chromium-driver (apt-get install chromium chromium-driver)",
)


@pytest.fixture
def browser():
    """Headless Chromium driven by Selenium (the report's and the server page's browser tests)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is a test extra: pip install -e '.[test]'")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,1600"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The explicit driver path keeps Selenium Manager from trying to download one.
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()
