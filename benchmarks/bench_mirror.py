"""Mirror sensitivity of datasets: how well a linear probe tells mirrored images from originals.

    python benchmarks/bench_mirror.py ../shared/datasets/hymenoptera ../shared/datasets/oxford17flowers runs/demo-images

Calibrates the warning of ``headstart.data.augment.check_mirroring`` (chance is 0.5). The digits
folder is written by ``headstart demo``.
"""

from __future__ import annotations

import argparse

from headstart.backbones import get_backbone
from headstart.data import decode_image, load_dataset, mirror_sensitivity
from headstart.features import CodeExtractor


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("datasets", nargs="+")
    parser.add_argument("--images", type=int, default=200, help="training images per dataset")
    args = parser.parse_args()
    extractor = CodeExtractor(get_backbone("mobilenet_v2"))
    for root in args.datasets:
        records = load_dataset(root).split("train")[: args.images]
        images = [decode_image(r.path.read_bytes(), draft_size=256) for r in records]
        print(f"{root:45s} {len(images):4d} images  mirror probe accuracy {mirror_sensitivity(extractor, images):.3f}")


if __name__ == "__main__":
    main()
