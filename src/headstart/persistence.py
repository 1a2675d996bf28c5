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

import numpy as np
from safetensors.numpy import load_file, save_file

from ._atomic import atomic_directory
from .backbones import Preprocessing
from .errors import HeadstartError, ModelFileError
from .strategies import LinearHead

FORMAT = "headstart.model"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"

# Constructor parameters that describe the model rather than the machine it was trained on.
_SAVED_PARAMS = ("backbone", "tap", "classifier", "strategy", "finetune", "time_budget", "Cs", "class_weight", "input_size", "random_state")
HISTORY_FILE = "history.json"
PLAN_FILE = "plan.json"  # the advisor's measurements, alternatives and explanation (strategy="auto")
CHECKPOINTS = "checkpoints"  # fine-tuning checkpoints, kept when the run directory is rewritten
TENSORBOARD = "tensorboard"  # TensorBoard logs (--tensorboard), kept the same way
NET_PREFIX = "net."  # fine-tuned network tensors, beside the linear head's in one safetensors file


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("headstart", "torch", "torchvision", "scikit-learn", "numpy", "onnxruntime", "timm"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def as_json(data: dict) -> dict:
    """``data`` as it reads back from JSON (numpy scalars and arrays become plain values)."""
    return json.loads(json.dumps(data, default=_jsonable))


def to_json_label(label):
    """numpy scalars become plain ints/floats/strings so labels survive JSON unchanged."""
    return label.item() if isinstance(label, np.generic) else label


def save_model(model, directory: Path, *, metrics: dict | None = None, report_html: str | None = None) -> Path:
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(model, "head_")
    report = model.fit_report_
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "strategy": model.strategy_,  # as resolved: "auto" never reaches a saved model
        "finetune": getattr(model, "finetune_settings_", None) if model.net_ is not None else None,
        "classes": [to_json_label(c) for c in model.classes_],
        "backbone": model.resolved_backbone(),
        "tap": model.tap_,
        "preprocessing": model.preprocessing_.to_dict(),
        "fingerprint": model.fingerprint_,
        "head": {
            "kind": model.head_.kind,
            "C": report.C,
            "class_weight": report.class_weight,
            "cv_folds": report.cv_folds,
            "cv_score": report.cv_score,
            "cv_score_std": report.cv_score_std,
            "cv_scoring": report.scoring,
            "imbalance_ratio": report.imbalance_ratio,
        },
        "n_train": model.n_train_,
        "params": {name: _jsonable(getattr(model, name)) for name in _SAVED_PARAMS},
        "versions": library_versions(),
    }
    tensors = {k: np.ascontiguousarray(v) for k, v in model.head_.to_tensors().items()}
    if model.net_ is not None:
        tensors |= {NET_PREFIX + k: v.detach().cpu().contiguous().numpy() for k, v in model.net_.state_dict().items()}
    with atomic_directory(directory) as staging:
        for kept in (CHECKPOINTS, TENSORBOARD):  # copied, not moved: a failed save must not lose them
            if (directory / kept).is_dir():
                shutil.copytree(directory / kept, staging / kept)
        save_file(tensors, str(staging / WEIGHTS_FILE))
        meta["weights_sha256"] = _sha256(staging / WEIGHTS_FILE)
        (staging / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if metrics is not None:
            (staging / METRICS_FILE).write_text(json.dumps(metrics, indent=2, default=_jsonable) + "\n", encoding="utf-8")
        if report_html is not None:
            (staging / REPORT_FILE).write_text(report_html, encoding="utf-8")
        if model._uses_advisor() and getattr(model, "plan_", None) is not None:
            (staging / PLAN_FILE).write_text(json.dumps(model.plan_.to_dict(), indent=2, default=_jsonable) + "\n", encoding="utf-8")
        if model.history_ is not None:
            (staging / HISTORY_FILE).write_text(json.dumps(model.history_.to_dict(), indent=2) + "\n", encoding="utf-8")
    return directory


def load_model(directory: Path):
    from .estimator import TransferClassifier
    from .strategies import LinearFitReport

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
    model = TransferClassifier(**meta["params"])
    head = meta["head"]
    model.head_ = LinearHead.from_tensors(head["kind"], tensors)
    model.fit_report_ = LinearFitReport(
        head["C"], head["cv_folds"], head["cv_score"], head["cv_score_std"], head["cv_scoring"], head["class_weight"], head["imbalance_ratio"]
    )
    model.classes_ = np.asarray(meta["classes"])
    model.tap_ = meta["tap"]
    model.backbone_ = meta["backbone"]
    model.strategy_ = meta.get("strategy", "linear")
    model.preprocessing_ = Preprocessing.from_dict(meta["preprocessing"])
    model.fingerprint_ = meta["fingerprint"]
    model.n_train_ = meta["n_train"]
    model.skipped_ = {}
    model.net_ = _load_network(model, meta, tensors) if meta.get("strategy", "linear") != "linear" else None
    model.history_ = None
    _check_backbone(model)
    return model


def _load_network(model, meta: dict, tensors: dict[str, np.ndarray]):
    import torch

    from .backbones import get_backbone
    from .strategies.finetune import FineTuneNet

    state = {k.removeprefix(NET_PREFIX): torch.from_numpy(v.copy()) for k, v in tensors.items() if k.startswith(NET_PREFIX)}
    if not state:
        raise ModelFileError(f"the model is marked {meta['strategy']!r} but holds no network weights; re-run fit.")
    pooling = (meta.get("finetune") or {}).get("pooling", "avg")
    net = FineTuneNet(get_backbone(model.resolved_backbone()), len(model.classes_), pooling=pooling)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"the saved network does not fit {model.resolved_backbone()} ({str(exc).splitlines()[0]}); re-run fit.") from None
    model.finetune_settings_ = meta.get("finetune")
    return net.eval()


def read_meta(directory: Path) -> dict:
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise ModelFileError(f"{directory} is not a headstart model (no {META_FILE}); give the folder written by 'headstart fit -o'.")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path} is not valid JSON ({exc}); re-run fit.") from None
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a headstart model file.")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ModelFileError(f"{path} was written by a newer headstart (format {meta['format_version']}); upgrade headstart.")
    return meta


def _check_backbone(model) -> None:
    """The head only makes sense on the exact codes it was trained on."""
    try:
        expected = model._extractor().fingerprint
    except HeadstartError:
        return  # reported when codes are first needed, with the install hint
    if expected != model.fingerprint_:
        raise ModelFileError(
            f"this model was trained on other {model.resolved_backbone()} weights or preprocessing than the installed ones; "
            "re-train it with this installation."
        )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _jsonable(value):
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value
