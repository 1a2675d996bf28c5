"""Could ONNX Runtime give the measuring pass's BatchNorm moments, instead of eager batches with hooks?

    python benchmarks/bench_moments_graph.py [--size 288]

MobileNetV2's measuring graph (the ImageNet logits and the sweep's pooled taps, as the advisor
exports it) against the same graph with two more outputs per BatchNorm layer (each image's channel
means and mean squares), read at the layer's input (what BatchNormMoments reads) or at its output
(from which the input's moments follow through the layer's affine map). Prints each graph's export
time and ONNX Runtime's time per image (batches of 16), beside the eager pass with the moment hooks
that the advisor runs on 64 images today.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402

from headstart.advisor.measure import _MeasuringOutputs, sweep_taps  # noqa: E402
from headstart.backbones import get_backbone  # noqa: E402
from headstart.backbones.batchnorm import BatchNormMoments  # noqa: E402
from headstart.backbones.hooks import LayerCapture  # noqa: E402
from headstart.features.engine import LOGITS, OnnxEngine, _export  # noqa: E402

BATCH, REPEATS = 16, 4


class WithMoments(nn.Module):
    """The measuring graph's outputs, then each BatchNorm layer's per-image channel means and mean squares."""

    def __init__(self, spec, model, taps, at_input: bool):
        super().__init__()
        self.measuring, self.model, self.at_input = _MeasuringOutputs(spec, model, taps), model, at_input
        self.norms = [name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]

    def forward(self, x):
        where = {"inputs": self.norms} if self.at_input else {"outputs": self.norms}
        with LayerCapture(self.model, **where) as seen:
            outputs = self.measuring(x)
        moments = [m for name in self.norms for m in (seen[name].mean((2, 3)), (seen[name] * seen[name]).mean((2, 3)))]
        return (*outputs, *moments)


def per_image(run, batch: np.ndarray) -> float:
    run(batch)  # warm
    start = time.perf_counter()
    for _ in range(REPEATS):
        run(batch)
    return (time.perf_counter() - start) / (REPEATS * len(batch))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=288)
    size = parser.parse_args().size
    print(machine(), flush=True)
    spec = get_backbone("mobilenet_v2")
    model = spec.build().eval()
    taps = sweep_taps(spec)
    example = torch.randn(2, 3, size, size)
    batch = np.random.default_rng(0).random((BATCH, 3, size, size), dtype=np.float32)
    graphs = {
        "measuring graph (today)": (_MeasuringOutputs(spec, model, taps), [LOGITS, *taps]),
        "+ moments at each BatchNorm's input": (WithMoments(spec, model, taps, at_input=True), None),
        "+ moments at each BatchNorm's output": (WithMoments(spec, model, taps, at_input=False), None),
    }
    for label, (module, names) in graphs.items():
        path = Path(f"/tmp/headstart-moments-{size}-{len(label)}.onnx")
        start = time.perf_counter()
        _export(module.eval(), example, path, names, dynamo=False)
        exported = time.perf_counter() - start
        engine = OnnxEngine(path)
        seconds = per_image(lambda b: engine.outputs(torch.from_numpy(b)), batch)
        print(f"{label:40s} export {exported:.2f} s, ONNX Runtime {seconds * 1000:5.1f} ms an image, {len(engine.output_names)} outputs", flush=True)
    moments = BatchNormMoments(model)
    model.to(memory_format=torch.channels_last)

    def eager(b):
        with torch.inference_mode(), moments.capture():
            model(torch.from_numpy(b).contiguous(memory_format=torch.channels_last))

    print(f"{'eager, channels_last, moment hooks':40s} {per_image(eager, batch) * 1000:5.1f} ms an image (the advisor's 64-image sample)")


if __name__ == "__main__":
    main()
