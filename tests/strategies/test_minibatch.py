"""The mini-batch linear head: the same head as scikit-learn's where both run, from arrays or memory maps."""

import numpy as np
import pytest

from headstart.errors import HeadstartError
from headstart.strategies import linear
from headstart.strategies.linear import LinearHead, fit_linear_head
from headstart.data.subsample import capped_sample, held_out_split
from headstart.strategies.minibatch import fit_minibatch


def overlapping(counts, dim=16, spread=0.9, seed=0):
    """Gaussian classes close enough to overlap (accuracy well under 100%), train and a fresh test set."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, spread, (len(counts), dim))
    draw = lambda per: (  # noqa: E731
        np.vstack([rng.normal(centres[k], 1.0, (n, dim)) for k, n in enumerate(per)]).astype(np.float32),
        np.repeat(np.arange(len(per)), per),
    )
    return draw(counts), draw([100] * len(counts))


def balanced_accuracy(head: LinearHead, X, y) -> float:
    predicted = head.decision_function(X).argmax(1)
    return float(np.mean([(predicted[y == k] == k).mean() for k in np.unique(y)]))


def test_agrees_with_scikit_learn_on_imbalanced_overlapping_classes():
    (X, y), (X_test, y_test) = overlapping([120, 80, 60, 40, 30, 20, 15, 10])
    sk_head, sk = fit_linear_head(X, y, solver="sklearn")
    mb_head, mb = fit_linear_head(X, y, solver="minibatch", device="cpu")
    assert mb.solver == "minibatch" and sk.solver == "sklearn"
    assert mb.class_weight == "balanced" and mb.scoring == "balanced_accuracy" and mb.cv_folds == 0
    assert mb.held_out == sum(max(1, round(0.1 * n)) for n in [120, 80, 60, 40, 30, 20, 15, 10])
    assert 0.4 < balanced_accuracy(mb_head, X_test, y_test) < 0.98  # overlapping: informative
    assert abs(balanced_accuracy(mb_head, X_test, y_test) - balanced_accuracy(sk_head, X_test, y_test)) < 0.03
    assert (mb_head.decision_function(X_test).argmax(1) == sk_head.decision_function(X_test).argmax(1)).mean() > 0.9
    assert mb_head.coef.shape == sk_head.coef.shape and mb_head.intercept.shape == (8,)


def test_class_weights_lift_the_rare_classes():
    (X, y), (X_test, y_test) = overlapping([300, 300, 300, 12, 12, 12], spread=0.7, seed=1)
    plain, _ = fit_linear_head(X, y, solver="minibatch", class_weight=None, Cs=(0.1,), device="cpu")
    weighted, _ = fit_linear_head(X, y, solver="minibatch", class_weight="balanced", Cs=(0.1,), device="cpu")
    rare = y_test >= 3
    recall = lambda head: (head.decision_function(X_test[rare]).argmax(1) == y_test[rare]).mean()  # noqa: E731
    assert recall(weighted) > recall(plain) + 0.1


def test_a_memory_map_gives_the_same_head_as_the_array(tmp_path):
    (X, y), _ = overlapping([40, 30, 20])
    np.save(tmp_path / "codes.npy", X)
    mapped = np.load(tmp_path / "codes.npy", mmap_mode="r")
    from_array, fit_array = fit_minibatch(X, y, Cs=(0.01, 1.0), balanced=True, device="cpu", precision="fp32")
    from_map, fit_map = fit_minibatch(mapped, y, Cs=(0.01, 1.0), balanced=True, device="cpu", precision="fp32")
    for a, b in zip(from_array, from_map):
        np.testing.assert_array_equal(a, b)
    assert fit_array.searched == fit_map.searched and set(fit_array.searched) == {0.01, 1.0}


def test_the_held_out_split_keeps_every_class_in_training():
    y = np.repeat(np.arange(5), [1, 2, 3, 10, 40])
    train, held = held_out_split(y, 0.1, np.random.default_rng(0))
    assert len(np.intersect1d(train, held)) == 0 and len(train) + len(held) == len(y)
    assert np.bincount(y[held], minlength=5).tolist() == [0, 1, 1, 1, 4]  # never a class's only code
    assert set(y[train]) == set(range(5))


def test_the_search_sample_keeps_every_class_whole_up_to_one_cap():
    y = np.repeat(np.arange(4), [3, 10, 50, 200])
    rows = np.arange(len(y))
    sample = capped_sample(y, rows, 60, np.random.default_rng(0))
    assert np.bincount(y[sample]).tolist() == [3, 10, 23, 23]  # the largest cap with 3 + 10 + 2 * cap <= 60
    assert len(np.unique(sample)) == len(sample) and np.all(np.diff(sample) > 0)
    np.testing.assert_array_equal(capped_sample(y, rows[:50], 60, np.random.default_rng(0)), rows[:50])  # few enough: all


def test_auto_takes_the_minibatch_solver_past_the_threshold(monkeypatch):
    (X, y), _ = overlapping([30, 30, 30])
    assert fit_linear_head(X, y)[1].solver == "sklearn"
    monkeypatch.setattr(linear, "MINIBATCH_FROM", len(y) * 3)
    assert fit_linear_head(X, y, Cs=(0.1,), device="cpu")[1].solver == "minibatch"
    assert fit_linear_head(X, y, kind="svm")[1].solver == "sklearn"  # the SVM has no mini-batch solver


def test_the_svm_cannot_be_forced_onto_the_minibatch_solver():
    (X, y), _ = overlapping([10, 10])
    with pytest.raises(HeadstartError, match="solver='sklearn' \\(--solver sklearn\\) for the SVM"):
        fit_linear_head(X, y, kind="svm", solver="minibatch")
    with pytest.raises(HeadstartError, match="solver"):
        fit_linear_head(X, y, solver="sgd")
