"""Every parameter is checked in one place, before any work; the recipe says what a fit runs."""

from dataclasses import replace

import numpy as np
import pytest
import torch

import headstart.advisor as advisor
import headstart.data.images as images_module
from headstart import DataError, TransferClassifier
from headstart.backbones import PRE_LOGITS, get_backbone, register_backbone
from headstart.data.images import as_sources
from headstart.recipe import SCRATCH_DEFAULTS, input_size, resolve
from tests.conftest import CLASS_COLOURS, colour_image
from tests.test_estimator import colour_data


def params(**changes) -> dict:
    return TransferClassifier(**{"backbone": "tiny", "engine": "torch", **changes}).get_params()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"strategy": "finetune_middle"}, "unknown strategy 'finetune_middle' (did you mean 'finetune_all'?); use one of 'auto'"),
        ({"classifier": "svn"}, "unknown classifier 'svn' (did you mean 'svm'?)"),
        ({"class_weight": "balance"}, "unknown class_weight 'balance' (did you mean 'balanced'?)"),
        ({"engine": "onnxx"}, "unknown engine 'onnxx' (did you mean 'onnx'?)"),
        ({"device": "gpu"}, "unknown device 'gpu'"),
        *([({"device": "cuda"}, "device 'cuda', but PyTorch sees no CUDA GPU here")] if not torch.cuda.is_available() else []),
        ({"batch_size": 0}, "batch_size=0 must be a whole number of at least 1"),
        ({"input_size": 22.5}, "input_size=22.5 must be a whole number"),
        ({"input_size": 8}, "input_size=8 must be a whole number of at least 16"),  # fitted at 8 px without a word
        ({"input_size": 20_000}, "input_size=20000 is past 2,048 px"),
        ({"random_state": -1}, "random_state=-1 must be a whole number of at least 0"),
        ({"time_budget": -5}, "time_budget=-5 must be a number of seconds"),
        ({"Cs": ()}, "Cs=() must be a non-empty list"),
        ({"backbone": "tinyy"}, "unknown backbone 'tinyy'. Did you mean 'tiny'?"),
        ({"tap": "features.9"}, "backbone tiny has no tap 'features.9'"),
        ({"backbone": "tiny+tiny", "tap": "features.1+pre_logits+features.1"}, "does not fit the joined backbone 'tiny+tiny'"),
        ({"backbone": "tiny+tiny", "tap": "features.1+features.9"}, "backbone tiny has no tap 'features.9'"),
        ({"backbone": "tiny+tiny", "strategy": "finetune_all"}, "trains one network, but backbone='tiny+tiny' joins several"),
        ({"finetune": {"epoch": 3}}, "unknown fine-tuning setting 'epoch'; did you mean 'epochs'?"),
        ({"finetune": {"dropout": 1.5}}, "dropout=1.5 and drop_connect=0.0 are shares"),
        ({"finetune": {"augmentation": "object"}}, "unknown augmentation policy 'object'"),
        ({"finetune": {"epochs": 0}}, "epochs must be a whole number of at least 1"),
        ({"finetune": {"dropout": "abc"}}, "fine-tuning setting dropout must be a number, got 'abc'"),  # as --set dropout=abc gives it
        ({"finetune": {"ensemble": 1}}, "fine-tuning setting ensemble must be true or false, got 1"),
        ({"finetune": {"layer_decay": "x"}}, "fine-tuning setting layer_decay must be a number or null, got 'x'"),
        ({"finetune": {"imbalance": "sampling"}}, "unknown imbalance value 'sampling' (did you mean 'sampler'?)"),
        ({"strategy": "scratch", "finetune": {"init": "he"}}, "unknown init value 'he'"),
        ({"strategy": "finetune_top", "resume": True}, "resume=True continues from checkpoint_dir"),
    ],
)
def test_every_bad_value_is_one_line_before_any_work(changes, message, monkeypatch):
    monkeypatch.setattr(advisor, "advise", lambda *a, **k: pytest.fail("the advisor ran before the parameters were checked"))
    X, y = colour_data(per_class=4)
    with pytest.raises(DataError, match=_literal(message)) as raised:
        TransferClassifier(**{"backbone": "tiny", "engine": "torch", **changes}).fit(X, y)
    assert "\n" not in str(raised.value)


def test_a_bad_engine_is_refused_even_when_every_code_is_cached():
    X, y = colour_data()
    TransferClassifier("tiny", engine="torch", strategy="linear").fit(X, y)  # fills the cache
    with pytest.raises(DataError, match="unknown engine 'onnxx'"):
        TransferClassifier("tiny", engine="onnxx", strategy="linear").fit(X, y)


