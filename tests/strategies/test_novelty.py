"""Novelty scores: higher for images unlike the training ones; thresholds from the training images alone."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from headstart.strategies import fit_linear_head
from headstart.strategies.novelty import calibrate, fit_detector, out_of_fold_scores


def blobs(n_per_class, centres, rng, spread=1.0):
    codes = np.vstack([c + spread * rng.standard_normal((n_per_class, centres.shape[1])) for c in centres])
    return codes, np.repeat(np.arange(len(centres)), n_per_class)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centres = 4.0 * rng.standard_normal((3, 40))  # fewer images per class than dimensions, as with CNN codes
    train, labels = blobs(20, centres, rng)
    known, known_labels = blobs(30, centres, rng)
    novel, _ = blobs(30, 4.0 * rng.standard_normal((2, 40)), rng)
    head, _ = fit_linear_head(train, labels)
    return train, labels, known, known_labels, novel, head


@pytest.mark.parametrize("method", ["msp", "mahalanobis", "knn", "ncm"])
def test_novel_images_score_higher_than_known_ones(data, method):
    train, labels, known, _, novel, head = data
    detector = fit_detector(train, labels, method, k=3)
    scores = detector.score(np.vstack([known, novel]), head.decision_function(np.vstack([known, novel])))
    truth = np.r_[np.zeros(len(known)), np.ones(len(novel))]
    assert roc_auc_score(truth, scores) > 0.95


@pytest.mark.parametrize("method", ["mahalanobis", "knn", "ncm"])
def test_the_threshold_from_training_images_keeps_most_known_images(data, method):
    train, labels, known, _, novel, _ = data
    detector = calibrate(fit_detector(train, labels, method), out_of_fold_scores(train, labels, method), known_share=0.95)
    assert detector.known_share == 0.95 and np.isfinite(detector.threshold)
    assert detector.is_novel(detector.score(known)).mean() <= 0.15  # about 5%, on 90 new images
    assert detector.is_novel(detector.score(novel)).mean() >= 0.9


def test_knn_out_of_fold_scores_leave_out_the_image_and_its_group():
    rng = np.random.default_rng(1)
    codes = rng.standard_normal((10, 8))
    twinned = np.vstack([codes, codes + 1e-6])  # every image has a near duplicate
    labels = np.zeros(20, dtype=int)
    alone = out_of_fold_scores(twinned, labels, "knn")
    assert np.all(alone < 1e-6)  # its twin is its nearest neighbour: a threshold from these would reject everything new
    grouped = out_of_fold_scores(twinned, labels, "knn", groups=np.r_[np.arange(10), np.arange(10)])
    unit = twinned / np.linalg.norm(twinned, axis=1, keepdims=True)
    similarity = unit @ unit.T
    for i in range(20):
        others = [j for j in range(20) if j % 10 != i % 10]  # not itself, not its twin
        assert grouped[i] == pytest.approx(1 - similarity[i, others].max(), abs=1e-5)


def test_scores_from_logits_need_no_codes(data):
    train, labels, known, _, _, head = data
    logits = head.decision_function(known)
    msp = fit_detector(train, labels, "msp").score(logits=logits)
    assert np.all((-1 <= msp) & (msp <= -1 / 3))
    energy = fit_detector(train, labels, "energy").score(logits=logits)
    assert np.all(energy <= -logits.max(axis=1) + 1e-9)  # -logsumexp is at most -max


def test_the_relative_distance_is_the_class_distance_less_the_global_one(data):
    train, labels, known, _, novel, _ = data
    points = np.vstack([known, novel])
    relative = fit_detector(train, labels, "relative_mahalanobis")
    plain = fit_detector(train, labels, "mahalanobis")
    state = relative.state
    centred = points - state["global_mean"]
    global_distance = np.einsum("ij,jk,ik->i", centred, state["global_precision"], centred)
    np.testing.assert_allclose(relative.score(points), plain.score(points) - global_distance, rtol=1e-6, atol=1e-6)
    direct = min(((points[0] - m) @ state["precision"] @ (points[0] - m) for m in state["means"]))
    assert plain.score(points[:1])[0] == pytest.approx(direct, rel=1e-8)


def test_ncm_is_the_cosine_distance_to_the_nearest_class_mean_of_unit_codes(data):
    train, labels, known, _, _, _ = data
    unit = train / np.linalg.norm(train, axis=1, keepdims=True)
    means = np.stack([unit[labels == c].mean(axis=0) for c in range(3)])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    point = known[0] / np.linalg.norm(known[0])
    expected = 1 - max(point @ m for m in means)
    assert fit_detector(train, labels, "ncm").score(known[:1])[0] == pytest.approx(expected, abs=1e-5)
