"""Where the model goes wrong on held-out images: confusion, confused pairs, per-class precision
and recall, balanced accuracy and calibration."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support

from ..strategies.linear import softmax

# A pair "dominates" the errors, and merging it is worth suggesting, when it holds this share of them.
DOMINANT_PAIR_SHARE = 0.3
CALIBRATION_BINS = 15


def error_analysis(y_true: np.ndarray, scores: np.ndarray, class_names: list[str], *, top_pairs: int = 10) -> dict:
    """Errors of ``scores`` (n, k logits) against integer labels ``y_true`` in 0..k-1."""
    k = len(class_names)
    predicted = scores.argmax(1)
    matrix = confusion_matrix(y_true, predicted, labels=np.arange(k))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, predicted, labels=np.arange(k), zero_division=0)
    probabilities = softmax(scores)
    pairs = confused_pairs(matrix, class_names, top_pairs)
    errors = int(len(y_true) - np.trace(matrix))
    # With two classes every error is between "the" pair: merging is only a question from three on.
    dominant = pairs[0] if k > 2 and pairs and errors >= 5 and pairs[0]["count"] >= DOMINANT_PAIR_SHARE * errors else None
    return {
        "n_images": int(len(y_true)),
        "accuracy": float(np.mean(predicted == y_true)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, predicted)),
        "confusion": matrix.tolist(),
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
        "calibration": calibration(probabilities, y_true),
    }


def confused_pairs(matrix: np.ndarray, class_names: list[str], top: int) -> list[dict]:
    """Unordered class pairs by how often either is mistaken for the other."""
    both = matrix + matrix.T
    rows, cols = np.triu_indices(len(class_names), k=1)
    counts = both[rows, cols]
    order = np.argsort(-counts, kind="stable")
    return [
        {"a": class_names[rows[i]], "b": class_names[cols[i]], "count": int(counts[i]), "a_as_b": int(matrix[rows[i], cols[i]]), "b_as_a": int(matrix[cols[i], rows[i]])}
        for i in order[:top]
        if counts[i] > 0
    ]


def calibration(probabilities: np.ndarray, y_true: np.ndarray, bins: int = CALIBRATION_BINS) -> dict:
    """Expected calibration error of the top-class probability (equal-width bins), and the
    reliability diagram's points."""
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == y_true
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
