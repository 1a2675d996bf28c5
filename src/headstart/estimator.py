"""TransferClassifier: a scikit-learn estimator over images, a pretrained CNN plus a linear head.

It follows scikit-learn's contract: ``__init__`` only stores its arguments, all work happens in
``fit``, fitted state ends in ``_``. It can be cloned, pickled, grid-searched and cross-validated;
``save``/``load`` write and read a directory of JSON and safetensors (no pickle, no code).

A thin adapter: fitting is :func:`headstart.pipeline.fit_model`, the outcome one
:class:`~headstart.fitted.FittedModel` (``fitted_``), of which the fitted attributes are views.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from .features import Codes, ImageInput
from .fitted import FittedModel
from .persistence import load_model, save_model
from .pipeline import as_image_list as _as_list
from .pipeline import Predicted, check_one_label_each, checked_input, fit_model, make_plan, predict_scores, predicted_labels, rejection_threshold, unreadable_error
from .progress import wanted as progress_wanted
from .recipe import Runtime, check_params, resolve
from .strategies.linear import softmax


def _view(field: str) -> property:
    """A fitted attribute: a field of the record (AttributeError before fit, as scikit-learn expects)."""

    def get(self):
        return getattr(self._record(field), field)

    return property(get)


class RejectionMixin:
    """The "none of these" part of the estimator's API: predict with an unknown marker, the novelty
    score and its calibrated threshold, and ``score`` without rejection. Every method delegates to
    :mod:`headstart.pipeline`; the class needs ``predicted(X)`` and ``fitted_``."""

    def predict(self, X: Sequence[ImageInput], *, reject: str | float | None = "auto", unknown=None) -> np.ndarray:
        """The class of each image, or ``unknown`` (default -1 for numeric classes, "unknown" for
        names; never a class) where it looks like none of them: :func:`~headstart.pipeline.predicted_labels`."""
        X = _as_list(X)
        scores, failures, novelty = self.predicted(X)
        if failures:
            raise unreadable_error(failures, X)
        return predicted_labels(self.fitted_, scores, novelty, reject, unknown)

    def novelty_score(self, X: Sequence[ImageInput]) -> np.ndarray:
        """How unlike the training images each image is (higher: less like them; see ``novelty_threshold_``)."""
        X = _as_list(X)
        check_is_fitted(self)
        if self.fitted_.novelty is None:  # said before any image is read
            raise NotFittedError("this model has no novelty detector (a mini-batch head, or too few images held out to calibrate one); fit with solver='sklearn' (--solver sklearn) or more images.")
        _, failures, novelty = self.predicted(X)
        if failures:
            raise unreadable_error(failures, X)
        return novelty

    @property
    def novelty_threshold_(self) -> float | None:
        """The calibrated threshold of :meth:`novelty_score` (None without a detector)."""
        return rejection_threshold(self._record("novelty_threshold_"), "auto")

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy of the classes predicted without rejection (what model selection compares)."""
        from sklearn.metrics import accuracy_score

        X = _as_list(X)
        check_one_label_each(len(X), len(y))  # before the images go through the network, not after
        return float(accuracy_score(y, self.predict(X, reject=None), sample_weight=sample_weight))

    def _record(self, name: str) -> FittedModel:
        if "fitted_" not in self.__dict__:
            raise AttributeError(f"this TransferClassifier has no {name} yet; call fit first")
        return self.fitted_


