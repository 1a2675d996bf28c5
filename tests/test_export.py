import json

import numpy as np
import pytest
import torch

from headstart import TransferClassifier
from headstart.cli import main
from headstart.errors import HeadstartError
from headstart.export import export_onnx
from tests.test_estimator import FAST_FINETUNE, colour_data, tiny

onnxruntime = pytest.importorskip("onnxruntime")


def onnx_probabilities(path, images, preprocessing):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = torch.stack([preprocessing.transform()(image) for image in images]).numpy()
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


@pytest.mark.parametrize(
    "strategy, pooling, tap",
    [("linear", None, None), ("finetune_top", "avg", None), ("finetune_top", "stochastic", None), ("finetune_top", "avg", "features.1")],
)
def test_exported_graph_predicts_like_the_model(strategy, pooling, tap, tmp_path):
    X, y = colour_data(per_class=8)
    model = tiny(strategy=strategy, tap=tap, finetune={**FAST_FINETUNE, "pooling": pooling} if strategy != "linear" else None).fit(X, y)
    path = export_onnx(model, tmp_path / "model.onnx")
    X_test, _ = colour_data(per_class=3, seed=9)
    np.testing.assert_allclose(onnx_probabilities(path, X_test, model.preprocessing_), model.predict_proba(X_test), atol=1e-4)
    description = json.loads((tmp_path / "model.onnx.json").read_text())
    assert description["labels"] == ["blue", "green", "red"] and description["input"]["shape"][2:] == [32, 32]


def test_cli_exports_a_saved_run(colour_splits, tmp_path, capsys):
    assert main(["-q", "fit", str(colour_splits), "-o", str(tmp_path / "run"), "--backbone", "tiny", "--engine", "torch"]) == 0
    assert main(["-q", "export", str(tmp_path / "run")]) == 0
    assert "checked against PyTorch" in capsys.readouterr().out
    assert (tmp_path / "run" / "model.onnx").exists() and (tmp_path / "run" / "model.onnx.json").exists()


def tiny_prepared(name: str, **changes):
    """A backbone registered as ``name``: tiny's network, its input prepared otherwise."""
    from dataclasses import replace

    from headstart.backbones import get_backbone

    spec = get_backbone("tiny")
    return lambda: replace(spec, name=name, preprocessing=replace(spec.preprocessing, **changes), weights_id=f"{spec.weights_id}-{name}")


def test_joined_backbones_export_as_one_graph_that_predicts_like_the_model(tmp_path, monkeypatch):
    from headstart.backbones import registry

    # Another mean and std: the graph takes the first backbone's input and re-normalises it for the second.
    monkeypatch.setitem(registry._REGISTRY, "tiny_other_norm", tiny_prepared("tiny_other_norm", mean=(0.2, 0.4, 0.6), std=(0.3, 0.2, 0.1)))
    X, y = colour_data(per_class=8)
    model = TransferClassifier("tiny+tiny_other_norm", tap="features.1+pre_logits", engine="torch").fit(X, y)
    path = export_onnx(model, tmp_path / "model.onnx")
    X_test, _ = colour_data(per_class=3, seed=9)
    np.testing.assert_allclose(onnx_probabilities(path, X_test, model.preprocessing_), model.predict_proba(X_test), atol=1e-4)


def test_joined_backbones_that_crop_differently_cannot_be_one_graph(tmp_path, monkeypatch):
    from headstart.backbones import registry

    monkeypatch.setitem(registry._REGISTRY, "tiny_other_crop", tiny_prepared("tiny_other_crop", resize=40))
    X, y = colour_data()
    model = TransferClassifier("tiny+tiny_other_crop", engine="torch").fit(X, y)
    with pytest.raises(HeadstartError, match="resize, crop or scale their inputs differently"):
        export_onnx(model, tmp_path / "model.onnx")


def follow_the_recipe(path, description) -> np.ndarray:
    """What an outside program does with model.onnx.json: Pillow and numpy, no headstart, no torch."""
    from PIL import Image, ImageOps

    p = description["preprocessing"]
    image = Image.open(path)
    image.seek(0)
    if image.format == "JPEG":
        image.draft("RGB", (p["resize"], p["resize"]))
    image = ImageOps.exif_transpose(image).convert("RGB")
    width, height = image.size
    if width <= height:
        size = (p["resize"], int(p["resize"] * height / width))
    else:
        size = (int(p["resize"] * width / height), p["resize"])
    image = image.resize(size, getattr(Image.Resampling, p["interpolation"].upper()))
    left, top = int(round((size[0] - p["crop"]) / 2)), int(round((size[1] - p["crop"]) / 2))
    image = image.crop((left, top, left + p["crop"], top + p["crop"]))
    pixels = np.asarray(image, dtype=np.float32) / 255.0 * p["value_scale"]
    pixels = (pixels - np.array(p["mean"], dtype=np.float32)) / np.array(p["std"], dtype=np.float32)
    return pixels.transpose(2, 0, 1)


def test_an_outside_program_following_the_json_gets_predicts_probabilities(tmp_path):
    # Real images (scikit-learn's handwritten digits), enlarged and saved as JPEGs big enough that
    # decoding takes the reduced-size path, at odd sizes so that resizing and cropping round.
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    X, y = colour_data(per_class=8)
    model = tiny().fit(X, y)
    path = export_onnx(model, tmp_path / "model.onnx")
    description = json.loads((tmp_path / "model.onnx.json").read_text())
    assert any("draft" in step for step in description["preprocessing"]["steps"])
    files = []
    for i, digit in enumerate(digits.images[:40]):
        grey = (digit / 16 * 255).astype(np.uint8)
        size = (173 + 7 * (i % 5), 131 + 5 * (i % 7))
        image = Image.fromarray(np.stack([grey, grey[::-1], grey.T], axis=-1)).resize(size, Image.Resampling.BICUBIC)
        files.append(tmp_path / f"digit-{i:02d}.jpg")
        image.save(files[-1], quality=85)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = np.stack([follow_the_recipe(f, description) for f in files])
    outside = session.run(None, {"x": batch})[0]
    np.testing.assert_allclose(outside, model.predict_proba(files), atol=1e-4)
