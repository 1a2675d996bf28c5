"""Saved models: a directory with ``model.safetensors`` (arrays) and ``model.json`` (everything else).

Loading reads JSON and safetensors only, so opening a model file can never run code. Saving builds
the whole directory in a staging folder and swaps it in atomically: a crash mid-save leaves the
previous model as it was.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors.numpy import load_file, save_file

from ._atomic import atomic_directory, check_replaceable, give_usual_mode
from ._json import jsonable
from .errors import HeadstartError, ModelFileError

if TYPE_CHECKING:  # imported where a model is built: reading model.json (read_meta) needs no PyTorch
    from .fitted import FittedModel

FORMAT = "headstart.model"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"
HISTORY_FILE = "history.json"
PLAN_FILE = "plan.json"  # the advisor's measurements, alternatives and explanation (strategy="auto")
CHECKPOINTS = "checkpoints"  # fine-tuning checkpoints, kept when the run directory is rewritten
TENSORBOARD = "tensorboard"  # TensorBoard logs (--tensorboard), kept the same way
UNREADABLE_FILE = "unreadable.txt"  # --strict's list of unreadable images, when too many for one line
# Everything a run directory may hold; saving replaces a folder holding only these, and no other.
RUN_FILES = frozenset({WEIGHTS_FILE, META_FILE, METRICS_FILE, REPORT_FILE, HISTORY_FILE, PLAN_FILE, CHECKPOINTS, TENSORBOARD, UNREADABLE_FILE, "model.onnx", "model.onnx.json"})


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("headstart", "torch", "torchvision", "scikit-learn", "numpy", "onnxruntime", "timm"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def save_model(record: FittedModel, directory: Path, *, metrics: dict | None = None, report_html: str | None = None) -> Path:
    """Write ``record`` to ``directory`` as a whole (the previous contents are replaced atomically,
    except its checkpoints and TensorBoard logs), with ``metrics`` and the report when given."""
    directory = Path(directory).expanduser()  # '~/runs/x' from Python is the home folder's, as on a shell
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **record.to_json(),
        "versions": library_versions(),
    }
    documents = {METRICS_FILE: metrics, PLAN_FILE: record.plan.to_dict() if record.plan is not None else None}
    documents[HISTORY_FILE] = record.history.to_dict() if record.history is not None else None
    with atomic_directory(directory, RUN_FILES, "run") as staging:
        for kept in (CHECKPOINTS, TENSORBOARD):  # copied, not moved: a failed save must not lose them
            if (directory / kept).is_dir():
                shutil.copytree(directory / kept, staging / kept)
        save_file(record.to_tensors(), str(staging / WEIGHTS_FILE))
        give_usual_mode(staging / WEIGHTS_FILE)
        meta["weights_sha256"] = _sha256(staging / WEIGHTS_FILE)
        (staging / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        for name, document in documents.items():
            if document is not None:
                (staging / name).write_text(json.dumps(document, indent=2, default=jsonable) + "\n", encoding="utf-8")
        if report_html is not None:
            (staging / REPORT_FILE).write_text(report_html, encoding="utf-8")
    return directory


def check_run_output(output) -> Path:
    """``output`` with '~' expanded, as a shell would, if a run may be written there: a new or empty
    folder, or a run's (whose checkpoints and TensorBoard logs are kept); else a DataError."""
    output = Path(output).expanduser()
    check_replaceable(output, RUN_FILES, "run")
    return output


def load_model(directory: Path) -> FittedModel:
    """The record :func:`save_model` wrote, plan and history included; reads JSON and safetensors only."""
    directory = Path(directory).expanduser()
    meta = read_meta(directory)
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise ModelFileError(f"{directory} has no {WEIGHTS_FILE}; re-run fit to write a complete model.")
    if meta.get("weights_sha256") and _sha256(weights_path) != meta["weights_sha256"]:
        raise ModelFileError(f"{weights_path} does not match {META_FILE} (edited or damaged); re-run fit.")
    try:
        tensors = load_file(str(weights_path))
    except Exception as exc:
        raise ModelFileError(f"cannot read {weights_path} ({exc}); re-run fit.") from None
    from .fitted import FittedModel

    record = FittedModel.from_json(meta, tensors, plan=_read_json(directory / PLAN_FILE), history=_read_json(directory / HISTORY_FILE))
    _check_backbone(record)
    return record


def read_meta(directory: Path) -> dict:
    path = Path(directory) / META_FILE
    if not Path(directory).exists():
        raise ModelFileError(f"{directory} does not exist; give the run directory written by 'headstart fit DATA -o RUN'.")
    if not path.is_file():
        raise ModelFileError(f"{directory} is not a headstart model (no {META_FILE}); give the folder written by 'headstart fit -o'.")
    meta = _read_json(path)
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a headstart model file.")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ModelFileError(f"{path} was written by a newer headstart (format {meta['format_version']}); upgrade headstart.")
    return meta


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path} is not valid JSON ({exc}); re-run fit.") from None


def _check_backbone(record: FittedModel) -> None:
    """The head only makes sense on the exact codes it was trained on."""
    from .features import code_extractor

    try:
        expected = code_extractor(record.backbone, record.tap, input_size=record.input_size, cache=False).fingerprint
    except HeadstartError:
        return  # reported when codes are first needed, with the install hint
    if expected != record.fingerprint:
        raise ModelFileError(
            f"this model was trained on other {record.backbone} weights or preprocessing than the installed ones; "
            "re-train it with this installation."
        )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
