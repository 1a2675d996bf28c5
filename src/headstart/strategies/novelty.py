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
- ``knn``: one minus the cosine similarity to the k-th nearest training code (Sun et al. 2022);
- ``ncm``: one minus the cosine similarity to the nearest class mean of the unit codes (a class
  prototype, as in nearest-class-mean classifiers): a novel image may sit near one training image
  of a class it does not belong to, less often near the centre of one;
- fusions such as ``knn+msp`` (the default): each part as its percentile among the training images'
  out-of-fold scores, the image as novel as its most novel part. kNN finds other kinds of images
  (AUROC 1.000 on 9 of 11 far pairs, where the classifier's confidence is high on photos for a
  model of grey scans); confidence finds look-alikes kNN cannot tell apart (hymenoptera against
  flowers: kNN 0.766, MSP 0.907, fused 0.850; held-out flowers 0.545, 0.887, 0.822).

Examples of images of none of the classes, where a user has some, teach the score what they look
like (``fit_calibrated(..., examples=...)``): a logistic regression weighs the percentiles of
``EXAMPLE_PARTS`` to tell the examples from the training images' out-of-fold scores, and an image
is as novel as the larger of that weighed score and its kNN part (so the other kinds of images kNN
finds, it still finds). The threshold is set as without them.

The threshold needs no novel images: it is an order statistic of out-of-fold scores of the training
images themselves (a training image scored by a detector that never saw it, or its near duplicates
and group), chosen so that at least ``known_share`` of new images like the training ones is kept,
with ``CONFIDENCE`` (a training-conditional guarantee: Vovk 2012; the plain split-conformal
quantile keeps that share only on average, so about half of all test sets saw more rejected).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.special import logsumexp
from scipy.stats import binom
from sklearn.covariance import LedoitWolf

from ..data.duplicates import stratified_folds
from ..data.subsample import held_out_split
from .linear import softmax

METHODS = ("msp", "energy", "mahalanobis", "relative_mahalanobis", "knn", "ncm")
FROM_LOGITS = ("msp", "energy")
DEFAULT_METHOD = "knn+msp"
BANK_LIMIT = 50_000  # training codes kept for kNN (a stratified sample beyond): 256 MB of 1,280 float32 codes
KNOWN_SHARE = 0.95  # share of known-class images the calibrated threshold keeps
CONFIDENCE = 0.9  # probability that it keeps at least that share (over the draw of the calibrating images)
# Scores that examples of none of these weigh. Hymenoptera's model shown 40 flowers tells 300 other
# flowers from its test images at AUROC 0.933 (0.873 untaught); energy and the nearest class mean
# see what kNN and MSP miss (in a scratch run, weighing kNN and MSP alone gave 0.910, these four 0.941).
EXAMPLE_PARTS = ("knn", "msp", "energy", "ncm")
MIN_EXAMPLES = 5
# Taught, the fusion keeps kNN beside the weighed score, which replaces the rest: kNN still finds the
# kinds of images the examples did not show (bench_novelty --examples 40: every far set still all
# caught), and a fusion of two parts keeps a lower threshold than one of three (keeping kNN and MSP
# too, hymenoptera's model caught 11% of the other flowers at its threshold, against 47%).
KEPT_WHEN_TAUGHT = ("knn",)
CHUNK = 4096  # codes scored at a time: a chunk's similarities to the bank stay a few hundred MB


