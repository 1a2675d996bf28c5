"""Run a tapped backbone on batches: eager PyTorch, or ONNX Runtime when it is faster and agrees.

On this kind of CPU, ONNX Runtime runs MobileNetV2 ~5x faster than eager fp32 (channels_last).
Every exported graph is checked against eager fp32 before first use and cached only if it agrees;
if export or the check fails, extraction falls back to PyTorch and says so. Exporting costs about
1 s (TorchScript tracing; the dynamo exporter, the fallback, takes ~11 s), so a pass with too few
images to win that back runs eagerly instead, unless a graph that gives its codes is cached: its
own, or the advisor's measuring graph (:func:`taps_graph`), whose outputs are named by tap.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .._atomic import atomic_path, cache_write_failed
from ..backbones import BackboneSpec, Preprocessing, build_tap_model
from ..errors import HeadstartError
from ..hardware import resolve_device

log = logging.getLogger(__name__)

# Said once per export otherwise. Set here too, not only inside the export's catch_warnings: that
# one holds for the export's call alone, and a caller's filters (pytest's, per test) change around it.
warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")

ENGINES = ("auto", "onnx", "torch")
# Largest tolerated |onnx - eager| relative to the codes' magnitude.
PARITY_TOLERANCE = 1e-4
# Images a 224 px pass must compute before exporting its graph pays for itself. Measured on the
# 2-core CPU (batch 32, 224 px): tracing, exporting and checking 1.1 s (MobileNetV2) and 0.9 s
# (EfficientNet-Lite0); eager channels_last 17.8 and 19.9 ms per image, ONNX Runtime 3.6 and 5.6 ms:
# the export is worth 80 and 65 images. Both costs scale with the CPU alike, so the ratio travels.
# What an image saves grows with its pixels while the export's cost does not (export_pays_from).
# A graph already exported is used whatever the count.
EXPORT_PAYS_FROM = 100
# Images per ONNX Runtime call. Its arena keeps the largest call's activations: at 224 px, 8 at a
# time peaked at 174 MB (MobileNetV2) and 303 MB (EfficientNet-Lite0) against 432 and 918 MB with
# 32, and ran as fast or faster (2.59 against 2.79, 4.84 against 5.54 ms per image).
ONNX_BATCH = 8


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
    """ONNX Runtime on the CPU, from a graph exported by :func:`export_verified`. Called, it gives
    the graph's first output, or its outputs named ``codes`` side by side (taps of a graph that has
    several, as :class:`~headstart.backbones.MultiTap` joins them)."""

    name = "onnx"

    def __init__(self, path: Path, codes: list[str] | None = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [output.name for output in self.session.get_outputs()]
        self.codes = codes

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        return np.concatenate(self.outputs(batch, self.codes), axis=1) if self.codes else self.outputs(batch)[0]

    def outputs(self, batch: torch.Tensor, names: list[str] | None = None) -> list[np.ndarray]:
        """The outputs ``names`` (default: all, in the graph's order) for ``batch``."""
        pixels = batch.numpy()
        chunks = [self.session.run(names, {self.input_name: pixels[i:i + ONNX_BATCH]}) for i in range(0, len(pixels), ONNX_BATCH)]
        return [np.concatenate(parts) for parts in zip(*chunks)]


def export_pays_from(input_size: int) -> float:
    """Images a pass at ``input_size`` px must compute for exporting its graph to pay for itself:
    :data:`EXPORT_PAYS_FROM` at 224 px, scaled by the pixels each image saves time on (60 at 288 px,
    544 at 96 px). Measured for MobileNetV2 on the 2-core CPU (2026-12-06, batch 32; export 0.5-1.1 s):
    ONNX Runtime saved 1.0 ms an image against eager at 96 px, 4.7 at 160, 12.6 at 224, 21.6 at 288,
    so a 96 px pass paid from 450-1,150 images and a 288 px one from 20-50 (benchmarks/bench_export_pays.py)."""
    return EXPORT_PAYS_FROM * (224 / input_size) ** 2


# The ImageNet logits' output in a taps graph; its other outputs are named by tap.
LOGITS = "logits"


def taps_graph(cache_root: Path, spec: BackboneSpec, preprocessing: Preprocessing) -> Path:
    """Where the graph of ``spec`` that gives the ImageNet logits and the pooled codes of several
    taps (outputs named ``logits`` and by tap) is cached: the advisor's measuring pass exports it,
    and a later pass at any of its taps (the fit's held-out images, a prediction) runs in it
    instead of eagerly or exporting a graph of its own."""
    return cache_root / "onnx" / f"{spec.fingerprint('taps', preprocessing)}-taps-{preprocessing.crop}.onnx"


def create_engine(
    spec: BackboneSpec,
    tap: str,
    *,
    preprocessing: Preprocessing,
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
    input_size = preprocessing.crop
    graph = cache_root / "onnx" / f"{spec.fingerprint(tap, preprocessing)}-{input_size}.onnx"
    pays = engine == "onnx" or images is None or images >= export_pays_from(input_size)
    try:
        onnx = None if graph.is_file() else cached_graph(taps_graph(cache_root, spec, preprocessing), None, tap.split("+"))
        onnx = onnx or cached_graph(graph, (lambda path: export_graph(spec, tap, input_size, path)) if pays else None)
    except Exception as exc:
        if engine == "onnx":
            raise HeadstartError(f"ONNX export of {spec.name} failed ({exc}); use engine='torch' (--engine torch).") from None
        log.warning("ONNX Runtime unavailable for %s (%s); using PyTorch", spec.name, str(exc).splitlines()[0][:200])
        onnx = None
    return onnx if onnx is not None else TorchEngine(build_tap_model(spec, tap), torch_device)


def cached_graph(graph: Path, export: Callable[[Path], None] | None, codes: list[str] | None = None) -> OnnxEngine | None:
    """ONNX Runtime on the verified graph at ``graph`` (giving its outputs ``codes`` side by side,
    where named): the cached file (exported again if it is damaged or lacks one of ``codes``),
    else the one ``export(graph)`` writes there; None where there is none and no ``export``. Raises
    what the export (or loading what it wrote) raises. A cache folder that cannot be written gets
    the graph exported to a temporary folder, deleted once ONNX Runtime has read it: the run is as
    fast, and only the next one pays for the export again."""
    if graph.is_file():
        try:
            cached = OnnxEngine(graph, codes)
            missing = set(codes or ()) - set(cached.output_names)
            if not missing:
                return cached
            log.info("%s has no output %s", graph.name, sorted(missing))
        except Exception as exc:  # a damaged graph file: export it again
            log.warning("cannot use %s: %s", graph, exc)
    if export is None:
        return None
    if not _writable_folder(graph.parent):
        cache_write_failed(graph.parent.parent, PermissionError(f"cannot write in {graph.parent}"))
        with tempfile.TemporaryDirectory(prefix="headstart-onnx-") as folder:
            export(Path(folder) / graph.name)
            return OnnxEngine(Path(folder) / graph.name, codes)  # the session holds the graph in memory
    export(graph)
    return OnnxEngine(graph, codes)


def _writable_folder(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def export_graph(spec: BackboneSpec, tap: str, input_size: int, graph: Path) -> None:
    """Export and verify ``spec``'s graph at ``tap``. Tracing it in this process adds about 40 MB to
    the peak (MobileNetV2); a child process would cost a second start of PyTorch, ~2.5 s."""
    export_verified(build_tap_model(spec, tap), graph, input_size)


def export_verified(model: torch.nn.Module, path: Path, input_size: int, output_names: list[str] | None = None) -> None:
    """Export ``model`` to ONNX at ``path`` only if ONNX Runtime reproduces eager fp32 on all its
    outputs (named ``output_names`` when given): by TorchScript tracing (about 1 s), or where that
    fails or disagrees, by the dynamo exporter (about 11 s)."""
    import onnxruntime  # noqa: F401  (fail early, before the slow export, if it is missing)

    example = torch.randn(2, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    with atomic_path(path) as tmp:
        try:
            _export(model, example, tmp, output_names, dynamo=False)
            _check(model, tmp, input_size)
        except Exception as exc:  # an op tracing cannot export, or a graph that disagrees
            log.info("TorchScript export of the graph failed (%s); using the dynamo exporter", str(exc).splitlines()[0][:200])
            _export(model, example, tmp, output_names, dynamo=True)
            _check(model, tmp, input_size)


def _export(model: torch.nn.Module, example: torch.Tensor, path: Path, output_names: list[str] | None, *, dynamo: bool) -> None:
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet_loggers("onnx_ir", "onnxscript", "torch.onnx"):
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated in favour of dynamo's
        if dynamo:
            torch.onnx.export(
                model, (example,), str(path), dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                external_data=False, verbose=False, output_names=output_names,
            )
            return
        with torch.no_grad():
            outputs = model(example)
        count = len(outputs) if isinstance(outputs, tuple) else 1
        names = output_names or [f"output{i}" for i in range(count)]
        torch.onnx.export(
            model, (example,), str(path), dynamo=False, input_names=["x"], output_names=names,
            dynamic_axes={name: {0: "batch"} for name in ["x", *names]}, opset_version=17,
        )


def _check(model: torch.nn.Module, path: Path, input_size: int) -> None:
    check = torch.randn(3, 3, input_size, input_size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        outputs = model(check)
    expected = [o.numpy() for o in (outputs if isinstance(outputs, tuple) else (outputs,))]
    engine = OnnxEngine(path)
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
