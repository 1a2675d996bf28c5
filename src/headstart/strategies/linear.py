"""The linear probe: a multinomial logistic regression or linear SVM on CNN codes.

Fitting is scikit-learn's (with the regularisation strength chosen by stratified cross-validation);
the fitted model is kept as plain arrays, so predicting and saving need nothing but numpy and
safetensors, and a saved head predicts exactly what the fitted one did.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from ..errors import HeadstartError

HEADS = ("logistic", "svm")
# Inverse regularisation strengths tried by cross-validation (features are standardised first).
DEFAULT_CS = (0.001, 0.01, 0.1, 1.0)
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
        logits = self.decision_function(codes)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def to_tensors(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "scale": self.scale, "coef": self.coef, "intercept": self.intercept}

    @classmethod
    def from_tensors(cls, kind: str, tensors: dict[str, np.ndarray]) -> "LinearHead":
        return cls(kind, *(np.asarray(tensors[k], dtype=np.float64) for k in ("mean", "scale", "coef", "intercept")))


@dataclass
class LinearFitReport:
    """What cross-validation chose and saw."""

    C: float
    cv_folds: int
    cv_score: float | None  # mean held-out score of the chosen C
    cv_score_std: float | None
    scoring: str
    class_weight: str | None
    imbalance_ratio: float


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
) -> tuple[LinearHead, LinearFitReport]:
    """Fit a linear head on ``codes`` (n, d) for integer labels ``y`` in 0..k-1.

    ``class_weight="auto"`` uses balanced (inverse-frequency) weights when the largest class has more
    than 1.5x the images of the smallest; ``"balanced"`` or ``None`` force either choice.
    """
    if kind not in HEADS:
        raise HeadstartError(f"unknown classifier {kind!r}; use one of {', '.join(HEADS)}.")
    if class_weight not in ("auto", "balanced", None):
        raise HeadstartError(f"class_weight must be 'auto', 'balanced' or None, got {class_weight!r}.")
    y = np.asarray(y)
    ratio = imbalance_ratio(y)
    weight = ("balanced" if ratio > IMBALANCE_RATIO else None) if class_weight == "auto" else class_weight
    scoring = "balanced_accuracy" if weight else "accuracy"
    estimator = Pipeline([("scaler", StandardScaler()), ("clf", _estimator(kind, weight, random_state))])
    Cs = tuple(Cs or DEFAULT_CS)
    folds = min(MAX_CV_FOLDS, int(np.bincount(y)[np.bincount(y) > 0].min()))
    with warnings.catch_warnings():
        # A C that has not fully converged in max_iter still gives a usable, honestly scored model.
        warnings.simplefilter("ignore", ConvergenceWarning)
        if folds >= 2 and len(Cs) > 1:
            search = GridSearchCV(
                estimator,
                {"clf__C": list(Cs)},
                cv=StratifiedKFold(folds, shuffle=True, random_state=random_state),
                scoring=scoring,
                n_jobs=n_jobs,
            )
            search.fit(codes, y)
            fitted, best = search.best_estimator_, search.best_index_
            C = float(search.best_params_["clf__C"])
            cv_mean = float(search.cv_results_["mean_test_score"][best])
            cv_std = float(search.cv_results_["std_test_score"][best])
        else:  # a class with a single training image: nothing to cross-validate on
            C = 1.0 if len(Cs) > 1 else Cs[0]
            fitted = estimator.set_params(clf__C=C).fit(codes, y)
            cv_mean = cv_std = None
    scaler, clf = fitted.named_steps["scaler"], fitted.named_steps["clf"]
    coef, intercept = _logits_form(clf.coef_, clf.intercept_)
    head = LinearHead(kind, scaler.mean_.copy(), scaler.scale_.copy(), coef, intercept)
    return head, LinearFitReport(C, folds, cv_mean, cv_std, scoring, weight, ratio)


def _estimator(kind: str, class_weight: str | None, random_state: int | None):
    if kind == "logistic":
        return LogisticRegression(max_iter=300, class_weight=class_weight, random_state=random_state)
    return LinearSVC(class_weight=class_weight, random_state=random_state, max_iter=5000)


def _logits_form(coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn stores a binary model as one row w; softmax([0, w.x + b]) gives the same
    probabilities, so every head has one logit per class."""
    coef, intercept = np.asarray(coef, dtype=np.float64), np.asarray(intercept, dtype=np.float64)
    if coef.shape[0] == 1:
        return np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    return coef, intercept
