"""'None of these': how unlike the training images an image is, from the codes a model computes.

A classifier answers one of its classes for any image. A novelty score says whether the image looks
like the training data at all (higher: less like them). Candidates, measured side by side by
benchmarks/bench_novelty.py:

- ``msp``: minus the maximum softmax probability (the usual baseline; Hendrycks & Gimpel 2017);
- ``energy``: minus the log-sum-exp of the logits (Liu et al. 2020);
- ``mahalanobis``: the smallest squared Mahalanobis distance to a class mean, under one shared
  covariance shrunk towards a scaled identity (Ledoit-Wolf: images are fewer than code dimensions,
  so the sample covariance is singular; Lee et al. 2018);
- ``relative_mahalanobis``: that distance minus the distance under one Gaussian fitted to every
  training code (Ren et al. 2021), which discounts directions every image varies in;
- ``knn``: one minus the cosine similarity to the k-th nearest training code (Sun et al. 2022).

The threshold needs no novel images: it is the ``known_share`` quantile of out-of-fold scores of the
training images themselves (a training image scored by a detector that never saw it, or its near
duplicates and group), so that share of images like the training ones is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import logsumexp
from sklearn.covariance import LedoitWolf

from ..data.duplicates import stratified_folds
from .linear import softmax

METHODS = ("msp", "energy", "mahalanobis", "relative_mahalanobis", "knn")
FROM_LOGITS = ("msp", "energy")
KNOWN_SHARE = 0.95  # share of known-class images the calibrated threshold keeps
CHUNK = 4096  # codes scored at a time: a chunk's similarities to the bank stay a few hundred MB


@dataclass
class NoveltyDetector:
    """A fitted novelty score and its calibrated threshold; ``state`` holds its arrays."""

    method: str
    threshold: float = float("inf")
    known_share: float = KNOWN_SHARE
    k: int = 1
    state: dict[str, np.ndarray] = field(default_factory=dict)

    def score(self, codes: np.ndarray | None = None, logits: np.ndarray | None = None) -> np.ndarray:
        """Novelty of each image (higher: less like the training images), from its codes, or for
        ``msp`` and ``energy`` from its logits."""
        if self.method in FROM_LOGITS:
            return _logit_score(self.method, np.asarray(logits, dtype=np.float64))
        codes = np.asarray(codes, dtype=np.float64)
        return np.concatenate([_code_score(self, codes[s : s + CHUNK]) for s in range(0, len(codes), CHUNK)]) if len(codes) else np.zeros(0)

    def is_novel(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) > self.threshold


def fit_detector(codes: np.ndarray, labels: np.ndarray, method: str = "knn", *, k: int = 1) -> NoveltyDetector:
    """The detector's state from training codes with integer labels (uncalibrated: threshold inf)."""
    codes = np.asarray(codes, dtype=np.float64)
    if method in FROM_LOGITS:
        return NoveltyDetector(method)
    if method == "knn":
        return NoveltyDetector(method, k=k, state={"bank": _unit(codes).astype(np.float32)})
    return NoveltyDetector(method, state=_gaussians(codes, labels, relative=method == "relative_mahalanobis"))


def calibrate(detector: NoveltyDetector, out_of_fold: np.ndarray, known_share: float = KNOWN_SHARE) -> NoveltyDetector:
    """Set the threshold that keeps ``known_share`` of the training images' out-of-fold scores."""
    detector.threshold, detector.known_share = float(np.quantile(out_of_fold, known_share)), known_share
    return detector


def out_of_fold_scores(
    codes: np.ndarray, labels: np.ndarray, method: str, *, k: int = 1, groups: np.ndarray | None = None, folds: int = 5,
    oof_logits: np.ndarray | None = None, random_state: int = 0, knn_by_fold: bool = False,
) -> np.ndarray:
    """Every training image's score from a detector that did not see it, its group or its fold.

    ``knn`` leaves out only the image's own group (every other training code stays in the bank,
    as at prediction), or with ``knn_by_fold`` its whole fold; the Gaussians are refitted per fold;
    ``msp`` and ``energy`` read ``oof_logits``, the out-of-fold logits of the head."""
    if method in FROM_LOGITS:
        return _logit_score(method, np.asarray(oof_logits, dtype=np.float64))
    codes = np.asarray(codes, dtype=np.float64)
    groups = np.arange(len(codes)) if groups is None else np.asarray(groups)
    if method == "knn" and not knn_by_fold:
        return _knn_leave_group_out(_unit(codes), groups, k)
    scores = np.empty(len(codes))
    for train, held in stratified_folds(labels, folds, groups=groups, random_state=random_state):
        scores[held] = fit_detector(codes[train], labels[train], method, k=k).score(codes[held])
    return scores


# ------------------------------------------------------------------------------ scores
def _logit_score(method: str, logits: np.ndarray) -> np.ndarray:
    if method == "msp":
        return -softmax(logits).max(axis=1)
    return -logsumexp(logits, axis=1)


def _code_score(detector: NoveltyDetector, codes: np.ndarray) -> np.ndarray:
    if detector.method == "knn":
        similarity = _unit(codes).astype(np.float32) @ detector.state["bank"].T
        return 1.0 - _kth_largest(similarity, detector.k)
    s = detector.state
    distance = _min_distance(codes, s["means"], s["precision"])
    if detector.method == "relative_mahalanobis":
        distance -= _min_distance(codes, s["global_mean"][None], s["global_precision"])
    return distance


def _kth_largest(similarity: np.ndarray, k: int) -> np.ndarray:
    k = min(k, similarity.shape[1])
    return np.partition(similarity, -k, axis=1)[:, -k]


def _knn_leave_group_out(unit: np.ndarray, groups: np.ndarray, k: int) -> np.ndarray:
    scores = np.empty(len(unit))
    bank = unit.astype(np.float32)
    for start in range(0, len(unit), CHUNK):
        rows = slice(start, start + CHUNK)
        similarity = bank[rows] @ bank.T
        similarity[groups[rows, None] == groups[None, :]] = -np.inf  # itself and its near duplicates
        scores[rows] = 1.0 - _kth_largest(similarity, k)
    return scores


def _unit(codes: np.ndarray) -> np.ndarray:
    return codes / np.maximum(np.linalg.norm(codes, axis=1, keepdims=True), 1e-12)


def _gaussians(codes: np.ndarray, labels: np.ndarray, relative: bool) -> dict[str, np.ndarray]:
    """Class means and the shrunk shared precision of the within-class residuals (and, for the
    relative distance, one Gaussian of every code)."""
    classes = np.unique(labels)
    means = np.stack([codes[labels == c].mean(axis=0) for c in classes])
    residuals = codes - means[np.searchsorted(classes, labels)]
    state = {"means": means, "precision": LedoitWolf(assume_centered=True).fit(residuals).get_precision()}
    if relative:
        state["global_mean"] = codes.mean(axis=0)
        state["global_precision"] = LedoitWolf().fit(codes).get_precision()
    return state


def _min_distance(codes: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """min over means of (x - m)^T P (x - m), as x P x - 2 x P m + m P m for every mean at once."""
    projected = codes @ precision
    quadratic = np.einsum("ij,ij->i", projected, codes)
    cross = projected @ means.T
    mean_terms = np.einsum("ij,ij->i", means @ precision, means)
    return (quadratic[:, None] - 2 * cross + mean_terms[None, :]).min(axis=1)
