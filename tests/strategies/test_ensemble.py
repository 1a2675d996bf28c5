"""A fine-tuned network predicts with the mean of its probabilities and its linear head's."""

import numpy as np
import pytest
import torch

from headstart import TransferClassifier
from headstart.strategies.ensemble import ProbabilityAverage
from headstart.strategies.finetune import network_scores
from headstart.strategies.linear import softmax
from tests.test_estimator import FAST_FINETUNE, colour_data, tiny


def network_probabilities(model, X):
    return softmax(network_scores(model.fitted_.network, X, model.preprocessing_)[0])


@pytest.fixture(scope="module")
def fitted():
    X, y = colour_data(per_class=8)
    return tiny(strategy="finetune_top", finetune=FAST_FINETUNE).fit(X, y)


def test_predictions_are_the_mean_of_the_network_and_the_linear_head(fitted):
    X_test, _ = colour_data(per_class=3, seed=7)
    head = fitted.fitted_.head.predict_proba(fitted.transform(X_test))
    network = network_probabilities(fitted, X_test)
    assert fitted.fitted_.ensembled and fitted.finetune_settings_["ensemble"] is True
    np.testing.assert_allclose(fitted.predict_proba(X_test), (network + head) / 2, atol=1e-5)
    assert not np.allclose(network, head, atol=1e-3)  # two members that differ, or the test proves nothing


def test_ensemble_off_predicts_with_the_network_alone():
    X, y = colour_data(per_class=8)
    model = tiny(strategy="finetune_top", finetune={**FAST_FINETUNE, "ensemble": False}).fit(X, y)
    X_test, _ = colour_data(per_class=3, seed=7)
    assert not model.fitted_.ensembled
    np.testing.assert_allclose(model.predict_proba(X_test), network_probabilities(model, X_test), atol=1e-6)


def test_saved_ensemble_predicts_the_same_and_older_files_predict_as_before(fitted, tmp_path):
    X_test, _ = colour_data(per_class=3, seed=7)
    loaded = TransferClassifier.load(fitted.save(tmp_path / "run"))
    assert loaded.fitted_.ensembled
    np.testing.assert_allclose(loaded.predict_proba(X_test), fitted.predict_proba(X_test), atol=1e-6)
    del loaded.fitted_.finetune["ensemble"]  # as a file written before the ensemble existed reads
    np.testing.assert_allclose(loaded.predict_proba(X_test), network_probabilities(loaded, X_test), atol=1e-6)


def test_probability_average_gives_log_probabilities():
    members = [torch.nn.Linear(4, 3) for _ in range(2)]
    for member in members:
        member.out_features = 3
    x = torch.randn(5, 4)
    averaged = ProbabilityAverage(*members)(x)
    expected = (members[0](x).softmax(1) + members[1](x).softmax(1)) / 2
    torch.testing.assert_close(averaged.softmax(1), expected)
    torch.testing.assert_close(averaged.exp().sum(1), torch.ones(5))


def test_a_network_is_averaged_with_the_head_on_the_tap_asked_and_warm_started_from_the_top_one(monkeypatch, tmp_path):
    """tap= names the linear head the network predicts with (the advisor passes the tap its trial
    scored); the network's own head still starts from a head on the top codes, which it reads."""
    from headstart import pipeline

    warm_starts = []
    real = pipeline.finetune
    monkeypatch.setattr(pipeline, "finetune", lambda *a, **k: warm_starts.append(k["head_init"]) or real(*a, **k))
    X, y = colour_data(per_class=8)
    model = tiny(strategy="finetune_top", tap="features.1", finetune=FAST_FINETUNE).fit(X, y)
    top = tiny(strategy="linear").fit(X, y)
    assert model.tap_ == "features.1" and model.fitted_.ensembled
    assert warm_starts[0].coef.shape == top.fitted_.head.coef.shape != model.fitted_.head.coef.shape  # the top codes' width
    np.testing.assert_allclose(warm_starts[0].coef, top.fitted_.head.coef, atol=1e-6)  # the same head a linear fit gets
    X_test, _ = colour_data(per_class=3, seed=7)
    head = model.fitted_.head.predict_proba(model.transform(X_test))  # the head on features.1's codes
    np.testing.assert_allclose(model.predict_proba(X_test), (network_probabilities(model, X_test) + head) / 2, atol=1e-5)
    loaded = TransferClassifier.load(model.save(tmp_path / "run"))
    np.testing.assert_allclose(loaded.predict_proba(X_test), model.predict_proba(X_test), atol=1e-6)
