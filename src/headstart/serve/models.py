"""A saved run made ready to answer requests: its record, its input preparation and a runner that
turns a batch of prepared images into probabilities (and novelty scores).

The runner is the exported ONNX graph in ONNX Runtime (RUN/model.onnx when it is newer than the
model, else exported on the fly and kept in the cache folder: the run directory is only ever read),
or the PyTorch module on CUDA when ``device`` says so. Either way the graph is the one
``headstart export`` checks against PyTorch, so the server answers what ``predict`` answers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .. import progress
from .._atomic import atomic_path
from .._json import to_json_label
from .._version import __version__, code_fingerprint
from ..data.decode import decode_image
from ..errors import HeadstartError
from ..features.cache import default_cache_dir
from ..fitted import FittedModel
from ..persistence import META_FILE, METRICS_FILE, REPORT_FILE, WEIGHTS_FILE, load_model

log = logging.getLogger(__name__)
ONNX_FILE = "model.onnx"
# Refused before decoding: 40 megapixels (a 7,300 x 5,500 photo) is larger than any camera image a
# person uploads to try a model, and bounds what one request can make the server allocate (~120 MB).
SERVE_MAX_PIXELS = 40_000_000

Runner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]


@dataclass(frozen=True)
class ServedModel:
    """One run as the server holds it; replaced as a whole on reload, never changed in place."""

    name: str
    run: Path
    record: FittedModel
    prepare: Callable  # PIL RGB image -> CHW float tensor, exactly as predict prepares it
    runner: Runner
    engine: str  # "onnxruntime" or "torch-cuda"
    description: dict = field(repr=False)
    loaded_at: float = field(default_factory=time.time)

    @property
    def classes(self) -> list:
        """The labels as JSON has them, made once at load (every prediction reads them)."""
        return self.description["classes"]

    @property
    def threshold(self) -> float | None:
        return self.record.novelty.threshold if self.record.novelty is not None else None

    def image_array(self, data: bytes, max_pixels: int = SERVE_MAX_PIXELS) -> np.ndarray:
        """Bytes of one image file -> the graph's input row (raises UnreadableImage)."""
        p = self.record.preprocessing
        return self.prepare(decode_image(data, draft_size=p.resize, max_pixels=max_pixels)).numpy()

    @property
    def report(self) -> Path | None:
        path = self.run / REPORT_FILE
        return path if path.is_file() else None


def load_served(run: str | Path, name: str | None = None, device: str = "auto") -> ServedModel:
    """Load ``run`` for serving under ``name`` (default: the run directory's name)."""
    run = Path(run).expanduser()
    record = load_model(run)
    runner, engine = _torch_cuda_runner(record) if _use_cuda(device) else _onnx_runner(record, run)
    return ServedModel(
        name=name or run.resolve().name, run=run, record=record, prepare=record.preprocessing.transform(),
        runner=runner, engine=engine, description=_description(record, run),
    )


def _use_cuda(device: str) -> bool:
    if device == "cpu":
        return False
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise HeadstartError("--device cuda: no CUDA device is visible here; use --device auto or cpu.")
    return torch.cuda.is_available()


def _onnx_runner(record: FittedModel, run: Path) -> tuple[Runner, str]:
    import onnxruntime as ort

    session = ort.InferenceSession(_onnx_graph(record, run), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]

    def run_batch(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        outputs = session.run(names, {"x": batch})
        return outputs[0], outputs[1] if len(outputs) > 1 else None

    return run_batch, "onnxruntime"


def _onnx_graph(record: FittedModel, run: Path) -> bytes:
    """RUN/model.onnx when it was exported from the model now in RUN, else the graph exported for
    this very model before (in the cache folder, keyed by model.json, which names the weights'
    hash), else a fresh export, kept there for the next start (5.2 s against 3.5 s on 2 cores)."""
    saved = run / ONNX_FILE
    if saved.is_file() and saved.stat().st_mtime >= (run / WEIGHTS_FILE).stat().st_mtime:
        return saved.read_bytes()
    key = hashlib.sha256(f"{__version__} {code_fingerprint()}".encode() + (run / META_FILE).read_bytes()).hexdigest()
    cached = default_cache_dir() / "served" / f"{key}.onnx"
    if cached.is_file():
        return cached.read_bytes()
    from ..export import export_onnx

    progress.announce(f"exporting {run}'s ONNX graph and checking it against PyTorch, once: later starts reuse it", seconds=2)
    with tempfile.TemporaryDirectory(prefix="headstart-serve-") as folder:
        graph = export_onnx(record, Path(folder) / ONNX_FILE).read_bytes()
    try:
        with atomic_path(cached) as partial:
            partial.write_bytes(graph)
    except OSError as exc:  # a read-only cache costs the next start an export, nothing more
        log.info("could not keep the exported graph in %s: %s", cached.parent, exc)
    return graph


def _torch_cuda_runner(record: FittedModel) -> tuple[Runner, str]:
    import torch

    from ..export import probability_module

    module = probability_module(record).cuda()

    @torch.inference_mode()
    def run_batch(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        outputs = module(torch.from_numpy(batch).cuda(non_blocking=True))
        if isinstance(outputs, tuple):
            return outputs[0].float().cpu().numpy(), outputs[1].float().cpu().numpy()
        return outputs.float().cpu().numpy(), None

    return run_batch, "torch-cuda"


def _description(record: FittedModel, run: Path) -> dict:
    """What GET /v1/models says about the model: classes, how it was made, how well it did."""
    evaluation = _read_metrics(run).get("evaluation") or {}
    figures = {key: evaluation[key] for key in ("split", "n_images", "accuracy", "accuracy_ci95", "balanced_accuracy") if key in evaluation}
    return {
        "classes": [to_json_label(c) for c in record.classes],
        "strategy": record.strategy,
        "backbone": record.backbone,
        "input_size": record.preprocessing.crop,
        "novelty": {"method": record.novelty.method, "threshold": record.novelty.threshold} if record.novelty is not None else None,
        "metrics": figures,
    }


def _read_metrics(run: Path) -> dict:
    try:
        return json.loads((run / METRICS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # a model saved from the API has no metrics.json