@dataclass
class NoveltyDetector:
    """A fitted novelty score and its calibrated threshold; ``state`` holds its arrays (for a fusion,
    each part's sorted out-of-fold scores as ``reference.<part>`` beside the parts' own arrays)."""

    method: str  # one of METHODS, or parts joined by "+"
    threshold: float = float("inf")
    known_share: float = KNOWN_SHARE
    k: int = 1
    confidence: float = CONFIDENCE
    state: dict[str, np.ndarray] = field(default_factory=dict)
    learned: list[str] = field(default_factory=list)  # parts weighed by examples of none of these (state "weights")
    examples: int = 0  # how many examples of none of these taught it

    @property
    def parts(self) -> list[str]:
        return self.method.split("+")

    @property
    def every_part(self) -> list[str]:
        return list(dict.fromkeys(self.parts + self.learned))

    @property
    def needs_codes(self) -> bool:
        return any(part not in FROM_LOGITS for part in self.every_part)

    def score(self, codes: np.ndarray | None = None, logits: np.ndarray | None = None) -> np.ndarray:
        """Novelty of each image (higher: less like the training images), from its codes and, for
        ``msp`` and ``energy``, its logits."""
        if len(self.parts) > 1:
            return self._fuse({part: self._part(part).score(codes, logits) for part in self.every_part})
        if self.method in FROM_LOGITS:
            return _logit_score(self.method, np.asarray(logits, dtype=np.float64))
        codes = np.asarray(codes, dtype=np.float64)
        return np.concatenate([_code_score(self, codes[s : s + CHUNK]) for s in range(0, len(codes), CHUNK)]) if len(codes) else np.zeros(0)

    def _fuse(self, raw: dict[str, np.ndarray]) -> np.ndarray:
        """A fusion's score from each part's raw scores, each read as its percentile among the
        part's references: the largest of the kept parts' and, taught, the weighed score's."""
        share = {part: percentile(self.state[f"reference.{part}"], raw[part]) for part in self.every_part}
        kept = _kept_parts(self.parts, taught=bool(self.learned))
        fused = np.max([share[part] for part in kept], axis=0) if kept else 0
        if self.learned:
            weighed = np.column_stack([share[part] for part in self.learned]) @ self.state["weights"]
            fused = np.maximum(fused, percentile(self.state["reference.learned"], weighed))
        return fused

    def is_novel(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) > self.threshold

    def _part(self, part: str) -> "NoveltyDetector":
        return NoveltyDetector(part, k=self.k, state={k: v for k, v in self.state.items() if not k.startswith("reference.") and k != "weights"})

    def to_json(self) -> dict:
        return {"method": self.method, "threshold": self.threshold, "known_share": self.known_share, "k": self.k, "confidence": self.confidence,
                "learned": self.learned, "examples": self.examples}

    def to_tensors(self, prefix: str) -> dict[str, np.ndarray]:
        return {prefix + name: np.ascontiguousarray(array) for name, array in self.state.items()}

    @classmethod
    def from_saved(cls, meta: dict, tensors: dict[str, np.ndarray], prefix: str) -> "NoveltyDetector":
        state = {name.removeprefix(prefix): array for name, array in tensors.items() if name.startswith(prefix)}
        confidence = float(meta.get("confidence", 0.5))  # saved before the guarantee: split-conformal, on average
        return cls(
            meta["method"], float(meta["threshold"]), float(meta["known_share"]), int(meta["k"]), confidence, state,
            learned=list(meta.get("learned", [])), examples=int(meta.get("examples", 0)),
        )


