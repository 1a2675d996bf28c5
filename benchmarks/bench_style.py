"""Does VGG19 separate styles better than MobileNetV2 and EfficientNet-Lite0, why, and does
activation smoothing close the gap? On three style sets made offline (benchmarks/_style_sets.py).

    python benchmarks/bench_style.py [--size 128] [--smooth 1.0] [--sets textures renderings photo_patches] [--precision fp32]

Prints, per set, every backbone x smoothing x layer (between/within distance ratio, leave-one-out
1-NN style retrieval, activation entropy, inter-channel |correlation|), then the verdict on the
issue's targets, read on the "all" rows (the style distance over the default layers).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, peak_rss_mb  # noqa: E402
from _style_sets import SETS  # noqa: E402

from headstart.data import load_dataset  # noqa: E402
from headstart.style.descriptors import STYLE_LAYERS  # noqa: E402
from headstart.style.evaluate import ALL_LAYERS, DEFAULT_EVALUATE_BACKBONES, evaluate_style, format_table  # noqa: E402

MODERN = ("mobilenet_v2", "efficientnet_lite0")
# The fix the per-layer figures point to: the modern networks' style layers without the last one.
WITHOUT_LAST = {name: STYLE_LAYERS[name][:-1] for name in MODERN}


def gap_closed(rows, modern: str, temperature: float, metric: str) -> tuple[float, float, float, float | None]:
    """VGG19's raw figure, the modern network's raw and smoothed figures, and the fraction of the
    gap the smoothing closed (None when VGG19 was not ahead)."""
    pick = {(r.backbone, r.smoothing): getattr(r, metric) for r in rows if r.layer == ALL_LAYERS}
    vgg, raw, smoothed = pick[("vgg19", None)], pick[(modern, None)], pick[(modern, temperature)]
    return vgg, raw, smoothed, ((smoothed - raw) / (vgg - raw) if vgg > raw else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128, help="network input side (default 128)")
    parser.add_argument("--smooth", type=float, default=1.0, help="smoothing temperature (default 1)")
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--precision", default="fp32", choices=("auto", "bf16", "fp32"), help="network arithmetic (default fp32, as style evaluate)")
    args = parser.parse_args()
    print(f"machine  {machine()}")
    for name in args.sets:
        dataset = load_dataset(SETS[name]())
        images, labels = [str(r.path) for r in dataset.records], [r.label for r in dataset.records]
        start = time.perf_counter()
        rows = evaluate_style(images, labels, backbones=DEFAULT_EVALUATE_BACKBONES, temperatures=(None, args.smooth), input_size=args.size, precision=args.precision)
        print(f"\n== {name}: {len(images)} images, {len(set(labels))} styles, {args.size} px ({time.perf_counter() - start:.0f} s)")
        print(format_table(rows))
        for modern in MODERN:
            for metric in ("ratio", "retrieval"):
                vgg, raw, smoothed, closed = gap_closed(rows, modern, args.smooth, metric)
                ahead = "VGG19 ahead" if vgg > raw else "VGG19 NOT ahead"
                share = f"smoothing closes {closed:.0%} of the gap" if closed is not None else "no gap to close"
                print(f"  {metric:<9} vgg19 {vgg:7.3f} | {modern} {raw:7.3f} -> T={args.smooth:g} {smoothed:7.3f}   {ahead}; {share}")
        fixed = evaluate_style(images, labels, backbones=MODERN, temperatures=(None,), input_size=args.size, layers=WITHOUT_LAST, precision=args.precision)
        for row in (r for r in fixed if r.layer == ALL_LAYERS):
            print(f"  without the last layer, no smoothing: {row.backbone} ratio {row.ratio:.3f}, retrieval {row.retrieval:.3f}")
    print(f"\npeak memory {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
