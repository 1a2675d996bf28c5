"""FittedModel: everything one fit produced, as one typed record.

The estimator holds one (``TransferClassifier.fitted_``, its fitted attributes are views of it);
persistence, diagnostics, the report and export read it, and none of them reads the estimator. It
converts to JSON and arrays and back, so a saved model is data: loading one runs no code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from torch import nn

from ._json import as_json, to_json_label
from .advisor import Plan
from .backbones import Preprocessing, backbone_taps, build_joined_model, build_tap_model, get_backbone
from .errors import ModelFileError
from .strategies import LinearFitReport, LinearHead
from .strategies.ensemble import LinearProbeNet, ProbabilityAverage
from .strategies.finetune import FineTuneNet
from .strategies.novelty import NoveltyDetector
from .training import History

NET_PREFIX = "net."  # fine-tuned network tensors, beside the linear head's
NOVELTY_PREFIX = "novelty."  # the novelty detector's arrays
# The estimator parameters that describe the model (the others describe the machine it ran on).
MODEL_PARAMS = ("backbone", "tap", "classifier", "solver", "strategy", "finetune", "time_budget", "Cs", "class_weight", "input_size", "random_state")


@dataclass(eq=False)
class FittedModel:
    """What a fit produced: the head (and network), where its codes come from, and how it was made."""

    classes: np.ndarray  # labels exactly as given (integer labels stay integers)
    head: LinearHead  # the linear classifier on the codes (the fine-tuned network's warm start)
    head_report: LinearFitReport  # its regularisation, cross-validated score, class weighting
    strategy: str  # as run: "linear", "finetune_top", "finetune_all", "gradual" or "scratch"
    backbone: str  # whose codes: "mobilenet_v2", "mobilenet_v2+efficientnet_lite0" (joined), "scratch_cnn@he_normal"
    tap: str  # where the head reads them: "pre_logits", "features.13+pre_logits", ...
    preprocessing: Preprocessing
    fingerprint: str  # what the codes mean (weights, tap, preprocessing, joining); checked on load
    n_train: int  # training images used
    skipped: dict[int, str] = field(default_factory=dict)  # training image index -> why it was not used
    network: FineTuneNet | None = None  # the fine-tuned network; predictions come from it when present
    history: History | None = None  # per-epoch record of fine-tuning
    plan: Plan | None = None  # strategy="auto": what the advisor measured, chose and why
    finetune: dict | None = None  # fine-tuning settings, imbalance handling, bf16, mirror warning
    params: dict = field(default_factory=dict)  # the MODEL_PARAMS the estimator was given
    run: dict = field(default_factory=dict)  # how the fit ran: world_size, backend, device
    novelty: NoveltyDetector | None = None  # "none of these": scores images unlike the training ones
    _ensemble: nn.Module | None = field(default=None, init=False, repr=False)  # predictor()'s, built once

    def __repr__(self) -> str:
        # The dataclass's own repr printed every weight array, the novelty bank and the plan.
        return (
            f"FittedModel(strategy={self.strategy!r}, backbone={self.backbone!r}, tap={self.tap!r}, "
            f"classes={len(self.classes)}, n_train={self.n_train}, input_size={self.input_size})"
        )

    @property
    def input_size(self) -> int:
        """The side images are read at (given, or chosen from the images by recipe.input_size)."""
        return self.preprocessing.crop

    @property
    def ensembled(self) -> bool:
        """Whether predictions average the fine-tuned network's probabilities with the linear head's
        (files from before the ensemble existed say nothing, and predict as they did)."""
        return self.network is not None and bool((self.finetune or {}).get("ensemble", False))

    def predictor(self) -> nn.Module | None:
        """The module a fine-tuned model predicts with, from a preprocessed batch to logits (or
        log-probabilities): the network, or the network and the linear head averaged; None for a
        linear head alone, which predicts from codes. Built once: the ensemble's second backbone
        is the pretrained one, rebuilt from its weights, not saved again."""
        if self.network is None:
            return None
        if not self.ensembled:
            return self.network
        if self._ensemble is None or self._ensemble.members[0] is not self.network:
            self._ensemble = ProbabilityAverage(self.network, self.linear_probe()).eval()
        return self._ensemble

    def linear_probe(self) -> LinearProbeNet:
        """The linear head on its backbone's codes as one module, from an input prepared as
        :attr:`preprocessing` says (joined backbones: the first one's preparation, re-normalised
        inside for the others)."""
        if "+" not in self.backbone:
            return LinearProbeNet(build_tap_model(get_backbone(self.backbone), self.tap), self.head)
        specs, taps = zip(*[(get_backbone(name), part or get_backbone(name).default_tap) for name, part in backbone_taps(self.backbone, self.tap)])
        size = self.input_size
        preprocessings = [spec.preprocessing.with_size(size) if size else spec.preprocessing for spec in specs]
        return LinearProbeNet(build_joined_model(list(specs), list(taps), preprocessings), self.head)

    def to_json(self) -> dict:
        """Everything but the arrays, the plan and the history (each saved beside it)."""
        r = self.head_report
        return as_json({
            "strategy": self.strategy,
            "finetune": self.finetune if self.network is not None else None,
            "classes": [to_json_label(c) for c in self.classes],
            "backbone": self.backbone,
            "tap": self.tap,
            "preprocessing": self.preprocessing.to_dict(),
            "fingerprint": self.fingerprint,
            "head": {
                "kind": self.head.kind, "C": r.C, "class_weight": r.class_weight, "cv_folds": r.cv_folds, "cv_score": r.cv_score,
                "cv_score_std": r.cv_score_std, "cv_scoring": r.scoring, "imbalance_ratio": r.imbalance_ratio,
                "solver": r.solver, "held_out": r.held_out, "duplicate_groups": r.duplicate_groups, "class_counts": r.class_counts,
            },
            "n_train": self.n_train,
            "skipped": {str(index): why for index, why in self.skipped.items()},
            "run": self.run,
            "novelty": self.novelty.to_json() if self.novelty is not None else None,
            "params": {name: self.params[name] for name in MODEL_PARAMS if name in self.params},  # older files lack newer names
        })

    def to_tensors(self) -> dict[str, np.ndarray]:
        tensors = {k: np.ascontiguousarray(v) for k, v in self.head.to_tensors().items()}
        if self.network is not None:
            tensors |= {NET_PREFIX + k: v.detach().cpu().contiguous().numpy() for k, v in self.network.state_dict().items()}
        if self.novelty is not None:
            tensors |= self.novelty.to_tensors(NOVELTY_PREFIX)
        return tensors

    @classmethod
    def from_json(cls, meta: dict, tensors: dict[str, np.ndarray], *, plan: dict | None = None, history: dict | None = None) -> "FittedModel":
        """The record :meth:`to_json` and :meth:`to_tensors` gave (with the plan's and history's dicts)."""
        head = meta["head"]
        record = cls(
            classes=np.asarray(meta["classes"]),
            head=LinearHead.from_tensors(head["kind"], tensors),
            head_report=LinearFitReport(
                head["C"], head["cv_folds"], head["cv_score"], head["cv_score_std"], head["cv_scoring"], head["class_weight"], head["imbalance_ratio"],
                head.get("solver", "sklearn"), head.get("held_out", 0), head.get("duplicate_groups"), head.get("class_counts"),
            ),
            strategy=meta.get("strategy", "linear"),
            backbone=meta["backbone"],
            tap=meta["tap"],
            preprocessing=Preprocessing.from_dict(meta["preprocessing"]),
            fingerprint=meta["fingerprint"],
            n_train=meta["n_train"],
            skipped={int(index): why for index, why in (meta.get("skipped") or {}).items()},
            plan=Plan.from_dict(plan) if plan is not None else None,
            history=History.from_dict(history) if history is not None else None,
            finetune=meta.get("finetune"),
            params=meta["params"],
            run=meta.get("run") or {},
            novelty=NoveltyDetector.from_saved(meta["novelty"], tensors, NOVELTY_PREFIX) if meta.get("novelty") else None,
        )
        if record.strategy != "linear":
            record.network = _network(record, tensors)
        return record


def _network(record: FittedModel, tensors: dict[str, np.ndarray]) -> FineTuneNet:
    state = {k.removeprefix(NET_PREFIX): torch.from_numpy(v.copy()) for k, v in tensors.items() if k.startswith(NET_PREFIX)}
    if not state:
        raise ModelFileError(f"the model is marked {record.strategy!r} but holds no network weights; re-run fit.")
    pooling = (record.finetune or {}).get("pooling", "avg")
    net = FineTuneNet(get_backbone(record.backbone), len(record.classes), pooling=pooling)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"the saved network does not fit {record.backbone} ({str(exc).splitlines()[0]}); re-run fit.") from None
    return net.eval()


def as_record(model) -> FittedModel:
    """The record of a fitted :class:`~headstart.TransferClassifier`, or ``model`` if it is one."""
    if isinstance(model, FittedModel):
        return model
    record = getattr(model, "fitted_", None)
    if not isinstance(record, FittedModel):
        raise NotFittedError(f"expected a fitted TransferClassifier or a FittedModel, got {type(model).__name__}; call fit first.")
    return record
