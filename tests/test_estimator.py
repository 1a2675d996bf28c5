import io
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline

from headstart import DataError, TransferClassifier
from tests.conftest import CLASS_COLOURS, colour_image


def colour_data(per_class=6, seed=0, labels=None):
    images, y = [], []
    for c, (name, colour) in enumerate(CLASS_COLOURS.items()):
        for i in range(per_class):
            images.append(colour_image(colour, seed=seed * 1000 + c * 100 + i))
            y.append(labels[c] if labels else name)
    return images, np.array(y)


def tiny(**kwargs):
    """The tiny backbone; the linear strategy unless a test asks for another (auto has its own tests)."""
    return TransferClassifier("tiny", engine="torch", **{"strategy": "linear", **kwargs})


def test_fit_predict_score_on_pil_images():
    X, y = colour_data()
    model = tiny().fit(X, y)
    assert list(model.classes_) == ["blue", "green", "red"]
    X_test, y_test = colour_data(per_class=3, seed=7)
    assert model.score(X_test, y_test) == 1.0
    proba = model.predict_proba(X_test)
    assert proba.shape == (9, 3) and np.allclose(proba.sum(1), 1)


def test_integer_labels_stay_as_given():
    X, _ = colour_data()
    y = np.repeat([1, 7, 15], 6)
    model = tiny().fit(X, y)
    assert model.classes_.tolist() == [1, 7, 15]
    assert model.predict(X[:1])[0] in (1, 7, 15)
    assert model.predict_proba(X[:1]).shape == (1, 3)


def test_a_column_of_labels_is_flattened_as_scikit_learn_does():
    from sklearn.exceptions import DataConversionWarning

    X, y = colour_data()
    with pytest.warns(DataConversionWarning):
        model = tiny().fit(X, np.asarray(y)[:, None])
    assert list(model.classes_) == ["blue", "green", "red"]


def test_float_images_far_below_255_are_said_to_read_nearly_black(caplog):
    # scikit-learn's load_digits: floats 0-16, read on the 0-255 scale (MobileNetV2 at 64 px: 81% of 100 test digits against 88% as X / 16)
    X, y = colour_data()
    arrays = np.stack([np.asarray(image, dtype=np.float64) for image in X]) / 255 * 16
    tiny().fit(arrays, y)
    assert "the float images reach only 16, so they are read as 0-255 and look nearly black; if 16 is white, pass X / 16 (0-1)" in caplog.text
    caplog.clear()
    tiny().fit(arrays / 16, y)
    assert "nearly black" not in caplog.text


def test_images_normalised_already_or_all_unreadable_are_refused_in_one_line(tmp_path):
    import torch

    X, y = colour_data()
    arrays = np.stack([np.asarray(image, dtype=np.float32) for image in X]) / 255
    normalised = (arrays - 0.5) / 0.25  # as after torchvision's Normalize: each image would be skipped, then "only ." classes
    for given in (normalised, torch.from_numpy(normalised).permute(0, 3, 1, 2)):
        with pytest.raises(DataError, match=r"^18 of the 18 images have pixel values below 0 \(down to -2\), as after normalisation; pass images as 0-1 or 0-255"):
            tiny().fit(given, y)
    broken = [tmp_path / f"{i}.jpg" for i in range(len(y))]
    for path in broken:
        path.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"^none of the 18 training images can be read \(.*0.jpg.*not a recognised image format"):
        tiny().fit(broken, y)


def test_arrays_and_paths_are_accepted(tmp_path, monkeypatch):
    X, y = colour_data()
    paths = []
    for i, image in enumerate(X):
        paths.append(tmp_path / f"{i}.png")
        image.save(paths[-1])
    arrays = np.stack([np.asarray(im) for im in X])
    from_paths = tiny().fit(paths, y).predict_proba(paths)
    from_arrays = tiny().fit(arrays, y).predict_proba(arrays)
    np.testing.assert_allclose(from_paths, from_arrays, atol=1e-6)
    monkeypatch.setenv("HOME", str(tmp_path))  # '~/0.png' is the home folder's, as on a shell
    np.testing.assert_allclose(tiny().fit([f"~/{p.name}" for p in paths], y).predict_proba(["~/0.png"]), from_paths[:1], atol=1e-6)


