"""Initialisation schemes: observed range and spread against each formula, on layers of several shapes."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from headstart.errors import HeadstartError
from headstart.weight_init import SCHEMES, expected, fans, initialize

LAYERS = {
    "linear 512->256": lambda: nn.Linear(512, 256),
    "conv 64->128 3x3": lambda: nn.Conv2d(64, 128, 3),
    "conv 3->32 5x5 (first layer)": lambda: nn.Conv2d(3, 32, 5),
    "depthwise conv 96 3x3": lambda: nn.Conv2d(96, 96, 3, groups=96),
    "pointwise conv 320->1280": lambda: nn.Conv2d(320, 1280, 1),
}


def test_fans_follow_the_definitions():
    assert fans(nn.Linear(512, 256).weight) == (512, 256)
    assert fans(nn.Conv2d(64, 128, 3).weight) == (64 * 9, 128 * 9)
    assert fans(nn.Conv2d(96, 96, 3, groups=96).weight) == (9, 96 * 9)  # in_channels / groups


@pytest.mark.parametrize("scheme", [s for s in SCHEMES if s != "pretrained"])
@pytest.mark.parametrize("layer", list(LAYERS))
def test_observed_range_and_std_match_the_formula(scheme, layer):
    module = LAYERS[layer]()
    initialize(module, scheme, seed=1)
    weight = module.weight.detach().numpy().ravel()
    theory = expected(scheme, tuple(module.weight.shape))
    n = weight.size
    # the sample std of n draws is within a few standard errors of the true std (relative error ~ 1/sqrt(2n))
    tolerance = 6 / math.sqrt(2 * n) + (0.02 if scheme == "orthogonal" else 0.0)
    assert weight.std() == pytest.approx(theory["std"], rel=tolerance)
    if theory["bound"] is not None:
        assert np.abs(weight).max() <= theory["bound"] + 1e-7
        if scheme != "orthogonal":  # uniform: the extremes come close to the bound
            assert np.abs(weight).max() > theory["bound"] * (1 - 20 / n)
    assert module.bias is None or not module.bias.detach().any()


@pytest.mark.parametrize("layer", list(LAYERS))
def test_orthogonal_rows_or_columns_are_orthonormal(layer):
    module = initialize(LAYERS[layer](), "orthogonal")
    flat = module.weight.detach().reshape(module.weight.shape[0], -1)
    gram = flat @ flat.T if flat.shape[0] <= flat.shape[1] else flat.T @ flat
    torch.testing.assert_close(gram, torch.eye(len(gram)), atol=1e-4, rtol=0)


def test_whole_models_every_layer_and_batchnorm_reset():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 30 * 30, 4))
    model[1].running_mean.fill_(3.0)
    model[1].weight.data.fill_(7.0)
    initialize(model, "he_normal", seed=0)
    assert model[1].running_mean.abs().max() == 0 and (model[1].weight == 1).all()
    assert model[4].weight.std().item() == pytest.approx(math.sqrt(2 / (8 * 30 * 30)), rel=0.05)
    again = initialize(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 30 * 30, 4)), "he_normal", seed=0)
    torch.testing.assert_close(again[0].weight, model[0].weight)  # seeded: reproducible


def test_pretrained_keeps_the_weights_and_unknown_schemes_fail():
    layer = nn.Linear(4, 2)
    before = layer.weight.detach().clone()
    initialize(layer, "pretrained")
    torch.testing.assert_close(layer.weight.detach(), before)
    with pytest.raises(HeadstartError, match="Did you mean 'he_normal'"):
        initialize(layer, "he_norm")


def test_a_backbone_re_initialised_by_name_gives_random_features_cached_apart():
    from headstart import TransferClassifier, get_backbone
    from tests.test_estimator import colour_data

    random = get_backbone("mobilenet_v2@he_uniform")
    assert random.name == "mobilenet_v2@he_uniform" and random.categories is None
    assert random.weights_id != get_backbone("mobilenet_v2").weights_id  # its codes never mix with the pretrained ones
    X, y = colour_data()
    pretrained = TransferClassifier("tiny", strategy="linear", engine="torch").fit(X, y)
    rerolled = TransferClassifier("tiny@orthogonal", strategy="linear", engine="torch").fit(X, y)
    assert not np.allclose(pretrained.transform(X), rerolled.transform(X))


def test_scratch_strategy_trains_the_small_cnn_from_its_init_and_reloads(tmp_path):
    from headstart import TransferClassifier
    from tests.test_estimator import colour_data

    X, y = colour_data(per_class=8)
    model = TransferClassifier(strategy="scratch", engine="torch", finetune={"epochs": 3, "batch_size": 8, "precision": "fp32", "init": "glorot_uniform"})
    model.fit(X, y)
    assert model.strategy_ == "scratch" and model.backbone_ == "scratch_cnn@glorot_uniform"
    assert model.preprocessing_.crop == 64 and len(model.history_.records) == 3
    assert model.finetune_settings_["lr_mult"] == 1.0 and model.finetune_settings_["batchnorm"] == "batch"
    model.save(tmp_path / "run")
    np.testing.assert_allclose(TransferClassifier.load(tmp_path / "run").predict_proba(X), model.predict_proba(X), atol=1e-6)


def test_inspect_init_prints_bounds_against_observations_and_draws_filters(tmp_path, capsys):
    from headstart.cli import main

    assert main(["inspect", "init", "--backbone", "tiny", "--schemes", "uniform_fan_in", "he_normal", "--layers", "0", "-o", str(tmp_path / "f.png")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("uniform_fan_in") and "he_normal" in out
    first = next(line for line in out.splitlines() if line.strip().startswith("features.0.0"))
    assert first.split()[2:4] == ["27", f"{1 / 27:.4f}"]  # fan_in 3x3x3, bound 1/fan_in
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["inspect", "init", "--schemes", "he_norm"]) == 2
