"""TransferClassifier: a scikit-learn estimator over images, a pretrained CNN plus a linear head.

It follows scikit-learn's contract: ``__init__`` only stores its arguments, all work happens in
``fit``, fitted state ends in ``_``. It can be cloned, pickled, grid-searched and cross-validated;
``save``/``load`` write and read a directory of JSON and safetensors (no pickle, no code).
"""

from __future__ import annotations

import difflib
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from ._memory import release_freed_memory
from .backbones import PRE_LOGITS, Preprocessing, get_backbone
from .errors import DataError
from .features import CodeExtractor, Codes, ConcatExtractor, ImageInput
from .strategies import LinearFitReport, LinearHead, fit_linear_head
from .strategies.linear import softmax

log = logging.getLogger(__name__)


# Training images (a seeded sample) on which a mirroring augmentation policy is checked.
MIRROR_CHECK_IMAGES = 100
# strategy="scratch": a randomly initialised network needs every layer learning at the full rate,
# BatchNorm statistics of its own, and more epochs than fine-tuning (finetune={...} overrides these).
SCRATCH_DEFAULTS = {"lr_mult": 1.0, "batchnorm": "batch", "epochs": 30, "patience": 8}


class TransferClassifier(ClassifierMixin, BaseEstimator):
    """Image classifier: CNN codes from a pretrained backbone, then a linear classifier.

    Parameters
    ----------
    backbone : str, default="mobilenet_v2"
        A registered backbone (``mobilenet_v2``, ``efficientnet_lite0`` work offline), or any
        torchvision / timm model name, e.g. ``"torchvision/resnet50"``. Names joined by ``+``
        join the backbones' codes, each signed-square-rooted and scaled to unit rows (a cheap
        ensemble). With ``strategy="auto"`` the advisor may join the other embedded backbone
        itself (``resolved_backbone()`` says which ran).
    tap : str, optional
        Where to read the codes; default ``"pre_logits"``, the pooled activations feeding the
        ImageNet classifier.
    classifier : {"logistic", "svm"}, default="logistic"
        Multinomial logistic regression, or a linear SVM (one-vs-rest).
    strategy : {"auto", "linear", "finetune_top", "finetune_all", "gradual", "scratch"}, default="auto"
        "auto" measures the data first (size, similarity to ImageNet, a layer sweep, and a
        fine-tuning trial when the rule of thumb is in doubt) and follows the resulting
        :class:`~headstart.advisor.Plan` (``plan_``). "linear" keeps the backbone fixed and fits the
        linear classifier on its codes. The others fine-tune the network (see
        :mod:`headstart.strategies.finetune`), holding out a stratified 15% of the training images
        for early stopping; the new head starts from the linear classifier's solution. "scratch"
        trains a small CNN (``scratch_cnn``: three conv blocks, 64 px) from random weights instead
        (``finetune={"init": "he_normal"}`` or another :mod:`headstart.init` scheme): the baseline
        transfer must beat.
    time_budget : float, optional
        Seconds the whole fit may take; ``strategy="auto"`` skips fine-tuning (or its trial) that
        would not fit in it.
    finetune : dict, optional
        Fine-tuning settings overriding :class:`~headstart.strategies.finetune.FineTuneConfig`'s
        defaults, e.g. ``{"epochs": 20, "augmentation": "text_signs", "imbalance": "sampler"}``.
    checkpoint_dir : str, optional
        Fine-tuning: folder for a checkpoint after every epoch (``fit_folder`` uses RUN/checkpoints).
    resume : bool, default=False
        Fine-tuning: continue from the checkpoint in ``checkpoint_dir``.
    tensorboard_dir : str, optional
        Write TensorBoard logs there: losses, accuracies, learning rates and weight histograms
        every fine-tuning epoch, and the linear head's weights (``tensorboard --logdir``).
    Cs : tuple of float, optional
        Inverse regularisation strengths to choose from by stratified cross-validation.
    class_weight : {"auto", "balanced", None}, default="auto"
        "auto" weights classes by inverse frequency when the largest has more than 1.5x the images
        of the smallest.
    input_size : int, optional
        Side of the square crop fed to the backbone; default: the backbone's own.
    engine : {"auto", "onnx", "torch"}, default="auto"
        "auto" runs ONNX Runtime on the CPU after checking it matches eager PyTorch.
    device : str, default="auto"
        "auto" uses CUDA when present.
    batch_size : int, default=32
    cache : bool, default=True
        Cache codes on disk (``$HEADSTART_CACHE`` or the user cache folder).
    cache_dir : str, optional
        Cache folder overriding the default.
    strict : bool, default=False
        Fail on unreadable training images instead of skipping them with a warning.
    n_jobs : int, optional
        Parallel jobs for cross-validation.
    random_state : int, default=0
        Seed of the cross-validation folds.
    progress : bool, default=False
        Show progress bars while computing codes.

    Attributes
    ----------
    classes_ : ndarray
        Labels, exactly as given in ``y`` (integer labels stay integers).
    head_ : LinearHead
        The fitted linear classifier, as arrays.
    fit_report_ : LinearFitReport
        Regularisation chosen, cross-validated score, class weighting.
    skipped_ : dict
        Index -> reason for training images that could not be read.
    plan_ : Plan
        With ``strategy="auto"``: the advisor's measurements, alternatives and explanation.
    strategy_ : str
        The strategy actually used ("auto" resolved).
    backbone_ : str
        The backbone(s) the codes came from, e.g. "mobilenet_v2+efficientnet_lite0" when the
        advisor joined the second embedded backbone.
    net_ : FineTuneNet or None
        The fine-tuned network (None for the linear strategy); predictions then come from it.
    history_ : History or None
        Per-epoch record of the fine-tuning run.
    """

    def __init__(
        self,
        backbone: str = "mobilenet_v2",
        *,
        tap: str | None = None,
        classifier: str = "logistic",
        strategy: str = "auto",
        finetune: dict | None = None,
        time_budget: float | None = None,
        checkpoint_dir: str | None = None,
        resume: bool = False,
        tensorboard_dir: str | None = None,
        Cs: tuple[float, ...] | None = None,
        class_weight: str | None = "auto",
        input_size: int | None = None,
        engine: str = "auto",
        device: str = "auto",
        batch_size: int = 32,
        cache: bool = True,
        cache_dir: str | None = None,
        strict: bool = False,
        n_jobs: int | None = None,
        random_state: int | None = 0,
        progress: bool = False,
    ):
        self.backbone = backbone
        self.tap = tap
        self.classifier = classifier
        self.strategy = strategy
        self.finetune = finetune
        self.time_budget = time_budget
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume
        self.tensorboard_dir = tensorboard_dir
        self.Cs = Cs
        self.class_weight = class_weight
        self.input_size = input_size
        self.engine = engine
        self.device = device
        self.batch_size = batch_size
        self.cache = cache
        self.cache_dir = cache_dir
        self.strict = strict
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.progress = progress

    # ----------------------------------------------------------------- codes
    def _codes_tap(self) -> str | None:
        """The tap the head reads: the parameter, or with strategy="auto" the plan's (or, for a
        loaded model, the saved one)."""
        if not self._uses_advisor():
            return self.tap
        plan = getattr(self, "plan_", None)
        return plan.tap if plan is not None else getattr(self, "tap_", None)

    def resolved_backbone(self) -> str:
        """The backbone the model runs: ``backbone``, except that with strategy="auto" the plan may
        join a second embedded backbone's codes ("mobilenet_v2+efficientnet_lite0"), and that
        ``strategy="scratch"`` trains the small CNN ``scratch_cnn`` from its ``init`` scheme
        (finetune={"init": ...})."""
        if self.strategy == "scratch":
            from .backbones.scratch import DEFAULT_INIT

            return f"scratch_cnn@{(self.finetune or {}).get('init', DEFAULT_INIT)}"
        if self._uses_advisor():
            plan = getattr(self, "plan_", None)
            chosen = plan.backbone if plan is not None else getattr(self, "backbone_", None)  # backbone_: a loaded model
            if chosen:
                return chosen
        return self.backbone

    def _extractor(self) -> CodeExtractor | ConcatExtractor:
        # Built lazily and dropped from pickles: it holds a network or an ONNX Runtime session.
        tap = self._codes_tap()
        key = (self.resolved_backbone(), tap, self.input_size, self.engine, self.device, self.batch_size, self.cache, self.cache_dir)
        if getattr(self, "_extractor_key", None) != key:
            names = self.resolved_backbone().split("+")
            if len(names) > 1 and tap not in (None, PRE_LOGITS):
                raise DataError(f"tap={tap!r} is ambiguous for the concatenated backbone {self.backbone!r}; leave tap unset.")
            # Taps joined by "+" (the advisor's "features.13+pre_logits") read one backbone at
            # several depths; each part keeps its own cache entries.
            pairs = [(name, part) for name in names for part in (tap.split("+") if tap else [None])]
            parts = [
                CodeExtractor(
                    get_backbone(name),
                    part,
                    input_size=self.input_size,
                    engine=self.engine,
                    device=self.device,
                    batch_size=self.batch_size,
                    cache=self.cache,
                    cache_dir=self.cache_dir,
                )
                for name, part in pairs
            ]
            self._code_extractor = parts[0] if len(parts) == 1 else ConcatExtractor(parts, across_backbones=len(names) > 1)
            self._extractor_key = key
        return self._code_extractor

    def extract(self, X: Sequence[ImageInput], *, desc: str = "features") -> Codes:
        """CNN codes for ``X`` with content hashes and the images that could not be read."""
        return self._extractor()(_as_list(X), progress=self.progress, desc=desc)

    def transform(self, X: Sequence[ImageInput]) -> np.ndarray:
        """The CNN codes of ``X`` (n_images, n_codes); raises if an image cannot be read."""
        codes = self.extract(X)
        _raise_on_failures(codes.failures, X)
        return codes.codes

    # ------------------------------------------------------------------- fit
    def fit(self, X: Sequence[ImageInput], y) -> "TransferClassifier":
        """Fit on images ``X`` (paths, PIL images or arrays): the linear head on their codes, then,
        for a fine-tuning ``strategy``, the network itself."""
        X = _as_list(X)
        y = _as_labels(y)
        if len(X) != len(y):
            raise DataError(f"got {len(X)} images but {len(y)} labels; give one label per image.")
        if len(X) == 0:
            raise DataError("no images given; fit needs at least two labelled images per class.")
        started = time.perf_counter()
        if self._uses_advisor():
            self.advise(X, y)
        return self.fit_codes(self.extract(X, desc="features (train)"), y, images=X, started=started)

    def advise(self, X: Sequence[ImageInput], y):
        """Measure the images against the backbone and choose the strategy (``plan_``); ``fit``
        with ``strategy="auto"`` calls this first. Returns the :class:`~headstart.advisor.Plan`."""
        from .advisor import advise

        if "+" in self.backbone:
            raise DataError(f"the advisor measures one backbone; give one, not {self.backbone!r}.")
        self.plan_ = advise(
            get_backbone(self.backbone),
            _as_list(X),
            _as_labels(y),
            time_budget=self.time_budget,
            tap=self.tap,
            finetune=self.finetune,
            input_size=self.input_size,
            device=self.device,
            batch_size=self.batch_size,
            cache=self.cache,
            cache_dir=self.cache_dir,
            random_state=self.random_state or 0,
        )
        release_freed_memory()  # the measuring pass's activations: the fit's peak must not stack on them
        return self.plan_

    def fit_codes(self, codes: Codes, y, *, images: Sequence | None = None, started: float | None = None) -> "TransferClassifier":
        """Fit the head on precomputed :class:`Codes` (from :meth:`extract`) for labels ``y``;
        ``started`` (a ``time.perf_counter()`` value) is when the fit began, for ``time_budget``."""
        y = _as_labels(y)
        if self._uses_advisor() and getattr(self, "plan_", None) is None:
            raise DataError("strategy='auto' needs a plan: call fit(X, y), or advise(X, y) before fit_codes.")
        finetune_config = self._finetune_config(started)  # bad settings fail before any work is done
        if codes.failures:
            if self.strict:
                _raise_on_failures(codes.failures, images)
            log.warning("skipping %d unreadable training image(s)", len(codes.failures))
        ok = codes.ok
        classes, y_index = np.unique(y[ok], return_inverse=True)
        if len(classes) < 2:
            raise DataError(f"need images of at least 2 classes, but the data contain only {list(classes)}.")
        head, report = fit_linear_head(
            codes.codes[ok],
            y_index,
            kind=self.classifier,
            Cs=self.Cs,
            class_weight=self.class_weight,
            random_state=self.random_state,
            n_jobs=self.n_jobs,
        )
        extractor = self._extractor()
        self.classes_ = classes
        self.head_: LinearHead = head
        self.fit_report_: LinearFitReport = report
        self.skipped_ = dict(codes.failures)
        self.tap_ = extractor.tap
        self.backbone_ = self.resolved_backbone()
        self.preprocessing_: Preprocessing = extractor.preprocessing
        self.fingerprint_ = extractor.fingerprint
        self.n_train_ = int(ok.sum())
        self.strategy_ = self._resolved_strategy()
        self.net_ = None
        self.history_ = None
        board = self._tensorboard()
        try:
            if self.strategy_ != "linear":
                if images is None:
                    raise DataError(f"strategy {self.strategy_!r} trains on the images themselves; pass images= to fit_codes, or call fit.")
                kept = [image for image, good in zip(images, ok) if good]
                self._fine_tune(kept, y_index, finetune_config, board)
            if board is not None:
                step = len(self.history_.records) if self.history_ is not None else 0
                board.final({"accuracy/cross_validation": report.cv_score}, {"linear_head": head.coef}, step)
        finally:
            if board is not None:
                board.close()
        return self

    def _tensorboard(self):
        if not self.tensorboard_dir:
            return None
        from .diagnostics.tensorboard import TensorBoardLog

        return TensorBoardLog(self.tensorboard_dir)

    def _uses_advisor(self) -> bool:
        # Concatenated backbones can only feed a linear head: nothing for the advisor to choose.
        return self.strategy == "auto" and "+" not in self.backbone

    def _resolved_strategy(self) -> str:
        if self.strategy != "auto":
            return self.strategy
        return self.plan_.strategy if self._uses_advisor() else "linear"

    def _finetune_config(self, started: float | None = None):
        """The fine-tuning settings, validated; None for the linear strategy."""
        from .strategies.finetune import STRATEGIES, FineTuneConfig

        if self.strategy not in ("auto", "linear", "scratch", *STRATEGIES):
            raise DataError(f"unknown strategy {self.strategy!r}; use 'auto', 'linear', 'scratch' or one of {', '.join(STRATEGIES)}.")
        strategy = self._resolved_strategy()
        if strategy == "linear":
            return None
        options = {**(self.plan_.settings if self._uses_advisor() else {}), **(self.finetune or {})}
        known = set(FineTuneConfig.__dataclass_fields__)
        for key in options:
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known settings: {', '.join(sorted(known))}."
                raise DataError(f"unknown fine-tuning setting {key!r}{hint}")
        defaults = {"seed": self.random_state or 0, "device": self.device, "progress": self.progress}
        if strategy == "scratch":  # every layer learns, at one rate, with BatchNorm statistics of its own
            defaults |= SCRATCH_DEFAULTS
        if self.time_budget is not None:  # what the budget leaves after measuring and the linear head
            spent = time.perf_counter() - started if started is not None else 0.0
            defaults["time_limit"] = max(0.0, self.time_budget - spent)
        return FineTuneConfig(**{**defaults, **options, "strategy": "finetune_all" if strategy == "scratch" else strategy})

    def _fine_tune(self, images: list, y_index: np.ndarray, config, board=None) -> None:
        from sklearn.model_selection import train_test_split

        from .strategies.finetune import finetune

        if np.bincount(y_index).min() < 2:
            raise DataError(
                f"strategy {config.strategy!r} needs at least 2 training images per class (some are held out for early stopping); "
                "add images or use strategy='linear'."
            )
        indices = np.arange(len(images))
        fit_index, stop_index = train_test_split(indices, test_size=0.15, stratify=y_index, random_state=self.random_state)
        scratch = self.strategy_ == "scratch"
        result = finetune(
            get_backbone(self.resolved_backbone()),
            [images[i] for i in fit_index],
            y_index[fit_index],
            [images[i] for i in stop_index],
            y_index[stop_index],
            config,
            n_classes=len(self.classes_),
            head_init=None if scratch else self.head_,  # from scratch means from scratch: no warm start
            checkpoint_dir=Path(self.checkpoint_dir) if self.checkpoint_dir else None,
            resume=self.resume,
            preprocessing=self.preprocessing_,
            on_epoch_end=board,
        )
        self.net_ = result.net
        self.history_ = result.history
        self.finetune_settings_ = {
            **asdict(config),
            "imbalance_plan": result.imbalance.reason,
            "bf16": result.bf16,
            "mirror_warning": self._mirror_warning(images, config),
        }

    def _mirror_warning(self, images: list, config) -> str | None:
        """Warn when the augmentation mirrors images that a probe can tell from their mirrors."""
        from .data.augment import MIRRORING_STEPS, check_mirroring, policy_steps
        from .strategies.finetune import load_rgb

        if not MIRRORING_STEPS & set(policy_steps(config.augmentation)) or len(images) < 10:
            return None
        rng = np.random.default_rng(self.random_state)
        sample = rng.choice(len(images), min(MIRROR_CHECK_IMAGES, len(images)), replace=False)
        return check_mirroring(config.augmentation, self._extractor(), [load_rgb(images[i], self.preprocessing_.resize) for i in sample])

    # --------------------------------------------------------------- predict
    def decision_function(self, X: Sequence[ImageInput]) -> np.ndarray:
        """Logits, columns in the order of ``classes_``."""
        scores, failures = self.scores_and_failures(X)
        _raise_on_failures(failures, X)
        return scores

    def predict_proba(self, X: Sequence[ImageInput]) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``."""
        return softmax(self.decision_function(X))

    def predict(self, X: Sequence[ImageInput]) -> np.ndarray:
        scores = self.decision_function(X)
        return self.classes_[np.argmax(scores, axis=1)]

    def scores_and_failures(self, X: Sequence[ImageInput]) -> tuple[np.ndarray, dict[int, str]]:
        """Logits for every image that can be read (NaN rows for the others) and why the others
        could not: the one prediction path of both strategies, which never stops at a bad file."""
        check_is_fitted(self, "head_")
        X = _as_list(X)
        if getattr(self, "net_", None) is None:
            codes = self.extract(X)
            scores = np.full((len(X), len(self.classes_)), np.nan)
            if codes.ok.any():
                scores[codes.ok] = self.head_.decision_function(codes.codes[codes.ok])
            return scores, dict(codes.failures)
        from .strategies.finetune import network_scores

        return network_scores(self.net_, X, self.preprocessing_, batch_size=self.batch_size)

    # ------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike, *, metrics: dict | None = None, report: str | None = None) -> Path:
        """Write the fitted model to ``directory`` atomically (JSON + safetensors), with the run's
        ``metrics`` and ``report`` (HTML) when given."""
        from .persistence import save_model

        return save_model(self, Path(directory), metrics=metrics, report_html=report)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "TransferClassifier":
        """Read a model written by :meth:`save`; reads only JSON and safetensors, runs no code."""
        from .persistence import load_model

        return load_model(Path(directory))

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_code_extractor", None)
        state.pop("_extractor_key", None)
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # inputs are images (paths, PIL images, arrays)
        return tags


def _as_list(X) -> list:
    if isinstance(X, (str, os.PathLike)):
        raise DataError(f"expected a list of images, got the single path {X!s}; wrap it in a list.")
    return list(X)  # a list of paths/images, or a stacked (N, H, W[, C]) array split into images


def _as_labels(y) -> np.ndarray:
    labels = np.asarray(list(y) if not isinstance(y, np.ndarray) else y)
    if labels.ndim != 1:
        raise DataError(f"expected one label per image (a 1-D sequence), got shape {labels.shape}.")
    return labels


def _raise_on_failures(failures: dict[int, str], images) -> None:
    if not failures:
        return
    items = list(failures.items())[:3]
    described = "; ".join(f"{_describe(images, i)}: {why}" for i, why in items)
    more = f" and {len(failures) - 3} more" if len(failures) > 3 else ""
    raise DataError(f"cannot read {len(failures)} image(s) ({described}{more}); remove or replace them.")



def _describe(images, index: int) -> str:
    item = list(images)[index] if images is not None else None
    return str(item) if isinstance(item, (str, os.PathLike)) else f"image #{index}"