def test_torchvision_tensors_are_accepted_and_normalised_ones_refused():
    import torch

    X, y = colour_data()
    arrays = np.stack([np.asarray(im) for im in X])
    model = tiny().fit(arrays, y)
    chw = torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 255  # as torchvision's ToTensor gives
    np.testing.assert_allclose(model.predict_proba(chw), model.predict_proba(arrays), atol=1e-6)
    normalised = (chw - 0.45) / 0.22
    with pytest.raises(DataError, match=r"cannot read 18 image\(s\) \(image #0, image #1, image #2, ... \(15 more\): .*pass images as 0-1 or 0-255"):
        model.predict(normalised)


def test_get_set_params_and_clone():
    model = tiny(classifier="svm", Cs=(0.1, 1.0))
    assert model.get_params()["classifier"] == "svm"
    copy = clone(model.set_params(tap="features.1"))
    assert copy.tap == "features.1" and copy is not model


def test_pickles_after_fit():
    X, y = colour_data()
    model = tiny().fit(X, y)
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again.predict_proba(X), model.predict_proba(X))


def test_inside_pipeline_cross_val_and_grid_search():
    X, y = colour_data()
    scores = cross_val_score(tiny(), X, y, cv=3)
    assert scores.mean() == 1.0
    pipeline = Pipeline([("clf", tiny())])
    search = GridSearchCV(pipeline, {"clf__tap": ["pre_logits", "features.1"]}, cv=2).fit(X, y)
    assert search.best_score_ == 1.0


def test_unreadable_training_images_are_skipped_or_fatal(tmp_path, caplog):
    X, y = colour_data()
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    model = tiny().fit(X + [bad], np.append(y, "red"))
    assert list(model.skipped_) == [18] and model.n_train_ == 18
    assert f"skipping 1 unreadable image(s) ({bad}: unreadable" in caplog.text  # which one, not only how many
    with pytest.raises(DataError, match="bad.png"):
        tiny(strict=True).fit(X + [bad], np.append(y, "red"))
    with pytest.raises(DataError, match="cannot read 1 image"):
        model.predict([bad])


class _Table:
    """What a pandas DataFrame is to fit: iterating it gives its column names, ``iloc`` its cells."""

    def __init__(self, columns: dict):
        self._columns = columns
        self.columns = list(columns)
        self.iloc = self

    def __iter__(self):
        return iter(self.columns)

    def __getitem__(self, index):
        return self._columns[self.columns[index[1]]]


def test_a_one_column_table_gives_its_images():
    X, y = colour_data()
    model = tiny().fit(_Table({"image": X}), y)
    assert model.n_train_ == len(X)
    np.testing.assert_array_equal(model.predict(_Table({"image": X[:3]})), model.predict(X[:3]))


def test_advise_checks_its_input_as_fit_does():
    X, y = colour_data()
    with pytest.raises(DataError, match=f"{len(X)} images but 3 labels"):
        tiny(strategy="auto").advise(X, y[:3])


