"""Run a tapped backbone on batches: eager PyTorch, or ONNX Runtime when it is faster and agrees.

On this kind of CPU, ONNX Runtime runs MobileNetV2 ~4.6x faster than eager fp32 (channels_last).
Every exported graph is checked against eager fp32 before first use and cached only if it agrees;
if export or the check fails, extraction falls back to PyTorch and says so. Exporting costs time
(about 11 s on 2 cores), so a pass with too few images to win that back runs eagerly instead.
"""

from __future__ import annotations

import contextlib
import io
import logging
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from .._atomic import atomic_path
from ..backbones import BackboneSpec, build_tap_model
from ..errors import HeadstartError
from ..hardware import resolve_device

log = logging.getLogger(__name__)

ENGINES = ("auto", "onnx", "torch")
# Largest tolerated |onnx - eager| relative to the codes' magnitude.
PARITY_TOLERANCE = 1e-4
# Images a pass must have to compute before exporting a graph pays for itself. Measured on the
# 2-core CPU (batch 32, 224 px): export and check 10.6 s (MobileNetV2) and 11.0 s (EfficientNet-
# Lite0); eager channels_last 12.4 and 14.1 ms per image, ONNX Runtime 2.7 and 3.5 ms. The export
# is worth 1,090 and 1,050 images; both costs scale with the CPU alike, so the ratio travels.
# A graph already exported is used whatever the count.
EXPORT_PAYS_FROM = 1000


class TorchEngine:
    """Eager PyTorch in fp32; channels_last on CPU (faster for convolutions, same numbers)."""

    name = "torch"

    def __init__(self, model: torch.nn.Module, device: torch.device):
        self.device = device
        self.memory_format = torch.channels_last if device.type == "cpu" else torch.contiguous_format
        self.model = model.to(device=device, memory_format=self.memory_format).eval()

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        batch = batch.to(self.device, memory_format=self.memory_format)
        return self.model(batch).float().cpu().numpy()


class OnnxEngine:
    """ONNX Runtime on the CPU, from a graph exported with ``torch.onnx.export(dynamo=True)``."""

    name = "onnx"

    def __init__(self, path: Path):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch.numpy()})[0]


def create_engine(
    spec: BackboneSpec,
    tap: str,
    *,
    input_size: int,
    fingerprint: str,
    cache_root: Path,
    engine: str = "auto",
    device: str = "auto",
    images: int | None = None,
):
    """Build the fastest engine that gives eager fp32's codes for ``spec`` at ``tap`` on ``images``
    images (unknown: as many as it takes to pay for an export)."""
    if engine not in ENGINES:
        raise HeadstartError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}.")
    torch_device = resolve_device(device)
    if engine == "torch" or torch_device.type != "cpu":
        return TorchEngine(build_tap_model(spec, tap), torch_device)
    graph = cache_root / "onnx" / f"{fingerprint}-{input_size}.onnx"
    if graph.is_file():
        try:
            return OnnxEngine(graph)
        except Exception as exc:  # a damaged graph file: export it again
            log.warning("re-exporting %s: %s", graph, exc)
    if engine == "auto" and images is not None and images < EXPORT_PAYS_FROM:
        return TorchEngine(build_tap_model(spec, tap), torch_device)
    try:
        export_graph(spec, tap, input_size, graph)
        return OnnxEngine(graph)
    except Exception as exc:
        if engine == "onnx":
            raise HeadstartError(f"ONNX export of {spec.name} failed ({exc}); use engine='torch'.") from None
        log.warning("ONNX Runtime unavailable for %s (%s); using PyTorch", spec.name, str(exc).splitlines()[0][:200])
        return TorchEngine(build_tap_model(spec, tap), torch_device)


def export_graph(spec: BackboneSpec, tap: str, input_size: int, graph: Path) -> None:
    """Export and verify the graph in a child process when the backbone can be found by name there.

    Exporting traces the whole network and imports the ONNX toolchain, several hundred MB that the
    fitting process would otherwise keep as its peak. A backbone registered only in the caller's
    session cannot be rebuilt in a child, so it is exported here.
    """
    from ..backbones import get_backbone

    try:
        same_by_name = get_backbone(spec.name).weights_id == spec.weights_id
    except HeadstartError:
        same_by_name = False
    if not same_by_name:
        export_verified(build_tap_model(spec, tap), graph, input_size)
        return
    command = [sys.executable, "-m", "headstart.features.engine", spec.name, tap, str(input_size), str(graph)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout or "no output").strip().splitlines()
        raise HeadstartError(f"export failed: {lines[-1] if lines else done.returncode}")


def export_verified(model: torch.nn.Module, path: Path, input_size: int, output_names: list[str] | None = None) -> None:
    """Export ``model`` to ONNX at ``path`` only if ONNX Runtime reproduces eager fp32 on all its
    outputs (named ``output_names`` when given)."""
    import onnxruntime  # noqa: F401  (fail early, before the slow export, if it is missing)

    example = torch.randn(2, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    with atomic_path(path) as tmp:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet_loggers("onnx_ir", "onnxscript", "torch.onnx"):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                str(tmp),
                dynamo=True,
                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                external_data=False,
                verbose=False,
                output_names=output_names,
            )
        check = torch.randn(3, 3, input_size, input_size, generator=torch.Generator().manual_seed(1))
        with torch.inference_mode():
            outputs = model(check)
        expected = [o.numpy() for o in (outputs if isinstance(outputs, tuple) else (outputs,))]
        engine = OnnxEngine(tmp)
        got = engine.session.run(None, {engine.input_name: check.numpy()})
        error = max(float(np.abs(g - e).max()) / (1.0 + float(np.abs(e).max())) for g, e in zip(got, expected))
        if not error <= PARITY_TOLERANCE:
            raise HeadstartError(f"exported graph differs from eager PyTorch by {error:.2e}")


@contextlib.contextmanager
def _quiet_loggers(*names: str):
    """The exporter logs every graph pass at INFO; users need none of it."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


if __name__ == "__main__":  # the child process of export_graph: NAME TAP SIZE PATH
    from ..backbones import get_backbone

    name, tap_name, size, target = sys.argv[1:5]
    export_verified(build_tap_model(get_backbone(name), tap_name), Path(target), int(size))
