"""Linear-probe refits on training codes: the learning curve and out-of-fold label suspects.

Both refit the linear head at the C the fit chose, many times, on parts of the training codes.
The codes are standardised and projected onto their row space once (the same exact change of
basis the fit uses, see :func:`~headstart.strategies.linear.row_space_basis`), so each refit
costs little even with wide codes.

A refit costs about codes x classes x width, and the probe makes 23 of them: on 30,000 codes of
300 classes they took over 12 minutes. Past :data:`PROBE_CLASSES` classes or :data:`PROBE_CODES`
codes the probe runs on a sample (:func:`probe_rows`: classes chosen at random, each class's codes
up to one common cap), and says so. The shape of a learning curve and which labels disagree with
their neighbours are properties of the images, which a sample of them shows.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.optimize import curve_fit
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from ..data.duplicates import stratified_folds
from ..data.subsample import capped_sample, class_subset, median_count
from ..strategies.linear import row_space_basis

FRACTIONS = (0.1, 0.2, 0.35, 0.5, 0.75, 1.0)
CURVE_FOLDS = 3
SUSPECT_FOLDS = 5
NEXT_POINTS = 0.02  # the learning curve is asked how many images would gain this much
FLAT_GAIN = 0.005  # doubling the images gains less than this: the curve is called flat
# The probe's sample: 4,000 codes of 100 classes refit 23 times in about 10 s on 2 cores.
PROBE_CLASSES = 100
PROBE_CODES = 4000


def _reduced(codes: np.ndarray) -> np.ndarray:
    standardised = StandardScaler().fit_transform(codes)
    basis = row_space_basis(standardised)
    return standardised @ basis if basis is not None else standardised


def _held_probabilities(X, y, X_held, y_held, C, class_weight, random_state) -> np.ndarray:
    model = LogisticRegression(C=C, max_iter=300, class_weight=class_weight, random_state=random_state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", message="The number of unique classes")  # a 10% subset of small classes
        model.fit(X, y)
    probabilities = np.zeros((len(X_held), int(max(y.max(), y_held.max())) + 1))
    probabilities[:, model.classes_] = model.predict_proba(X_held)
    return probabilities


def probe_rows(y: np.ndarray, random_state: int = 0) -> np.ndarray:
    """The training rows the probe refits on (sorted): all of them, or those of
    :data:`PROBE_CLASSES` classes chosen at random, capped to :data:`PROBE_CODES` in all with every
    chosen class kept (:func:`~headstart.data.subsample.capped_sample`)."""
    present = np.unique(y)
    chosen = present[class_subset(len(present), PROBE_CLASSES, random_state)]
    rows = np.flatnonzero(np.isin(y, chosen))
    return capped_sample(y, rows, PROBE_CODES, np.random.default_rng(random_state))


def probe_refits(
    codes: np.ndarray, y: np.ndarray, *, C: float, class_weight: str | None = None, random_state: int = 0, groups: np.ndarray | None = None
) -> tuple[dict | None, list[dict], dict]:
    """:func:`learning_curve` and :func:`label_suspects` (indices and labels as in ``y``) from one
    change of basis, on :func:`probe_rows`; and what was probed (``images``, ``classes``, and
    ``of_images``, ``of_classes`` in all). ``groups`` keeps near duplicates inside one fold: a copy in
    the fitted folds would vouch for a wrong label, and lift the curve."""
    rows = probe_rows(y, random_state)
    kept_classes, sub_y = np.unique(y[rows], return_inverse=True)
    probed = {"images": len(rows), "classes": len(kept_classes), "of_images": len(y), "of_classes": len(np.unique(y))}
    reduced = _reduced(codes[rows])
    sub_groups = groups[rows] if groups is not None else None
    curve = _learning_curve(reduced, sub_y, C, class_weight, random_state, sub_groups)
    if curve is not None and curve["words"] and len(rows) < len(y):
        sample = f" (probed on {len(rows):,} images of {probed['classes']} of the {probed['of_classes']} classes)"
        curve["words"] = curve["words"].removesuffix(".") + sample + "."
    probabilities = _out_of_fold_probabilities(reduced, sub_y, C, class_weight, random_state, sub_groups)
    suspects = label_suspects(probabilities, sub_y) if probabilities is not None else []
    for s in suspects:  # back to the caller's rows and labels
        s.update(index=int(rows[s["index"]]), given=int(kept_classes[s["given"]]), predicted=int(kept_classes[s["predicted"]]))
    return curve, suspects, probed


def learning_curve(codes: np.ndarray, y: np.ndarray, *, C: float, class_weight: str | None = None, random_state: int = 0) -> dict | None:
    """Cross-validated accuracy of the linear probe against training images per class, and what
    a power law fitted to it says about more data. None when a class has under 3 images."""
    return _learning_curve(_reduced(codes), y, C, class_weight, random_state)


def _learning_curve(reduced, y, C, class_weight, random_state, groups=None) -> dict | None:
    counts = np.bincount(y)
    if counts[counts > 0].min() < 3:
        return None
    rng = np.random.default_rng(random_state)
    # Scored as the head's cross-validation is: in balanced accuracy where the classes are weighted.
    # Plain accuracy follows the largest class: 122 ants and 5 bees read "flat at 5 images per
    # class: doubling them would gain under half a point" beside a bee recall of 65%.
    balanced = class_weight is not None
    metric = balanced_accuracy_score if balanced else accuracy_score
    scores: dict[float, list[float]] = {f: [] for f in FRACTIONS}
    with threadpool_limits(limits=1, user_api="blas"):
        for train, held in stratified_folds(y, CURVE_FOLDS, groups=groups, random_state=random_state):
            for fraction in FRACTIONS:
                chosen = _per_class_subset(train, y, fraction, rng)
                if len(np.unique(y[chosen])) < 2:
                    continue
                probabilities = _held_probabilities(reduced[chosen], y[chosen], reduced[held], y[held], C, class_weight, random_state)
                scores[fraction].append(float(metric(y[held], probabilities.argmax(1))))
    median = float(median_count(counts[counts > 0]))
    share = (CURVE_FOLDS - 1) / CURVE_FOLDS  # a fold trains on this share of the images
    points = [
        {"per_class": round(max(1.0, fraction * share * median), 1), "accuracy": float(np.mean(s)), "std": float(np.std(s))}
        for fraction, s in scores.items()
        if s
    ]
    present = counts[counts > 0]
    chance = 1 / len(present) if balanced else present.max() / present.sum()
    found = {"points": points, "images_per_class": median, "metric": "balanced accuracy" if balanced else "accuracy"}
    if all(p["accuracy"] <= chance + 1e-9 for p in points):
        # The probe learnt nothing from any part of the images (5 bees beside 122 ants: every fold's
        # part predicts one class): a power law through chance would call the curve "flat".
        return {**found, "fit": None, "words": None, "at_chance": True}
    return {**found, **extrapolate(points, median)}


def _per_class_subset(rows: np.ndarray, y: np.ndarray, fraction: float, rng) -> np.ndarray:
    chosen = []
    for label in np.unique(y[rows]):
        members = rows[y[rows] == label]
        take = max(1, int(round(fraction * len(members))))
        chosen.append(rng.choice(members, take, replace=False))
    return np.concatenate(chosen)


def _power_law(m, a, b, c):
    return a * np.power(m, -b) + c


def extrapolate(points: list[dict], now: float) -> dict:
    """Fit error = a * m^-b + c (m images per class; c the error more data cannot remove) and
    read off the accuracy at 2x and 4x the images, and the images needed for 2 more points."""
    m = np.array([p["per_class"] for p in points], dtype=float)
    error = 1.0 - np.array([p["accuracy"] for p in points], dtype=float)
    if len(points) < 3 or np.ptp(m) == 0:
        return {"fit": None, "words": None}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            (a, b, c), _ = curve_fit(_power_law, m, error, p0=(max(error[0], 1e-3), 0.5, 0.0), bounds=([0, 0.05, 0], [10, 2, max(error.min(), 1e-6)]), maxfev=5000)
    except (RuntimeError, ValueError):
        return {"fit": None, "words": None}
    predict = lambda size: float(1.0 - _power_law(size, a, b, c))  # noqa: E731
    current = predict(now)
    target_error = 1.0 - current - NEXT_POINTS
    needed = (a / (target_error - c)) ** (1 / b) if target_error > c and a > 0 else math.inf
    doubled, quadrupled = predict(2 * now), predict(4 * now)
    flat = doubled - current < FLAT_GAIN
    if flat:
        words = f"the learning curve is flat at {now:g} images per class: doubling them would gain under half a point."
    elif math.isfinite(needed) and needed <= 100 * now:
        words = (
            # gains, not levels: the curve's level is a cross-validated one, and beside a held-out
            # accuracy above it (flowers, 15 per class: test 98.0%) "doubling them: ~96.7%" read as a loss
            f"about {needed:,.0f} images per class (now {now:g}) for {NEXT_POINTS * 100:.0f} more points, by the learning curve; "
            f"doubling them ({2 * now:g}) would add about {(doubled - current) * 100:.1f}."
        )
    else:
        words = f"doubling the images per class (now {now:g}) would add about {(doubled - current) * 100:.1f} points, by the learning curve."
    return {
        "fit": {"a": float(a), "b": float(b), "c": float(c)},
        "accuracy_now": current,
        "accuracy_doubled": doubled,
        "accuracy_quadrupled": quadrupled,
        "flat": flat,
        "per_class_for_next_points": float(needed) if math.isfinite(needed) else None,
        "words": words,
    }


def out_of_fold_probabilities(codes: np.ndarray, y: np.ndarray, *, C: float, class_weight: str | None = None, random_state: int = 0) -> np.ndarray | None:
    """Each training image's class probabilities from a probe that never saw it. None when a
    class has a single image."""
    return _out_of_fold_probabilities(_reduced(codes), y, C, class_weight, random_state)


def _out_of_fold_probabilities(reduced, y, C, class_weight, random_state, groups=None) -> np.ndarray | None:
    counts = np.bincount(y)
    folds = min(SUSPECT_FOLDS, int(counts[counts > 0].min()))
    if folds < 2:
        return None
    probabilities = np.zeros((len(y), len(counts)))
    with threadpool_limits(limits=1, user_api="blas"):
        for train, held in stratified_folds(y, folds, groups=groups, random_state=random_state):
            held_probabilities = _held_probabilities(reduced[train], y[train], reduced[held], y[held], C, class_weight, random_state)
            probabilities[held, : held_probabilities.shape[1]] = held_probabilities
    return probabilities


def label_suspects(probabilities: np.ndarray, y: np.ndarray) -> list[dict]:
    """Training images ranked by the out-of-fold probability of their given label, lowest first:
    the likeliest label errors (Northcutt et al.'s self-confidence ranking). Only images the probe
    assigns to another class are listed."""
    given = probabilities[np.arange(len(y)), y]
    predicted = probabilities.argmax(1)
    order = np.argsort(given, kind="stable")
    return [
        {"index": int(i), "given": int(y[i]), "predicted": int(predicted[i]), "p_given": float(given[i]), "p_predicted": float(probabilities[i, predicted[i]])}
        for i in order
        if predicted[i] != y[i]
    ]