@pytest.mark.parametrize(
    "X, y, message",
    [
        ([], [], "no images"),
        ([colour_image((1, 1, 1), 0)] * 2, ["a"], "2 images but 1 labels"),
        ([colour_image((1, 1, 1), i) for i in range(4)], ["a"] * 4, "at least 2 classes, but the data contain only a[.]"),
        ([colour_image((1, 1, 1), i) for i in range(4)], ["a", "a", "b", None], r"1 image\(s\) have no label \(None, NaN or blank\), the first #3"),
        # a spreadsheet's empty cell read as "": it became a class named ""
        ([colour_image((1, 1, 1), i) for i in range(5)], np.array(["a", "a", "b", "b", " "]), "no label .* the first #4"),
        ([colour_image((1, 1, 1), i) for i in range(5)], np.array([0, 0, 1, 1, np.nan], dtype=np.float32), "the first #4"),
        # a pandas column with an empty cell: NumPy alone makes its NaN the class "nan"
        ([colour_image((1, 1, 1), i) for i in range(5)], ["a", "a", "b", "b", float("nan")], "the first #4"),
        ([colour_image((1, 1, 1), i) for i in range(4)], [1, 1, "b", "b"], r"mix numbers and text \(e.g. 1 and 'b'\)"),
        ([(colour_image((1, 1, 1), i), "a") for i in range(4)], ["a"] * 4, r"\(image, label\) pairs.*X = \[image for image, _ in ds\]"),
        (_Table({"path": ["a.jpg", "b.jpg"], "label": ["a", "b"]}), ["a", "b"], r"a table of 2 columns \(path, label\); pass the column of images, e.g. df\['path'\]"),
        ("some/image.jpg", ["a"], "got the single path some/image.jpg; wrap it in a list"),
        (Path(__file__).parent, ["a"], r"got the folder .*tests; list its images .*or give a folder of class folders to fit_folder"),
        (Image.new("RGB", (40, 30)), ["a"], r"got one PIL image \(40x30 RGB\); pass \[image\]"),
        # one HxWxC image, not 375 images of 500x3 pixels
        (np.zeros((375, 500, 3), np.uint8), ["a"], r"got one 375x500x3 image \(an array of shape \(375, 500, 3\)\); pass x\[None\]"),
        ([colour_image((1, 1, 1), i) for i in range(4)], np.eye(2)[[0, 1, 0, 1]], r"one-hot \(4 rows of 2 columns\).*y.argmax\(axis=1\)"),
        ([colour_image((1, 1, 1), i) for i in range(4)], np.zeros((4, 3)), r"one label per image \(a 1-D sequence\), got shape \(4, 3\)"),
    ],
)
def test_bad_fit_input(X, y, message):
    with pytest.raises(DataError, match=message):
        tiny().fit(X, y)


def test_one_image_array_refused_by_predict():
    X, y = colour_data()
    model = tiny().fit(X, y)
    with pytest.raises(DataError, match="got one .* image .*pass x\\[None\\]"):
        model.predict(np.zeros((32, 40, 3), np.uint8))
    assert len(model.predict(np.zeros((32, 40, 3), np.uint8)[None])) == 1  # the batch of one it asks for


def test_score_refuses_labels_of_another_length_before_reading_an_image(monkeypatch):
    X, y = colour_data()
    model = tiny().fit(X, y)
    monkeypatch.setattr(TransferClassifier, "predict", lambda *a, **k: pytest.fail("the images were read first"))
    with pytest.raises(DataError, match=f"got {len(X)} images but 3 labels; give one label per image"):
        model.score(X, y[:3])


def test_predict_before_fit():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        tiny().predict([colour_image((1, 1, 1), 0)])


def test_concatenated_backbones(tmp_path):
    X, y = colour_data()
    model = TransferClassifier("tiny+tiny", engine="torch").fit(X, y)
    assert model.head_.coef.shape == (3, 64)
    assert model.transform(X[:2]).shape == (2, 64)
    model.save(tmp_path / "run")
    np.testing.assert_array_equal(TransferClassifier.load(tmp_path / "run").predict_proba(X), model.predict_proba(X))
    # one tap for both backbones, or one each
    assert TransferClassifier("tiny+tiny", tap="features.1", engine="torch").fit(X, y).transform(X[:2]).shape == (2, 32)
    assert TransferClassifier("tiny+tiny", tap="features.0+features.1", engine="torch").fit(X, y).transform(X[:2]).shape == (2, 24)
    with pytest.raises(DataError, match="does not fit the joined backbone"):
        TransferClassifier("tiny+tiny", tap="features.0+features.1+features.2", engine="torch").fit(X, y)


FAST_FINETUNE = {"epochs": 2, "batch_size": 8, "precision": "fp32", "augmentation": "none", "head_lr": 1e-3}


