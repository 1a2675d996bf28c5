"""Mirror images for a linear head on CNN codes (issue 17: test-time augmentation where it measures).

    python benchmarks/bench_mirror_codes.py hym flowers mri fashion

Per set, MobileNetV2 codes (no feature cache) of the training and held-out images and of their
mirror images; a linear head with the library's defaults trained on the originals (``plain``) or on
originals and mirrors (``aug``, each pair kept in one CV fold), scored on the held-out image alone
or on the mean of its and its mirror's probabilities (``+tta``); ``meancodes``: a head on the mean
of the two codes. Prints balanced accuracy on each set's held-out split.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import ImageOps
from sklearn.metrics import balanced_accuracy_score

sys.path.insert(0, str(Path(__file__).parent))
import _datasets  # noqa: E402

from headstart.backbones import PRE_LOGITS  # noqa: E402
from headstart.data.images import as_source  # noqa: E402
from headstart.features.extract import code_extractor  # noqa: E402
from headstart.strategies.linear import fit_linear_head  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def files(root: Path) -> tuple[list[Path], np.ndarray]:
    paths = sorted(p for p in Path(root).glob("*/*") if p.is_file())
    return paths, np.array([p.parent.name for p in paths])


def subsample(paths: list[Path], labels: np.ndarray, per_class: int, seed: int = 0) -> tuple[list[Path], np.ndarray]:
    rng = np.random.default_rng(seed)
    keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), min(per_class, int((labels == c).sum())), replace=False) for c in np.unique(labels)]))
    return [paths[i] for i in keep], labels[keep]


def codes(extractor, paths: list[Path], mirror: bool) -> np.ndarray:
    images = [as_source(p).rgb(extractor.preprocessing.resize) for p in paths]
    return extractor([ImageOps.mirror(i) for i in images] if mirror else images).codes


def run(name: str, train, test, tap: str = PRE_LOGITS, input_size: int | None = None) -> None:
    extractor = code_extractor("mobilenet_v2", tap, input_size=input_size, cache=False)
    (train_paths, train_labels), (test_paths, test_labels) = train, test
    classes, y = np.unique(train_labels, return_inverse=True)
    y_test = np.searchsorted(classes, test_labels)
    A, A_mirror, B, B_mirror = (codes(extractor, paths, mirror) for paths in (train_paths, test_paths) for mirror in (False, True))
    plain, _ = fit_linear_head(A, y)
    aug, _ = fit_linear_head(np.vstack([A, A_mirror]), np.concatenate([y, y]), groups=np.tile(np.arange(len(A)), 2))
    mean, _ = fit_linear_head((A + A_mirror) / 2, y)
    scores = {
        "plain": plain.predict_proba(B),
        "plain+tta": (plain.predict_proba(B) + plain.predict_proba(B_mirror)) / 2,
        "aug": aug.predict_proba(B),
        "aug+tta": (aug.predict_proba(B) + aug.predict_proba(B_mirror)) / 2,
        "meancodes": mean.predict_proba((B + B_mirror) / 2),
    }
    print(f"{name} [{tap}]: " + ", ".join(f"{k} {balanced_accuracy_score(y_test, p.argmax(1)) * 100:.2f}%" for k, p in scores.items()), flush=True)


def main(which: list[str]) -> None:
    if "hym" in which:
        train, test = files(SHARED / "hymenoptera/train"), files(SHARED / "hymenoptera/val")
        run("hymenoptera", train, test)
        run("hymenoptera", train, test, tap="features.17+pre_logits")
        run("hymenoptera-15", subsample(*train, 15), test)
    if "flowers" in which:
        train, test = files(SHARED / "oxford17flowers/train"), files(SHARED / "oxford17flowers/test")
        run("flowers", train, test)
        run("flowers-15", subsample(*train, 15), test)
    if "mri" in which:
        train, test = files(SHARED / "alzheimer_mri4/train"), files(SHARED / "alzheimer_mri4/test")
        run("mri-50", subsample(*train, 50), subsample(*test, 100), tap="features.17")
    if "fashion" in which:
        root = _datasets.fashion(15)
        run("fashion-15", files(root / "train"), files(root / "test"), tap="features.16", input_size=96)


if __name__ == "__main__":
    main(sys.argv[1:] or ["hym", "flowers", "mri", "fashion"])
