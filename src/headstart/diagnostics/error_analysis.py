"""Where the model goes wrong on held-out images: confusion, confused pairs, per-class precision
and recall, balanced accuracy and calibration."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support

from ..strategies.linear import softmax

# A pair "dominates" the errors, and merging it is worth suggesting, when it holds this share of them.
DOMINANT_PAIR_SHARE = 0.3
CALIBRATION_BINS = 15
# Past this many classes the full confusion matrix is neither readable nor small (5,000 classes:
# 25 million cells); the confused pairs and per-class figures still describe the errors.
MAX_CONFUSION_CLASSES = 100


def balanced_accuracy(y_true: np.ndarray, predicted: np.ndarray) -> float:
    """Mean recall over the classes present; a class predicted but absent from ``y_true`` (an
    evaluation set without it) is a plain mistake, and a set of one class is what it is (the
    verdict says so): neither is worth scikit-learn's warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        warnings.filterwarnings("ignore", message="A single label was found in 'y_true' and 'y_pred'")
        return float(balanced_accuracy_score(y_true, predicted))


def error_analysis(y_true: np.ndarray, scores: np.ndarray, class_names: list[str], *, top_pairs: int = 10) -> dict:
    """Errors of ``scores`` (n, k logits) against integer labels ``y_true`` in 0..k-1."""
    k = len(class_names)
    predicted = scores.argmax(1)
    precision, recall, f1, support = precision_recall_fscore_support(y_true, predicted, labels=np.arange(k), zero_division=0)
    pairs = confused_pairs(y_true, predicted, class_names, top_pairs)
    errors = int(np.sum(predicted != y_true))
    # With two classes every error is between "the" pair: merging is only a question from three on.
    dominant = pairs[0] if k > 2 and pairs and errors >= 5 and pairs[0]["count"] >= DOMINANT_PAIR_SHARE * errors else None
    return {
        "n_images": int(len(y_true)),
        "accuracy": float(np.mean(predicted == y_true)),
        "balanced_accuracy": balanced_accuracy(y_true, predicted),
        "confusion": confusion_matrix(y_true, predicted, labels=np.arange(k)).tolist() if k <= MAX_CONFUSION_CLASSES else None,
        "classes": list(class_names),
        "per_class": [
            {"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
        ],
        "confused_pairs": pairs,
        "errors": errors,
        "merge_suggestion": (
            f"{dominant['a']} and {dominant['b']} account for {dominant['count']} of {errors} errors: merge them if they are one class in practice."
            if dominant
            else None
        ),
        "calibration": calibration(top_probability(scores), predicted == y_true),
    }


def confused_pairs(y_true: np.ndarray, predicted: np.ndarray, class_names: list[str], top: int) -> list[dict]:
    """Unordered class pairs by how often either is mistaken for the other (counted from the
    errors themselves, so thousands of classes cost no dense matrix)."""
    wrong = predicted != y_true
    a, b = y_true[wrong], predicted[wrong]
    directed: dict[tuple[int, int], int] = {}
    if wrong.any():
        pairs, counts = np.unique(np.stack([a, b]), axis=1, return_counts=True)  # pairs: (2, m) columns
        directed = {(int(i), int(j)): int(count) for (i, j), count in zip(pairs.T, counts)}
    totals: dict[tuple[int, int], int] = {}
    for (i, j), count in directed.items():
        pair = (min(i, j), max(i, j))
        totals[pair] = totals.get(pair, 0) + count
    ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:top]
    return [
        {"a": class_names[i], "b": class_names[j], "count": count, "a_as_b": directed.get((i, j), 0), "b_as_a": directed.get((j, i), 0)}
        for (i, j), count in ranked
    ]


def top_probability(scores: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Each row's largest softmax probability, a chunk of rows at a time: 25,000 held-out images
    of 5,000 classes would need a 1 GB copy for the whole softmax at once."""
    return np.concatenate([softmax(scores[i : i + chunk]).max(1) for i in range(0, len(scores), chunk)]) if len(scores) else np.zeros(0)


def calibration(confidence: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS) -> dict:
    """Expected calibration error of the top-class probability ``confidence`` against whether the
    top class was right (equal-width bins), and the reliability diagram's points."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    points, ece = [], 0.0
    for b in range(bins):
        mask = which == b
        if not mask.any():
            continue
        conf, acc = float(confidence[mask].mean()), float(correct[mask].mean())
        ece += mask.mean() * abs(acc - conf)
        points.append({"confidence": conf, "accuracy": acc, "count": int(mask.sum())})
    return {"ece": float(ece), "mean_confidence": float(confidence.mean()), "bins": points}
