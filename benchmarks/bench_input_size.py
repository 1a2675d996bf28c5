"""At which side should a backbone trained at 224 px read images? (issue 17: higher input resolution
where the images carry it.)

    python benchmarks/bench_input_size.py [--sizes 224 288] [--only hymenoptera flowers-15 ...]

For each dev row and each embedded backbone: a linear head on the top codes (the library's
defaults, C by cross-validation) with the images read at each ``--sizes`` side, balanced accuracy
on the row's held-out split, and the median shorter side of its training images. Rows: the photo
sets at full size and 15 per class, the same photos shrunk to a 224 px and a 160 px shorter side
(written once under $TMPDIR, never into the project), alzheimer_mri4 at 50 and 200 per class
(176x208 slices, test capped at 100 per class), digits (64 px) and Fashion-MNIST (28 px) at 15 and
50 per class. FixRes (Touvron et al. 2019) predicts that networks trained on random resized crops
read best somewhat above their training size; the rows say where that holds.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.metrics import balanced_accuracy_score

sys.path.insert(0, str(Path(__file__).parent))
import _datasets  # noqa: E402
from _common import SHARED, dev_set, machine  # noqa: E402

from headstart import TransferClassifier  # noqa: E402
from headstart.data.images import as_source  # noqa: E402

SHRUNK = Path(os.environ.get("TMPDIR", tempfile.gettempdir())) / "headstart-bench-shrunk"


def shrunk(name: str, side: int) -> Path:
    """``name``'s images with their shorter side resized to ``side`` px (Lanczos, JPEG quality 92)."""
    root = SHRUNK / f"{name}-{side}"
    if (root / "done").exists():
        return root
    for path in sorted((SHARED / name).glob("*/*/*")):
        try:
            image = Image.open(path).convert("RGB")
        except OSError:
            continue  # the placeholder GIF and friends: the library skips them too
        scale = side / min(image.size)
        target = root / path.relative_to(SHARED / name).with_suffix(".jpg")
        target.parent.mkdir(parents=True, exist_ok=True)
        image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.LANCZOS).save(target, quality=92)
    (root / "done").touch()
    return root


MRI = lambda: SHARED / "alzheimer_mri4"  # noqa: E731
ROWS = {  # name: (folder, training images per class, held-out images per class)
    "hymenoptera": (lambda: SHARED / "hymenoptera", None, None),
    "hymenoptera-15": (lambda: SHARED / "hymenoptera", 15, None),
    "flowers": (lambda: SHARED / "oxford17flowers", None, None),
    "flowers-15": (lambda: SHARED / "oxford17flowers", 15, None),
    "hymenoptera@224": (lambda: shrunk("hymenoptera", 224), None, None),
    "flowers@224": (lambda: shrunk("oxford17flowers", 224), None, None),
    "hymenoptera@160": (lambda: shrunk("hymenoptera", 160), None, None),
    "flowers@160": (lambda: shrunk("oxford17flowers", 160), None, None),
    "alzheimer_mri4-50": (MRI, 50, 100),
    "alzheimer_mri4-200": (MRI, 200, 100),
    "digits-15": (lambda: _datasets.digits(15), None, None),
    "digits-50": (lambda: _datasets.digits(50), None, None),
    "fashion-15": (lambda: _datasets.fashion(15), None, None),
    "fashion-50": (lambda: _datasets.fashion(50), None, None),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--sizes", nargs="*", type=int, default=[224, 288])
    parser.add_argument("--backbones", nargs="*", default=["mobilenet_v2", "efficientnet_lite0"])
    args = parser.parse_args()
    print(machine(), flush=True)
    header = " | ".join(f"{size} px" for size in args.sizes)
    table = [f"| row | shorter side (median) | backbone | {header} | {args.sizes[-1]} - {args.sizes[0]} |", "|---|---|---|" + "---|" * (len(args.sizes) + 1)]
    for name in args.only:
        locate, train_per_class, test_per_class = ROWS[name]
        _, X, y, X_test, y_test = dev_set(locate, train_per_class, test_per_class)
        side = np.median([min(as_source(p).pixel_size() or (0, 0)) for p in X])
        for backbone in args.backbones:
            scores = []
            for size in args.sizes:
                model = TransferClassifier(backbone, strategy="linear", tap="pre_logits", input_size=size).fit(X, y)
                scores.append(balanced_accuracy_score(y_test, model.predict(X_test, reject=None)))
            row = " | ".join(f"{s:.2%}" for s in scores)
            print(f"{name} [{backbone}] ({len(X)} train, {len(X_test)} held out, shorter side {side:.0f} px): {row}", flush=True)
            table.append(f"| {name} | {side:.0f} | {backbone} | {row} | {(scores[-1] - scores[0]) * 100:+.2f} |")
    print("\n" + "\n".join(table))


if __name__ == "__main__":
    main()
