"""The linear probe: a multinomial logistic regression or linear SVM on CNN codes.

Fitting is scikit-learn's (with the regularisation strength chosen by stratified cross-validation);
the fitted model is kept as plain arrays, so predicting and saving need nothing but numpy and
safetensors, and a saved head predicts exactly what the fitted one did.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
from joblib import Parallel, delayed
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from threadpoolctl import threadpool_limits

from ..data.duplicates import describe_groups, stratified_folds
from ..errors import HeadstartError, check_choice

log = logging.getLogger(__name__)

HEADS = ("logistic", "svm")
SOLVERS = ("auto", "sklearn", "minibatch")
# solver="auto" trains the mini-batch solver when codes x classes reach this (logistic heads only):
# the smallest measured size where it agreed with scikit-learn within half a point and was faster on
# real CNN codes (MobileNetV2 codes of generated images, benchmarks/bench_scale_images.py --solvers:
# 10,543 codes of 100 classes, 22 s against 53 s, 91.80% both; 29,999 of 300, 38 s against about
# 360 s, 84.1% both; at 4,955 of 50, 16 s against 20 s and 0.4 points lower). On synthetic codes,
# which scikit-learn's L-BFGS solves in fewer steps, it was faster up to 10,000 codes of 500 classes
# (32 s against 51 s). docs/benchmarks.md, "The linear head at scale".
MINIBATCH_FROM = 1_000_000
# Inverse regularisation strengths tried by cross-validation (features are standardised first).
# The SVM's grid sits a decade lower: on standardised codes its CV choice was 1e-3 to 1e-2 on both
# shared datasets, and liblinear crawls at C=1 when 1,280-wide codes make the classes separable.
DEFAULT_CS = {"logistic": (0.001, 0.01, 0.1, 1.0), "svm": (0.0001, 0.001, 0.01, 0.1)}
# Largest/smallest class ratio above which classes are weighted by inverse frequency.
IMBALANCE_RATIO = 1.5
MAX_CV_FOLDS = 5


@dataclass
class LinearHead:
    """Standardise, then an affine map to one logit per class."""

    kind: str
    mean: np.ndarray  # (d,)
    scale: np.ndarray  # (d,)
    coef: np.ndarray  # (k, d)
    intercept: np.ndarray  # (k,)

    def decision_function(self, codes: np.ndarray) -> np.ndarray:
        standardised = (np.asarray(codes, dtype=np.float64) - self.mean) / self.scale
        return standardised @ self.coef.T + self.intercept

    def predict_proba(self, codes: np.ndarray) -> np.ndarray:
        """Softmax of the logits: the model's probabilities for logistic regression; for the SVM,
        a monotone squashing of its margins (not calibrated probabilities)."""
        return softmax(self.decision_function(codes))

    def to_tensors(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "scale": self.scale, "coef": self.coef, "intercept": self.intercept}

    @classmethod
    def from_tensors(cls, kind: str, tensors: dict[str, np.ndarray]) -> "LinearHead":
        return cls(kind, *(np.asarray(tensors[k], dtype=np.float64) for k in ("mean", "scale", "coef", "intercept")))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by each row's maximum so large logits cannot overflow."""
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


@dataclass
class LinearFitReport:
    """What cross-validation (or the mini-batch solver's held-out split) chose and saw."""

    C: float
    cv_folds: int  # 0 for the mini-batch solver, which scores one held-out split
    cv_score: float | None  # mean held-out score of the chosen C
    cv_score_std: float | None
    scoring: str
    class_weight: str | None
    imbalance_ratio: float
    solver: str = "sklearn"  # "sklearn" or "minibatch"
    held_out: int = 0  # codes the mini-batch solver held out to choose C and the epoch
    # near-duplicate groups CV kept inside one fold: {"groups", "images", "largest"} (describe_groups)
    duplicate_groups: dict | None = None
    # training codes per class (in the head's class order): how much the cross-validated score can
    # be trusted, class by class (a model evaluated on new images sizes its noise from them)
    class_counts: list[int] | None = None


def imbalance_ratio(y: np.ndarray) -> float:
    counts = np.bincount(y)
    counts = counts[counts > 0]
    return float(counts.max() / counts.min())


