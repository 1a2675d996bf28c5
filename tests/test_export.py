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


@pytest.mark.parametrize("strategy, pooling", [("linear", None), ("finetune_top", "avg"), ("finetune_top", "stochastic")])
def test_exported_graph_predicts_like_the_model(strategy, pooling, tmp_path):
    X, y = colour_data(per_class=8)
    model = tiny(strategy=strategy, finetune={**FAST_FINETUNE, "pooling": pooling} if strategy != "linear" else None).fit(X, y)
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


def test_concatenated_backbones_cannot_be_one_graph(tmp_path):
    X, y = colour_data()
    model = TransferClassifier("tiny+tiny", engine="torch").fit(X, y)
    with pytest.raises(HeadstartError, match="cannot export 'tiny\\+tiny'"):
        export_onnx(model, tmp_path / "model.onnx")
