import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from headstart.errors import HeadstartError
from headstart.strategies import LinearHead, fit_linear_head


def blobs(counts, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2.0, (len(counts), dim))
    X = np.vstack([rng.normal(centres[k], 1.0, (n, dim)) for k, n in enumerate(counts)])
    y = np.concatenate([[k] * n for k, n in enumerate(counts)])
    return X, y


@pytest.mark.parametrize("kind", ["logistic", "svm"])
def test_separable_classes_are_learned(kind):
    X, y = blobs([20, 20, 20])
    head, report = fit_linear_head(X, y, kind=kind)
    assert (head.decision_function(X).argmax(1) == y).mean() == 1.0
    assert report.cv_folds == 5 and report.cv_score > 0.9
    assert np.allclose(head.predict_proba(X).sum(1), 1.0)


def test_binary_head_reproduces_scikit_learn_probabilities():
    X, y = blobs([15, 25])
    head, report = fit_linear_head(X, y, Cs=(0.5,), class_weight=None)
    reference = LogisticRegression(C=0.5, max_iter=300, random_state=0).fit(StandardScaler().fit_transform(X), y)
    np.testing.assert_allclose(head.predict_proba(X), reference.predict_proba(StandardScaler().fit(X).transform(X)), atol=1e-6)
    assert head.coef.shape == (2, 8)


def test_imbalance_switches_on_balanced_weights():
    _, balanced = fit_linear_head(*blobs([20, 20]))
    _, skewed = fit_linear_head(*blobs([40, 10]))
    assert balanced.class_weight is None and balanced.scoring == "accuracy"
    assert skewed.class_weight == "balanced" and skewed.scoring == "balanced_accuracy"
    assert skewed.imbalance_ratio == 4.0
    _, forced_off = fit_linear_head(*blobs([40, 10]), class_weight=None)
    assert forced_off.class_weight is None


def test_cv_picks_the_strength_from_the_grid():
    X, y = blobs([12, 12], dim=50, seed=3)
    _, report = fit_linear_head(X, y, Cs=(1e-4, 1.0))
    assert report.C in (1e-4, 1.0)


def test_many_classes_of_few_images_fit_without_sklearns_regression_warning():
    import warnings

    rng = np.random.default_rng(0)
    y = np.r_[np.repeat(np.arange(50), 2), np.arange(50, 70)]  # more classes than half the images: sklearn suspects a regression target
    codes = rng.normal(size=(120, 16)) + 4 * rng.normal(size=(70, 16))[y]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        head, _ = fit_linear_head(codes, y)
    assert (head.decision_function(codes).argmax(1) == y).mean() > 0.9


def test_single_image_classes_skip_cross_validation():
    X, y = blobs([1, 1, 5])
    head, report = fit_linear_head(X, y)
    assert report.cv_score is None and report.C == 1.0
    assert head.coef.shape[0] == 3


def test_round_trip_through_tensors():
    head, _ = fit_linear_head(*blobs([10, 10, 10]))
    again = LinearHead.from_tensors(head.kind, head.to_tensors())
    X, _ = blobs([3, 3, 3], seed=9)
    np.testing.assert_array_equal(again.predict_proba(X), head.predict_proba(X))


@pytest.mark.parametrize("kwargs, message", [({"kind": "forest"}, "unknown classifier"), ({"class_weight": "heavy"}, "unknown class_weight .heavy.")])
def test_bad_options(kwargs, message):
    with pytest.raises(HeadstartError, match=message):
        fit_linear_head(*blobs([5, 5]), **kwargs)


def test_fitting_in_the_row_space_equals_fitting_in_full():
    # 30 images of 200-wide codes: the head is fitted in 30 coordinates and must be the same model.
    X, y = blobs([10, 10, 10], dim=200, seed=4)
    X_test, _ = blobs([5, 5, 5], dim=200, seed=5)
    head, _ = fit_linear_head(X, y, Cs=(0.05,), class_weight=None)
    scaler = StandardScaler().fit(X)
    reference = LogisticRegression(C=0.05, max_iter=5000, tol=1e-10).fit(scaler.transform(X), y)
    np.testing.assert_allclose(head.predict_proba(X_test), reference.predict_proba(scaler.transform(X_test)), atol=2e-3)
    assert head.coef.shape == (3, 200)