def fit_linear_head(
    codes: np.ndarray,
    y: np.ndarray,
    *,
    kind: str = "logistic",
    Cs: tuple[float, ...] | None = None,
    class_weight: str | None = "auto",
    random_state: int | None = 0,
    n_jobs: int | None = None,
    solver: str = "auto",
    device: str = "auto",
    progress: bool = False,
    groups: np.ndarray | None = None,
) -> tuple[LinearHead, LinearFitReport]:
    """Fit a linear head on ``codes`` (n, d) for integer labels ``y`` in 0..k-1.

    ``class_weight="auto"`` uses balanced (inverse-frequency) weights when the largest class has more
    than 1.5x the images of the smallest; ``"balanced"`` or ``None`` force either choice.
    ``solver="sklearn"`` chooses C by stratified k-fold cross-validation (k = min(5, smallest
    class); ties go to the stronger regularisation); ``"minibatch"`` trains in PyTorch by
    mini-batches and chooses C on a held-out split (:mod:`headstart.strategies.minibatch`), for
    thousands of classes and millions of codes (``codes`` may be a memory map); ``"auto"`` takes
    the mini-batch solver from ``MINIBATCH_FROM`` codes x classes on. ``groups`` (one number per code,
    :func:`headstart.data.near_duplicate_groups`) keeps each group of near duplicates inside one fold.
    """
    check_choice("class_weight", class_weight, ("auto", "balanced", None))
    check_solver(solver, kind)
    y = np.asarray(y)
    if choose_solver(solver, kind, len(y), int(y.max()) + 1) == "minibatch":
        return _fit_minibatch(codes, y, Cs, class_weight, random_state, device, progress)
    # The solver works on small matrices (at most images x code width); a multi-threaded BLAS spends more
    # time waking its threads than computing: one thread fits flowers-17's head 10x faster here.
    with threadpool_limits(limits=1, user_api="blas"):
        return _fit(np.asarray(codes), y, kind, Cs, class_weight, random_state, n_jobs, groups)


def check_solver(solver: str, kind: str) -> None:
    """Raise unless ``solver`` is known and can fit a head of ``kind``."""
    check_choice("classifier", kind, HEADS)
    check_choice("solver", solver, SOLVERS)
    if solver == "minibatch" and kind != "logistic":
        raise HeadstartError(f"the mini-batch solver fits logistic regression, not classifier={kind!r}; use solver='sklearn' (--solver sklearn) for the SVM.")


def choose_solver(solver: str, kind: str, n_codes: int, n_classes: int) -> str:
    """The solver ``solver`` means for a head of ``kind`` on this many codes and classes."""
    check_solver(solver, kind)
    if solver != "auto":
        return solver
    return "minibatch" if kind == "logistic" and n_codes * n_classes >= MINIBATCH_FROM else "sklearn"


def _fit_minibatch(codes, y, Cs, class_weight, random_state, device, progress) -> tuple[LinearHead, LinearFitReport]:
    from .minibatch import fit_minibatch

    ratio, weight, scoring = _weighting(y, class_weight)
    (mean, scale, coef, intercept), fit = fit_minibatch(
        codes, y, Cs=Cs or DEFAULT_CS["logistic"], balanced=weight == "balanced", random_state=random_state, device=device, progress=progress
    )
    if fit.score < fit.nearest_mean_score:
        log.warning(
            "the linear head scored %.1f%% on %d held-out codes, class means %.1f%%: try smaller Cs (stronger regularisation)",
            100 * fit.score, fit.held_out, 100 * fit.nearest_mean_score,
        )
    report = LinearFitReport(fit.C, 0, fit.score, None, scoring, weight, ratio, solver="minibatch", held_out=fit.held_out)
    return LinearHead("logistic", mean, scale, coef, intercept), report


def _weighting(y: np.ndarray, class_weight: str | None) -> tuple[float, str | None, str]:
    """(imbalance ratio, the class weighting ``class_weight`` means here, the score to choose C by)."""
    ratio = imbalance_ratio(y)
    weight = ("balanced" if ratio > IMBALANCE_RATIO else None) if class_weight == "auto" else class_weight
    return ratio, weight, "balanced_accuracy" if weight else "accuracy"