@pytest.mark.parametrize("pooling", ["avg", "stochastic"])
def test_fine_tuning_strategy_fits_predicts_and_saves(pooling, tmp_path):
    X, y = colour_data(per_class=8)
    model = tiny(strategy="finetune_top", finetune={**FAST_FINETUNE, "pooling": pooling}).fit(X, y)
    assert model.net_ is not None and len(model.history_.records) <= 2
    # briefly in a notebook cell; print() gives an epoch's line as training printed it
    history = model.history_
    assert repr(history).startswith(f"History({len(history.records)} epochs, kept epoch {history.kept().epoch}") and len(repr(history)) < 150
    assert str(history).splitlines()[0].startswith(f"epoch 1: train loss {history.records[0].train_loss:.3f} acc")
    X_test, y_test = colour_data(per_class=3, seed=7)
    assert model.score(X_test, y_test) == 1.0
    model.save(tmp_path / "run")
    assert (tmp_path / "run" / "history.json").exists()
    loaded = TransferClassifier.load(tmp_path / "run")
    np.testing.assert_allclose(loaded.predict_proba(X_test), model.predict_proba(X_test), atol=1e-6)
    assert loaded.finetune_settings_["strategy"] == "finetune_top" and loaded.finetune_settings_["pooling"] == pooling


def test_fine_tuning_needs_two_images_per_class():
    X, y = colour_data(per_class=2)
    X, y = X[:5], y[:5]  # the last class keeps one image
    with pytest.raises(DataError, match="at least 2 training images per class"):
        tiny(strategy="finetune_all", finetune=FAST_FINETUNE).fit(X, y)


def test_fine_tuned_prediction_skips_nothing_silently(tmp_path):
    X, y = colour_data(per_class=8)
    model = tiny(strategy="gradual", finetune=FAST_FINETUNE | {"freeze_epochs": 1}).fit(X, y)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n")
    scores, failures = model.scores_and_failures([X[0], bad])
    assert list(failures) == [1] and np.isnan(scores[1]).all() and np.isfinite(scores[0]).all()
    with pytest.raises(DataError, match="cannot read 1 image"):
        model.predict([bad])


@pytest.mark.parametrize(
    "params, message",
    [
        ({"strategy": "finetune_middle"}, "unknown strategy 'finetune_middle'"),
        ({"strategy": "finetune_all", "finetune": {"epoch": 3}}, "did you mean 'epochs'"),
    ],
)
def test_bad_fine_tuning_settings_fail_before_any_work(params, message):
    X, y = colour_data(per_class=4)
    with pytest.raises(DataError, match=message):
        tiny(**params).fit(X, y)


def test_fine_tuning_on_arrays_leaves_the_callers_rng_alone():
    X, y = colour_data(per_class=8)
    arrays = np.stack([np.asarray(image) for image in X])
    torch = pytest.importorskip("torch")
    torch.manual_seed(5)
    expected = torch.rand(1)
    torch.manual_seed(5)
    model = tiny(strategy="finetune_all", finetune=FAST_FINETUNE).fit(arrays, y)
    assert torch.rand(1) == expected
    assert model.score(arrays, y) == 1.0


def test_mirroring_augmentation_on_chiral_images_is_flagged():
    from tests.data.test_augment import gradient

    X = [gradient(i) for i in range(24)]
    y = np.repeat(["a", "b"], 12)
    settings = FAST_FINETUNE | {"augmentation": "objects"}
    flagged = tiny(strategy="finetune_top", finetune=settings).fit(X, y)
    assert "consider augmentation 'text_signs'" in flagged.finetune_settings_["mirror_warning"]
    unflagged = tiny(strategy="finetune_top", finetune=settings | {"augmentation": "text_signs"}).fit(X, y)
    assert unflagged.finetune_settings_["mirror_warning"] is None


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_shows_where_a_person_watches_by_default(monkeypatch):
    from headstart.progress import wanted

    X, y = colour_data()
    for watched in (_Terminal(), io.StringIO()):  # a terminal, then a log file
        monkeypatch.setattr(sys, "stderr", watched)
        tiny(strategy="auto").fit(X, y)  # progress="auto": as Keras' verbose="auto", not silence in a notebook
        assert ("measuring 18 training images" in watched.getvalue()) == watched.isatty()
    monkeypatch.setattr(sys, "stderr", _Terminal())
    tiny(strategy="auto", cache=False).advise(X, y)
    assert "measuring 18 training images" in sys.stderr.getvalue()
    monkeypatch.setitem(sys.modules, "ipykernel", sys)  # a Jupyter kernel: its stderr is no terminal, a person watches it
    assert wanted("auto") and not wanted(False) and wanted(True)
    with pytest.raises(DataError, match=r"progress='yes' must be True, False or 'auto'"):
        tiny(progress="yes").fit(X, y)