def test_the_recipe_of_each_strategy():
    linear = resolve(params(strategy="linear", tap="features.1"))
    assert (linear.strategy, linear.backbone, linear.tap, linear.finetune) == ("linear", "tiny", "features.1", None)
    tuned = resolve(params(strategy="gradual", finetune={"epochs": 3}))
    assert tuned.finetune.strategy == "gradual" and tuned.finetune.epochs == 3 and tuned.check_mirroring
    scratch = resolve(params(strategy="scratch", finetune={"init": "glorot_uniform", "epochs": 2}))
    assert scratch.backbone == "scratch_cnn@glorot_uniform" and scratch.from_scratch
    assert scratch.finetune.strategy == "finetune_all" and scratch.finetune.epochs == 2
    assert scratch.finetune.batchnorm == SCRATCH_DEFAULTS["batchnorm"] and scratch.finetune.lr_mult == SCRATCH_DEFAULTS["lr_mult"]
    assert scratch.finetune.kept_epoch == "best" and resolve(params(strategy="finetune_all")).finetune.kept_epoch == "last"
    assert resolve(params(backbone="tiny+tiny")).strategy == "linear"  # auto on joined codes: nothing to choose


def test_auto_follows_the_plan_with_the_users_settings_on_top():
    X, y = colour_data()
    plan = advisor.advise(__import__("headstart").get_backbone("tiny"), X, y, time_budget=0)
    planned = replace(plan, strategy="finetune_all", tap=PRE_LOGITS, settings={"epochs": 7, "augmentation": "text_signs", "dropout": 0.2})
    recipe = resolve(params(finetune={"dropout": 0.3}), planned)
    assert (recipe.strategy, recipe.finetune.epochs, recipe.finetune.dropout) == ("finetune_all", 7, 0.3)
    assert not recipe.check_mirroring  # the advisor chose the augmentation by the mirror probe itself
    assert resolve(params(finetune={"augmentation": "objects"}), planned).check_mirroring  # the user's choice is checked
    assert resolve(params(), replace(plan, backbone="tiny+tiny@he_normal")).backbone == "tiny+tiny@he_normal"


def _literal(text: str) -> str:
    import re

    return re.escape(text)


def test_labels_stay_numpy_friendly():
    X, _ = colour_data()
    model = TransferClassifier("tiny", engine="torch", strategy="linear").fit(X, np.repeat([3, 1, 2], 6))
    assert model.classes_.tolist() == [1, 2, 3]


# ------------------------------------------------------------------ the input size
@register_backbone("tiny_fixres")
def _tiny_with_a_test_size():
    """The tiny backbone (trained at 32 px) with a larger test size, as the embedded ones have (288 for 224)."""
    return replace(get_backbone("tiny"), name="tiny_fixres", test_crop=40)


def _files(tmp_path, size: int, per_class: int = 4) -> tuple[list, np.ndarray]:
    paths, labels = [], []
    for c, (name, colour) in enumerate(CLASS_COLOURS.items()):
        for i in range(per_class):
            path = tmp_path / f"{name}{i}.png"
            colour_image(colour, seed=c * 100 + i, size=size).resize((size + 10, size)).save(path)  # shorter side: size
            paths.append(path)
            labels.append(name)
    return paths, np.array(labels)


@pytest.mark.parametrize("side, given, expected", [(40, None, 40), (24, None, 32), (40, 36, 36)])
def test_the_input_size_is_the_test_size_where_the_images_carry_it(tmp_path, side, given, expected):
    X, y = _files(tmp_path, side)
    model = TransferClassifier("tiny_fixres", engine="torch", strategy="linear", input_size=given).fit(X, y)
    assert model.fitted_.input_size == expected and model.fitted_.preprocessing.crop == expected
    assert model.get_params()["input_size"] == given  # fit chose; the parameter stays as given
    fresh = TransferClassifier("tiny_fixres", engine="torch", input_size=expected).transform(X)
    np.testing.assert_allclose(model.transform(X), fresh, atol=1e-5)  # predict reads them at the fit's size
    model.save(tmp_path / "run")
    loaded = TransferClassifier.load(tmp_path / "run")
    assert loaded.fitted_.input_size == expected and loaded.get_params()["input_size"] == given
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X), atol=1e-5)


def test_the_input_size_reads_only_image_headers(tmp_path, monkeypatch):
    X, _ = _files(tmp_path, 40)
    monkeypatch.setattr(images_module, "_read_file", lambda path: pytest.fail(f"{path} was read whole to learn its size"))
    assert input_size(params(backbone="tiny_fixres"), as_sources(X)) == 40
    assert input_size(params(backbone="tiny"), as_sources(X)) == 32  # no test size: the training crop
    assert input_size(params(backbone="tiny_fixres", strategy="scratch"), as_sources(X)) is None
    unreadable = tmp_path / "notes.png"
    unreadable.write_text("not an image")
    assert input_size(params(backbone="tiny_fixres"), as_sources([unreadable])) == 32