class TransferClassifier(RejectionMixin, ClassifierMixin, BaseEstimator):
    """Image classifier: CNN codes from a pretrained backbone, then a linear classifier.

    Parameters
    ----------
    backbone : str, default="mobilenet_v2"
        A registered backbone (``mobilenet_v2``, ``efficientnet_lite0`` work offline), or any
        torchvision / timm model name, e.g. ``"torchvision/resnet50"``. Names joined by ``+``
        join the backbones' codes, each signed-square-rooted and scaled to unit rows (a cheap
        ensemble). With ``strategy="auto"`` the advisor may join the other embedded backbone
        itself (``backbone_`` says which ran).
    tap : str, optional
        Where to read the codes; default ``"pre_logits"``, the pooled activations feeding the
        ImageNet classifier. Taps joined by ``+`` read one backbone at several depths; with
        joined backbones, one tap for all or one per backbone in their order
        (``"features.13+blocks.5"``). A fine-tuned network predicts averaged with the linear
        head on this tap (its own head starts from one on the top codes, which it reads).
    classifier : {"logistic", "svm"}, default="logistic"
        Multinomial logistic regression, or a linear SVM (one-vs-rest).
    solver : {"auto", "sklearn", "minibatch"}, default="auto"
        How the logistic head is fitted: scikit-learn (C by cross-validation) or mini-batches in
        PyTorch (C on a held-out split; thousands of classes, millions of codes). "auto" picks by size.
    strategy : {"auto", "linear", "finetune_top", "finetune_all", "gradual", "scratch"}, default="auto"
        "auto" measures the data first (size, similarity to ImageNet, a layer sweep, and a
        fine-tuning trial when the rule of thumb is in doubt) and follows the resulting
        :class:`~headstart.advisor.Plan` (``plan_``). "linear" keeps the backbone fixed and fits the
        linear classifier on its codes. The others fine-tune the network (see
        :mod:`headstart.strategies.finetune`), holding out a stratified 15% of the training images
        for early stopping; the new head starts from the linear classifier's solution. "scratch"
        trains a small CNN (``scratch_cnn``: three conv blocks, 64 px) from random weights instead
        (``finetune={"init": "he_normal"}`` or another :mod:`headstart.weight_init` scheme): the baseline
        transfer must beat.
    time_budget : float, optional
        Seconds for measuring and training; ``strategy="auto"`` skips fine-tuning (or its trial)
        that would not fit, and fine-tuning ends when they run out (the detector's pass follows).
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
        Side of the square crop fed to the backbone. Default: chosen from the training images,
        the backbone's test size (288 px for the embedded ones, which learnt at 224: FixRes) when
        their median shorter side is at least the size it learnt at, else that size.
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
    progress : bool or "auto", default="auto"
        Phases and bars on standard error; "auto": where a person watches (a terminal, a notebook).

    Attributes
    ----------
    fitted_ : FittedModel
        Everything the fit produced, as one record (what ``save`` writes). The other fitted
        attributes are views of it: ``classes_`` (the labels exactly as given), ``head_`` (the
        linear head as arrays), ``fit_report_`` (C chosen, cross-validated score, class
        weighting), ``strategy_`` ("auto" resolved), ``backbone_`` (e.g.
        "mobilenet_v2+efficientnet_lite0" when the advisor joined the second backbone), ``tap_``,
        ``preprocessing_``, ``fingerprint_`` (what the codes mean), ``plan_`` (strategy="auto":
        measurements, alternatives, explanation), ``net_`` and ``history_`` (the fine-tuned
        network and its epochs; None for a linear head), ``finetune_settings_`` (as run, with the
        imbalance handling, bf16 and any mirroring warning), ``n_train_`` and ``skipped_``
        (index -> why a training image was not used).
    """

    def __init__(
        self,
        backbone: str = "mobilenet_v2",
        *,
        tap: str | None = None,
        classifier: str = "logistic",
        solver: str = "auto",
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
        progress: bool | str = "auto",
    ):
        self.backbone = backbone
        self.tap = tap
        self.classifier = classifier
        self.solver = solver
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

    classes_ = _view("classes")
    head_ = _view("head")
    fit_report_ = _view("head_report")
    skipped_ = _view("skipped")
    n_train_ = _view("n_train")
    plan_ = _view("plan")
    strategy_ = _view("strategy")
    backbone_ = _view("backbone")
    tap_ = _view("tap")
    preprocessing_ = _view("preprocessing")
    fingerprint_ = _view("fingerprint")
    net_ = _view("network")
    history_ = _view("history")
    finetune_settings_ = _view("finetune")

    @classmethod
    def from_fitted(cls, fitted: FittedModel, **params) -> "TransferClassifier":
        """An estimator holding ``fitted``, with its model parameters and any machine ``params``."""
        model = cls(**{**fitted.params, **params})
        model.fitted_ = fitted
        return model

    # ------------------------------------------------------------------- fit
    def fit(self, X: Sequence[ImageInput], y, groups=None, none_of_these: Sequence[ImageInput] = ()) -> "TransferClassifier":
        """Fit on images ``X`` (paths, PIL images, arrays or tensors): the linear head on their codes, then,
        for a fine-tuning ``strategy``, the network itself. ``groups`` (one value per image, such as a
        subject id, as scikit-learn's group splitters take) keeps images of one group on one side of
        every cross-validation and held-out split the fit makes; near duplicates are grouped anyway.
        ``none_of_these``: images of none of the classes (backgrounds, other objects: what the model
        will meet), which teach the novelty score what they look like; its threshold
        still comes from the training images."""
        fit = fit_model(self.get_params(), _as_list(X), y, groups=groups, none_of_these=_as_list(none_of_these))
        self.fitted_ = fit.record
        self._extractor_cache = (self._extractor_key(), fit.extractor)  # its engine may be loaded: keep it
        return self

    def advise(self, X: Sequence[ImageInput], y):
        """Measure the images against the backbone and return the :class:`~headstart.advisor.Plan`
        that ``fit`` with ``strategy="auto"`` would follow (nothing is fitted)."""
        return make_plan(check_params(self.get_params()), *checked_input(X, y))

    # ----------------------------------------------------------------- codes
    def extract(self, X: Sequence[ImageInput], *, desc: str = "features") -> Codes:
        """CNN codes for ``X`` with content hashes and the images that could not be read."""
        return self._extractor()(_as_list(X), progress=progress_wanted(self.progress), desc=desc)

    def transform(self, X: Sequence[ImageInput]) -> np.ndarray:
        """The CNN codes of ``X`` (n_images, n_codes); raises if an image cannot be read."""
        X = _as_list(X)
        codes = self.extract(X)
        if codes.failures:
            raise unreadable_error(codes.failures, X)
        return codes.codes

    def _extractor_key(self) -> tuple:
        fitted = self.__dict__.get("fitted_")
        source = fitted or resolve(self.get_params())  # unfitted: the parameters' backbone and tap
        size = fitted.input_size if fitted else self.input_size  # a fit may have chosen the size from the images
        return (source.backbone, source.tap, size, replace(Runtime.from_params(self.get_params()), progress=False))

    def _extractor(self):
        # Built lazily and dropped from pickles: it holds a network or an ONNX Runtime session.
        key = self._extractor_key()
        cached_key, extractor = getattr(self, "_extractor_cache", (None, None))
        if cached_key != key:
            extractor = key[3].extractor(*key[:3])
            self._extractor_cache = (key, extractor)
        return extractor

    # --------------------------------------------------------------- predict
    def scores_and_failures(self, X: Sequence[ImageInput]) -> tuple[np.ndarray, dict[int, str]]:
        """Logits for every image that can be read (NaN rows for the others) and why the others could not."""
        return self.predicted(X)[:2]

    def predicted(self, X: Sequence[ImageInput], *, head_codes=None) -> Predicted:
        """Logits, unreadable images and novelty scores (None without a detector) in one pass;
        ``head_codes`` (X's codes at the head's tap, at hand in a fit) spare an ensemble's backbone."""
        check_is_fitted(self)
        return predict_scores(self.fitted_, _as_list(X), Runtime.from_params(self.get_params()), self._extractor, head_codes=head_codes)

    def decision_function(self, X: Sequence[ImageInput]) -> np.ndarray:
        """Logits, columns in the order of ``classes_``."""
        X = _as_list(X)
        scores, failures = self.scores_and_failures(X)
        if failures:
            raise unreadable_error(failures, X)
        return scores

    def predict_proba(self, X: Sequence[ImageInput]) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``."""
        return softmax(self.decision_function(X))

    # ------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike, *, metrics: dict | None = None, report: str | None = None) -> Path:
        """Write the fitted model to ``directory`` atomically (JSON + safetensors), with the run's
        ``metrics`` and ``report`` (HTML) when given."""
        check_is_fitted(self)
        return save_model(self.fitted_, Path(directory), metrics=metrics, report_html=report)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "TransferClassifier":
        """Read a model written by :meth:`save`; reads only JSON and safetensors, runs no code."""
        return cls.from_fitted(load_model(Path(directory)))

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_extractor_cache", None)
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # inputs are images (paths, PIL images, arrays)
        return tags