def percentile(reference: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Share of ``reference`` at or below each score, continued past the largest by the reference's
    spread (so that images beyond every training image still rank among themselves)."""
    ordered = np.sort(reference)
    share = np.searchsorted(ordered, scores, side="right") / len(ordered)
    spread = max(float(ordered[-1] - ordered[0]), 1e-12)
    return share + np.maximum(scores - ordered[-1], 0) / spread


def fit_calibrated(
    codes: np.ndarray, labels: np.ndarray, oof_logits: np.ndarray, method: str = DEFAULT_METHOD, *, k: int = 1,
    groups: np.ndarray | None = None, known_share: float = KNOWN_SHARE, random_state: int = 0,
    examples: tuple[np.ndarray, np.ndarray] | None = None,
) -> NoveltyDetector:
    """A detector fitted on training codes (integer labels) with its threshold set from their
    out-of-fold scores; ``oof_logits`` are the head's out-of-fold logits of the same images. Beyond
    ``BANK_LIMIT`` images a stratified sample is kept (and calibrated on). ``examples``: the codes
    and the head's logits of images of none of the classes (never fitted on), which teach a fusion
    what they look like (the module's docstring)."""
    codes, labels = np.asarray(codes), np.asarray(labels)
    if len(labels) > BANK_LIMIT:
        # each class in proportion (rounded), never emptied: a class of one image stays whole
        keep, _ = held_out_split(labels, 1 - BANK_LIMIT / len(labels), np.random.default_rng(random_state))
        codes, labels, oof_logits = codes[keep], labels[keep], oof_logits[keep]
        groups = groups[keep] if groups is not None else None
    detector = _new_detector(method, k, taught=examples is not None)
    parts = detector.every_part
    oof = {}
    for part in parts:
        detector.state |= fit_detector(codes, labels, part, k=k).state
        oof[part] = out_of_fold_scores(codes, labels, part, k=k, groups=groups, oof_logits=oof_logits, random_state=random_state)
    shown = {part: detector._part(part).score(*examples) for part in parts} if examples is not None else None
    return _calibrated(detector, oof, known_share, shown)


def fit_on_held_out(
    codes: np.ndarray, labels: np.ndarray, held: np.ndarray, held_logits: np.ndarray, method: str = DEFAULT_METHOD, *, k: int = 1,
    groups: np.ndarray | None = None, known_share: float = KNOWN_SHARE, examples: tuple[np.ndarray, np.ndarray] | None = None,
) -> NoveltyDetector:
    """A detector for a network that learnt from every image but those at indices ``held`` (its
    early-stopping split), calibrated on those: a network is not refitted per fold, so its
    out-of-fold scores cannot be had, and the held images are as new to its weights as a test
    image. kNN keeps every code in its bank and scores a held image leaving out its own group;
    Gaussians are fitted on the other images; ``held_logits`` are the network's logits of the held
    ones. ``examples``: the network's codes and logits of images of none of the classes (as in
    :func:`fit_calibrated`)."""
    codes, labels, held = np.asarray(codes, dtype=np.float64), np.asarray(labels), np.asarray(held)
    groups = np.arange(len(codes)) if groups is None else np.asarray(groups)
    learnt = np.setdiff1d(np.arange(len(codes)), held)
    detector = _new_detector(method, k, taught=examples is not None)
    parts = detector.every_part
    scores, shown = {}, {}
    for part in parts:
        if part == "knn":
            fitted = fit_detector(codes, labels, part, k=k)
            scores[part] = _knn_leave_group_out(_unit(codes), groups, k, rows=held)
        else:
            fitted = fit_detector(codes[learnt], labels[learnt], part, k=k)
            scores[part] = fitted.score(codes[held], held_logits)
        detector.state |= fitted.state
        if examples is not None:
            shown[part] = fitted.score(*examples)
    return _calibrated(detector, scores, known_share, shown if examples is not None else None)


def _calibrated(detector: NoveltyDetector, unseen: dict[str, np.ndarray], known_share: float, shown: dict[str, np.ndarray] | None = None) -> NoveltyDetector:
    """The threshold from each part's scores of images the detector had not seen (a fusion also
    keeps them, sorted, to turn a new image's part scores into percentiles); ``shown``: each
    part's scores of examples of none of these, which the fusion then learns from."""
    if len(detector.parts) == 1 and shown is None:
        return calibrate(detector, unseen[detector.method], known_share)
    if len(detector.parts) == 1:
        raise ValueError(f"examples of none of these teach a fusion (such as {DEFAULT_METHOD!r}), not {detector.method!r} alone")
    detector.state |= {f"reference.{part}": np.sort(scores).astype(np.float64) for part, scores in unseen.items()}
    if shown is not None:
        _learn_from_examples(detector, unseen, shown)
    return calibrate(detector, detector._fuse(unseen), known_share)


def _new_detector(method: str, k: int, taught: bool) -> NoveltyDetector:
    """An unfitted detector; one taught by examples of none of these also weighs ``EXAMPLE_PARTS``."""
    return NoveltyDetector(method, k=k, learned=list(EXAMPLE_PARTS) if taught else [])


def _kept_parts(parts: list[str], taught: bool) -> list[str]:
    """The fusion's parts that speak beside a weighed score (all of them when untaught)."""
    return [part for part in parts if part in KEPT_WHEN_TAUGHT] if taught else parts


def _learn_from_examples(detector: NoveltyDetector, unseen: dict[str, np.ndarray], shown: dict[str, np.ndarray]) -> None:
    """Weights over the percentiles of the detector's ``learned`` parts that tell the examples from the training images'
    unseen scores (a logistic regression, the two sides weighed equally), kept in the detector's
    state with the training images' weighed scores as their reference."""
    from sklearn.linear_model import LogisticRegression

    n_examples = len(next(iter(shown.values())))
    if n_examples < MIN_EXAMPLES:
        raise ValueError(f"got {n_examples} example(s) of none of these; give at least {MIN_EXAMPLES}, or none")
    known = np.column_stack([percentile(unseen[part], unseen[part]) for part in detector.learned])
    novel = np.column_stack([percentile(unseen[part], shown[part]) for part in detector.learned])
    target = np.r_[np.zeros(len(known)), np.ones(len(novel))]
    weights = LogisticRegression(class_weight="balanced", max_iter=1000).fit(np.vstack([known, novel]), target).coef_[0]
    weighed = known @ weights
    detector.examples = n_examples
    detector.state |= {"weights": weights.astype(np.float64), "reference.learned": np.sort(weighed)}


def fit_detector(codes: np.ndarray, labels: np.ndarray, method: str = "knn", *, k: int = 1) -> NoveltyDetector:
    """The detector's state from training codes with integer labels (uncalibrated: threshold inf)."""
    codes = np.asarray(codes, dtype=np.float64)
    if "+" in method:
        raise ValueError(f"fit a fusion ({method!r}) with fit_calibrated, which keeps each part's out-of-fold scores")
    if method in FROM_LOGITS:
        return NoveltyDetector(method)
    if method == "knn":
        return NoveltyDetector(method, k=k, state={"bank": _unit(codes).astype(np.float32)})
    if method == "ncm":
        unit = _unit(codes)
        means = np.stack([unit[labels == c].mean(axis=0) for c in np.unique(labels)])
        return NoveltyDetector(method, state={"prototypes": _unit(means).astype(np.float32)})
    return NoveltyDetector(method, state=_gaussians(codes, labels, relative=method == "relative_mahalanobis"))


def calibrate(detector: NoveltyDetector, unseen: np.ndarray, known_share: float = KNOWN_SHARE, confidence: float = CONFIDENCE) -> NoveltyDetector:
    """Set the threshold that keeps at least ``known_share`` of new images like the training ones
    with probability ``confidence``, from n scores of training images the detector had not seen.

    The share a new exchangeable image falls at or below the r-th smallest score is Beta(r, n+1-r)
    distributed, and it is under ``known_share`` exactly when Binomial(n, known_share) reaches r; so
    r is the smallest rank where that chance is at most 1 - ``confidence``. With n = 245 (hymenoptera)
    it is the 238th score, against the 234th of the split-conformal quantile ceil((n+1) * share),
    which keeps the share only on average. Under 45 scores (at 95% and 0.9) even the largest gives
    less: it is taken, and ``detector.confidence`` says what it gives (0.64 with 20 scores)."""
    ordered = np.sort(np.asarray(unseen, dtype=np.float64))
    n = len(ordered)
    rank = min(int(binom.ppf(confidence, n, known_share)) + 1, n)
    detector.threshold, detector.known_share = float(ordered[rank - 1]), known_share
    detector.confidence = float(binom.cdf(rank - 1, n, known_share))  # P(the share kept >= known_share)
    return detector


def flags_more_than_calibrated(detector: NoveltyDetector | None, flagged: int, known: int) -> bool:
    """Whether ``flagged`` of ``known`` known-class images is more than the calibrated threshold
    flags by chance: past the 99th percentile of Binomial(known, 1 - known_share). Then those
    images are less like the training images than the threshold was set for (another source, new
    subjects: 21% of alzheimer_mri4's test scans), not unlucky."""
    if detector is None or detector.confidence is None or detector.confidence < CONFIDENCE or known == 0:
        return False  # no promise to measure against: too few scores set the threshold
    return bool(flagged > binom.ppf(0.99, known, 1 - detector.known_share))  # numpy's bool is no JSON (evaluate --format json)


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
    if detector.method == "ncm":
        return 1.0 - (_unit(codes).astype(np.float32) @ detector.state["prototypes"].T).max(axis=1)
    s = detector.state
    distance = _min_distance(codes, s["means"], s["precision"])
    if detector.method == "relative_mahalanobis":
        distance -= _min_distance(codes, s["global_mean"][None], s["global_precision"])
    return distance


def _kth_largest(similarity: np.ndarray, k: int) -> np.ndarray:
    k = min(k, similarity.shape[1])
    return np.partition(similarity, -k, axis=1)[:, -k]


def _knn_leave_group_out(unit: np.ndarray, groups: np.ndarray, k: int, rows: np.ndarray | None = None) -> np.ndarray:
    """kNN scores of the bank's ``rows`` (all by default), each leaving out its own group."""
    rows = np.arange(len(unit)) if rows is None else np.asarray(rows)
    scores = np.empty(len(rows))
    bank = unit.astype(np.float32)
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        similarity = bank[chunk] @ bank.T
        similarity[groups[chunk, None] == groups[None, :]] = -np.inf  # itself and its near duplicates
        scores[start : start + len(chunk)] = 1.0 - _kth_largest(similarity, k)
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


# ------------------------------------------------------------------------------ as a module
class NoveltyModule(torch.nn.Module):
    """A kNN, NCM, MSP or energy detector (or their fusion) as a module from (codes, logits) to scores:
    the same numbers as :meth:`NoveltyDetector.score`, for the exported ONNX graph."""

    def __init__(self, detector: NoveltyDetector):
        super().__init__()
        every = detector.every_part
        unsupported = [part for part in every if part not in ("knn", "ncm", *FROM_LOGITS)]
        if unsupported:
            raise ValueError(f"cannot export the {', '.join(unsupported)} score; kNN, NCM, msp and energy (and their fusions) export")
        self.parts, self.learned, self.every, self.k = detector.parts, detector.learned, every, detector.k
        if "knn" in every:
            self.register_buffer("bank", torch.as_tensor(detector.state["bank"], dtype=torch.float32))
            # A number fixed here: the bank's size read in forward is a tensor to the ONNX tracer,
            # and min() of it raised a TracerWarning ("Converting a tensor to a Python boolean").
            self.k = min(self.k, len(self.bank))
        if "ncm" in every:
            self.register_buffer("prototypes", torch.as_tensor(detector.state["prototypes"], dtype=torch.float32))
        for part in every if len(self.parts) > 1 else ():
            self.register_buffer(f"reference_{part}", torch.as_tensor(detector.state[f"reference.{part}"], dtype=torch.float32))
        if self.learned:
            self.register_buffer("weights", torch.as_tensor(detector.state["weights"], dtype=torch.float32))
            self.register_buffer("reference_learned", torch.as_tensor(detector.state["reference.learned"], dtype=torch.float32))

    def forward(self, codes: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        raw = {part: self._raw(part, codes, logits) for part in self.every}
        if len(self.parts) == 1:
            return raw[self.parts[0]]
        kept = _kept_parts(self.parts, taught=bool(self.learned))
        fused = torch.stack([_percentile(getattr(self, f"reference_{part}"), raw[part]) for part in kept]).amax(0) if kept else None
        if self.learned:
            weighed = torch.stack([_percentile(getattr(self, f"reference_{part}"), raw[part]) for part in self.learned], dim=1) @ self.weights
            learned = _percentile(self.reference_learned, weighed)
            fused = learned if fused is None else torch.maximum(fused, learned)
        return fused

    def _raw(self, part: str, codes: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        if part in ("knn", "ncm"):
            unit = codes / codes.norm(dim=1, keepdim=True).clamp_min(1e-12)
            if part == "ncm":
                return 1.0 - (unit @ self.prototypes.T).amax(dim=1)
            return 1.0 - (unit @ self.bank.T).topk(self.k, dim=1).values[:, -1]
        if part == "msp":
            return -logits.softmax(dim=1).amax(dim=1)
        return -torch.logsumexp(logits, dim=1)


def _percentile(ordered: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """:func:`percentile` for a sorted reference, in torch."""
    share = (ordered[None, :] <= scores[:, None]).float().mean(dim=1)
    spread = (ordered[-1] - ordered[0]).clamp_min(1e-12)
    return share + (scores - ordered[-1]).clamp_min(0) / spread
