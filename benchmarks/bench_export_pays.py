"""When exporting a backbone's ONNX graph pays for itself, by input size: the export's seconds (the
first of a process pays a warm-up), eager channels_last and ONNX Runtime per image (batch 32), and
the images from which the saving covers the export; beside ``export_pays_from``, the library's rule.

    python benchmarks/bench_export_pays.py [--backbone mobilenet_v2] [--sizes 96 160 224 288]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402

from headstart.backbones import PRE_LOGITS, build_tap_model, get_backbone  # noqa: E402
from headstart.features.engine import OnnxEngine, TorchEngine, export_graph, export_pays_from  # noqa: E402


def per_image_ms(engine, batch: torch.Tensor, repeats: int = 3) -> float:
    engine(batch)  # warm-up: primitives and arenas
    tick = time.perf_counter()
    for _ in range(repeats):
        engine(batch)
    return (time.perf_counter() - tick) / (repeats * len(batch)) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--sizes", nargs="*", type=int, default=[96, 160, 224, 288])
    args = parser.parse_args()
    print(machine(), flush=True)
    spec = get_backbone(args.backbone)
    print("| input | export | eager | ONNX Runtime | saved per image | pays from | export_pays_from |\n|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            graph = Path(folder) / f"{size}.onnx"
            tick = time.perf_counter()
            export_graph(spec, PRE_LOGITS, size, graph)
            export = time.perf_counter() - tick
            batch = torch.randn(32, 3, size, size, generator=torch.Generator().manual_seed(0))
            eager = per_image_ms(TorchEngine(build_tap_model(spec, PRE_LOGITS), torch.device("cpu")), batch)
            onnx = per_image_ms(OnnxEngine(graph), batch)
            saved = eager - onnx
            pays = f"{export / saved * 1000:.0f} images" if saved > 0 else "never"
            print(f"| {size} px | {export:.2f} s | {eager:.1f} ms | {onnx:.1f} ms | {saved:.1f} ms | {pays} | {export_pays_from(size):.0f} |", flush=True)


if __name__ == "__main__":
    main()