def _fit(codes, y, kind, Cs, class_weight, random_state, n_jobs, groups=None) -> tuple[LinearHead, LinearFitReport]:
    """fit_linear_head after validation: class weighting, the exact change of basis, CV, refit."""
    ratio, weight, scoring = _weighting(y, class_weight)
    Cs = tuple(sorted(Cs or DEFAULT_CS[kind]))
    counts = np.bincount(y)
    folds = min(MAX_CV_FOLDS, int(counts[counts > 0].min()))

    # Standardising with statistics of all training images (labels unused) keeps the fold models
    # comparable and lets one change of basis serve every fold.
    scaler = StandardScaler().fit(codes)
    standardised = scaler.transform(codes)
    basis = row_space_basis(standardised)
    reduced = standardised @ basis if basis is not None else standardised

    cv_mean = cv_std = None
    C = 1.0 if len(Cs) > 1 else Cs[0]
    if folds >= 2 and len(Cs) > 1:
        splits = stratified_folds(y, folds, groups=groups, random_state=random_state)
        scores = np.array(
            Parallel(n_jobs=n_jobs)(
                delayed(_score_path)(kind, Cs, reduced[train], y[train], reduced[held], y[held], weight, scoring, random_state)
                for train, held in splits
            )
        )  # (folds, len(Cs))
        best = int(np.argmax(scores.mean(axis=0)))  # first maximum: the smallest C among ties
        C, cv_mean, cv_std = Cs[best], float(scores[:, best].mean()), float(scores[:, best].std())
    classifier = _estimator(kind, weight, C, random_state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # sklearn suspects a regression target when classes outnumber half the images: few-shot data
        warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%", category=UserWarning)
        classifier.fit(reduced, y)
    coef = classifier.coef_ @ basis.T if basis is not None else classifier.coef_
    coef, intercept = _logits_form(coef, classifier.intercept_)
    head = LinearHead(kind, scaler.mean_.copy(), scaler.scale_.copy(), coef, intercept)
    duplicates = describe_groups(groups) if groups is not None else None
    return head, LinearFitReport(C, folds, cv_mean, cv_std, scoring, weight, ratio, duplicate_groups=duplicates, class_counts=counts.tolist())


def row_space_basis(X: np.ndarray) -> np.ndarray | None:
    """Orthonormal basis (d, r) of the span of the rows of X, or None when it would not shrink X.

    An L2-regularised linear model's weights are a combination of its training points (set the
    gradient of loss + ||w||^2 / 2C to zero), so fitting in these r <= n coordinates gives the
    same model, and the same predictions on any point, as fitting in all d: with 340 images of
    1,280-wide codes, a quarter of the work. Any subset of the rows (a CV fold) spans a subspace of
    it, so the identity holds fold by fold.
    """
    n, d = X.shape
    if n >= d:
        return None
    _, singular, vt = np.linalg.svd(X, full_matrices=False)
    rank = int((singular > singular[0] * 1e-10).sum()) if singular.size and singular[0] > 0 else 0
    return vt[: max(rank, 1)].T


def _score_path(kind, Cs, X_train, y_train, X_held, y_held, class_weight, scoring, random_state) -> list[float]:
    """Held-out scores along increasing C; logistic regression warm-starts from the previous C."""
    metric = balanced_accuracy_score if scoring == "balanced_accuracy" else accuracy_score
    estimator = None
    scores = []
    with warnings.catch_warnings():
        # A C that has not fully converged still gives a usable model, and an honest score.
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)  # balanced accuracy on a fold missing a class
        for C in Cs:
            if estimator is None or kind != "logistic":
                estimator = _estimator(kind, class_weight, C, random_state)
                if kind == "logistic":
                    estimator.set_params(warm_start=True)
            else:
                estimator.set_params(C=C)
            estimator.fit(X_train, y_train)
            scores.append(float(metric(y_held, estimator.predict(X_held))))
    return scores


def _estimator(kind: str, class_weight: str | None, C: float, random_state: int | None):
    if kind == "logistic":
        return LogisticRegression(C=C, max_iter=500, class_weight=class_weight, random_state=random_state)
    return LinearSVC(C=C, class_weight=class_weight, random_state=random_state, max_iter=5000)


def _logits_form(coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn stores a binary model as one row w; softmax([0, w.x + b]) gives the same
    probabilities, so every head has one logit per class."""
    coef, intercept = np.asarray(coef, dtype=np.float64), np.asarray(intercept, dtype=np.float64)
    if coef.shape[0] == 1:
        return np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    return coef, intercept


def out_of_fold_logits(codes: np.ndarray, y: np.ndarray, kind: str, report: LinearFitReport, *, groups: np.ndarray | None = None, random_state: int | None = 0) -> np.ndarray:
    """Every image's logits from a head of the chosen C fitted without its fold (near-duplicate
    groups kept inside one): what the head says of images it has not seen, for calibration. Every
    class needs at least 2 images (each fold's head must know every class)."""
    y = np.asarray(y)
    counts = np.bincount(y)
    if counts.min() < 2:
        raise ValueError("out-of-fold logits need at least 2 images of every class")
    logits = np.empty((len(y), len(counts)))
    for train, held in stratified_folds(y, min(MAX_CV_FOLDS, int(counts.min())), groups=groups, random_state=random_state):
        weight = "balanced" if report.class_weight else None
        head, _ = fit_linear_head(codes[train], y[train], kind=kind, Cs=(report.C,), class_weight=weight, solver="sklearn", random_state=random_state)
        fold_logits = head.decision_function(codes[held])
        if fold_logits.shape[1] != len(counts):  # a group put a whole class in one fold
            raise ValueError("a fold's training images lack a class")
        logits[held] = fold_logits
    return logits
