"""'None of these' in the model: scoring, the calibrated threshold, predict's marker, saving, the
ONNX graph's second output and the CLI."""

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.exceptions import NotFittedError

from headstart import TransferClassifier
from headstart.cli import main
from headstart.errors import DataError
from headstart.export import export_onnx
from headstart.strategies.novelty import EXAMPLE_PARTS, NoveltyDetector, NoveltyModule, calibrate, fit_calibrated
from headstart.workflow import evaluate_folder
from tests.test_estimator import FAST_FINETUNE, colour_data, tiny


def noise_images(n: int, seed: int = 0) -> list[Image.Image]:
    """Images of no class: coloured noise, unlike the flat colours every class is."""
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def fitted():
    X, y = colour_data(per_class=10)
    return tiny().fit(X, y)


def test_the_threshold_keeps_most_images_like_the_training_ones_and_flags_unlike_ones(fitted):
    X_known, y_known = colour_data(per_class=10, seed=5)
    known, novel = fitted.novelty_score(X_known), fitted.novelty_score(noise_images(6))
    assert np.isfinite(fitted.novelty_threshold_)
    assert (known > fitted.novelty_threshold_).mean() <= 0.2  # calibrated to keep 95% of the training images' out-of-fold scores
    assert novel.min() > known.max()  # every noise image is less like the training images than any known one
    predicted = fitted.predict(noise_images(6))
    assert predicted.tolist() == ["unknown"] * 6
    assert set(fitted.predict(noise_images(6), reject=None)) <= set(fitted.classes_)  # rejection off: always a class
    assert fitted.score(X_known, y_known) == 1.0  # score() compares the classes alone, as model selection needs


def test_the_marker_is_never_a_real_class():
    X, y = colour_data(per_class=8, labels=[0, 1, 2])
    model = tiny().fit(X, y)
    predicted = model.predict(noise_images(3))
    assert predicted.dtype.kind == "i" and predicted.tolist() == [-1, -1, -1]  # not class 0
    assert model.predict(noise_images(1), unknown=99).tolist() == [99]
    with pytest.raises(DataError, match="the unknown marker 1 is one of the model's classes"):
        model.predict(noise_images(1), unknown=1)
    strict = model.predict(X[:3], reject=-1.0)  # a threshold of one's own: below every score, so all are flagged
    assert strict.tolist() == [-1, -1, -1]
    with pytest.raises(DataError, match="reject must be 'auto'"):
        model.predict(X[:1], reject="yes")


def test_the_detector_is_saved_as_data_and_scores_the_same_after_loading(fitted, tmp_path):
    fitted.save(tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["novelty"]["method"] == "knn+msp" and meta["novelty"]["threshold"] == fitted.novelty_threshold_
    loaded = TransferClassifier.load(tmp_path / "run")
    images = colour_data(per_class=2, seed=3)[0] + noise_images(2)
    np.testing.assert_allclose(loaded.novelty_score(images), fitted.novelty_score(images))
    assert loaded.novelty_threshold_ == fitted.novelty_threshold_


@pytest.fixture(scope="module")
def fine_tuned():
    X, y = colour_data(per_class=24)  # 72 images: 11 held out for early stopping calibrate the detector
    return tiny(strategy="finetune_top", finetune=FAST_FINETUNE).fit(X, y)


def test_a_fine_tuned_network_flags_unlike_images_from_its_own_codes(fine_tuned, tmp_path):
    detector = fine_tuned.fitted_.novelty
    assert detector is not None and np.isfinite(fine_tuned.novelty_threshold_)
    width = fine_tuned.fitted_.network.head.in_features
    assert detector.state["bank"].shape == (72, width)  # the network's penultimate codes of every training image
    X_known, _ = colour_data(per_class=6, seed=5)
    known, novel = fine_tuned.novelty_score(X_known), fine_tuned.novelty_score(noise_images(6))
    assert novel.min() > known.max()
    assert (known > fine_tuned.novelty_threshold_).mean() <= 0.2
    assert set(fine_tuned.predict(noise_images(6))) == {"unknown"}
    fine_tuned.save(tmp_path / "run")
    loaded = TransferClassifier.load(tmp_path / "run")
    np.testing.assert_allclose(loaded.novelty_score(X_known[:3] + noise_images(2)), fine_tuned.novelty_score(X_known[:3] + noise_images(2)), rtol=1e-5)


def test_a_fine_tuned_networks_score_learns_from_examples_of_none_of_these():
    X, y = colour_data(per_class=24)
    model = tiny(strategy="finetune_top", finetune=FAST_FINETUNE).fit(X, y, none_of_these=noise_images(6, seed=4))
    detector = model.fitted_.novelty
    assert detector.examples == 6 and detector.learned == list(EXAMPLE_PARTS)
    X_known, _ = colour_data(per_class=6, seed=5)
    known, novel = model.novelty_score(X_known), model.novelty_score(noise_images(6, seed=9))
    assert novel.min() > known.max() and (known > model.novelty_threshold_).mean() <= 0.2


def test_labelled_images_given_as_none_of_these_are_refused():
    # a class folder passed as --none-of-these would teach the score that the class is unknown
    X, y = colour_data(per_class=6)
    with pytest.raises(DataError, match="6 of the images of none of these are labelled images too"):
        tiny(strategy="linear").fit(X, y, none_of_these=X[:6])


def test_too_few_held_out_images_leave_a_fine_tuned_model_without_a_detector_and_it_says_so(tmp_path, caplog):
    X, y = colour_data(per_class=8)  # 24 images: 4 held out cannot place a 95% threshold
    model = tiny(strategy="finetune_top", finetune=FAST_FINETUNE).fit(X, y, none_of_these=noise_images(5))
    assert model.novelty_threshold_ is None
    assert "the 5 images of none of these were not used" in caplog.text
    assert "early stopping held out 4 images, too few to set its threshold (10 or more" in caplog.text  # a warning, not silence
    assert all(r.levelname == "WARNING" for r in caplog.records if "too few to set its threshold" in r.message)
    assert set(model.predict(noise_images(2))) <= set(model.classes_)
    with pytest.raises(NotFittedError, match="no novelty detector"):
        model.novelty_score(X[:1])
    with pytest.raises(DataError, match="no novelty detector to measure"):  # before any image is read
        evaluate_folder(model, tmp_path / "not read", none_of_these=noise_images(1))


def test_the_threshold_keeps_95_percent_of_new_known_images_with_90_percent_confidence():
    # Scores uniform on (0, 1): a threshold t keeps the share t of new images like the calibrating ones.
    rng = np.random.default_rng(0)
    kept = np.array([calibrate(NoveltyDetector("msp"), rng.random(200)).threshold for _ in range(2000)])
    assert 0.88 <= (kept >= 0.95).mean() <= 0.95  # the split-conformal quantile (the 191st of 200): about 0.5
    assert kept.mean() < 0.985  # and no more cautious than it needs to be
    detector = calibrate(NoveltyDetector("msp"), np.arange(1.0, 201.0))
    assert detector.threshold == 195.0 and detector.confidence >= 0.9
    few = calibrate(NoveltyDetector("msp"), np.arange(1.0, 21.0))  # too few for 90%: the largest, and says so
    assert few.threshold == 20.0 and abs(few.confidence - (1 - 0.95**20)) < 1e-9


def test_past_the_bank_limit_every_class_keeps_its_share_and_a_class_of_one_stays(monkeypatch):
    from headstart.strategies import novelty

    monkeypatch.setattr(novelty, "BANK_LIMIT", 30)
    rng = np.random.default_rng(0)
    labels = np.r_[np.repeat([0, 1, 2], 13), 3]  # a class of one image: no stratified sample of 30 of 40 exists for sklearn
    codes = rng.normal(size=(40, 8)) + 3 * np.eye(8)[labels]
    detector = fit_calibrated(codes, labels, rng.normal(size=(40, 4)))
    bank = detector.state["bank"]
    assert len(bank) == 31  # 10 of each 13 (a quarter held back, rounded) and the one
    assert np.isclose(bank, novelty._unit(codes[labels == 3])).all(axis=1).any()  # the lone image is in it


def test_the_module_gives_the_detectors_scores():
    rng = np.random.default_rng(0)
    codes, labels = rng.normal(size=(40, 8)), np.repeat(np.arange(4), 10)
    codes[labels == 1] += 3
    logits = rng.normal(size=(40, 4))
    detector = fit_calibrated(codes, labels, logits)
    probe_codes, probe_logits = rng.normal(size=(12, 8)) * 2, rng.normal(size=(12, 4))
    module = NoveltyModule(detector)
    got = module(torch.as_tensor(probe_codes, dtype=torch.float32), torch.as_tensor(probe_logits, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(got, detector.score(probe_codes, probe_logits), atol=1e-5)
    oof_kept = (detector.score(codes, logits) <= detector.threshold).mean()
    assert oof_kept >= 0.9  # in-sample scores are at most the out-of-fold ones the threshold keeps 95% of
    # Traced for the ONNX graph without a TracerWarning (the export hid it, unless decoding threads restored the filters meanwhile)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace's own deprecation
        warnings.simplefilter("error", torch.jit.TracerWarning)
        traced = torch.jit.trace(module, (torch.as_tensor(probe_codes, dtype=torch.float32), torch.as_tensor(probe_logits, dtype=torch.float32)))
    np.testing.assert_allclose(traced(torch.as_tensor(probe_codes, dtype=torch.float32), torch.as_tensor(probe_logits, dtype=torch.float32)).numpy(), got, atol=1e-6)


def energy_only_images(rng, n: int, offset: float):
    """Codes of three classes and logits whose winner is as sure at any ``offset``: only the energy
    (the logits' level) tells images at another offset apart; kNN and MSP cannot."""
    labels = rng.integers(0, 3, n)
    codes = np.eye(12)[labels] * 4 + rng.normal(size=(n, 12)) * 0.7
    return codes, np.eye(3)[labels] * 4 + rng.normal(size=(n, 3)) * 0.3 + offset, labels


def test_examples_of_none_of_these_teach_the_score_what_they_look_like():
    rng = np.random.default_rng(0)
    codes, logits, labels = energy_only_images(rng, 90, 10.0)
    shown_codes, shown_logits, _ = energy_only_images(rng, 30, 0.0)
    untaught = fit_calibrated(codes, labels, logits)
    taught = fit_calibrated(codes, labels, logits, examples=(shown_codes, shown_logits))
    assert taught.learned == list(EXAMPLE_PARTS) and taught.examples == 30 and untaught.examples == 0
    known_codes, known_logits, _ = energy_only_images(rng, 60, 10.0)
    new_codes, new_logits, _ = energy_only_images(rng, 100, 0.0)  # fresh images of the examples' kind
    caught = lambda detector: (detector.score(new_codes, new_logits) > detector.threshold).mean()  # noqa: E731
    assert caught(untaught) < 0.2 and caught(taught) >= 0.9
    assert (taught.score(known_codes, known_logits) > taught.threshold).mean() <= 0.1
    # The same numbers from the module the ONNX graph is made of, and after saving as data
    module = NoveltyModule(taught)
    got = module(torch.as_tensor(new_codes, dtype=torch.float32), torch.as_tensor(new_logits, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(got, taught.score(new_codes, new_logits), atol=1e-4)
    loaded = NoveltyDetector.from_saved(json.loads(json.dumps(taught.to_json())), taught.to_tensors("novelty."), "novelty.")
    np.testing.assert_allclose(loaded.score(new_codes, new_logits), taught.score(new_codes, new_logits))
    assert loaded.examples == 30 and loaded.threshold == taught.threshold
    with pytest.raises(ValueError, match="give at least 5"):
        fit_calibrated(codes, labels, logits, examples=(shown_codes[:3], shown_logits[:3]))
    with pytest.raises(ValueError, match="teach a fusion"):
        fit_calibrated(codes, labels, logits, method="msp", examples=(shown_codes, shown_logits))


def test_cli_fit_learns_from_a_folder_of_none_of_these(colour_splits, tmp_path, capsys):
    others = tmp_path / "others"
    others.mkdir()
    for i, image in enumerate(noise_images(6, seed=4)):
        image.save(others / f"{i}.png")
    run = tmp_path / "run"
    args = ["-q", "fit", str(colour_splits), "-o", str(run), "--backbone", "tiny", "--engine", "torch", "--strategy", "linear"]
    assert main([*args, "--none-of-these", str(others)]) == 0
    assert "the score learnt from 6 images of none of these" in capsys.readouterr().out
    assert json.loads((run / "model.json").read_text())["novelty"]["examples"] == 6
    assert TransferClassifier.load(run).predict(noise_images(2, seed=9)).tolist() == ["unknown", "unknown"]
    assert main([*args, "--none-of-these", str(others / "0.png"), "--none-of-these", str(others / "1.png")]) == 2  # too few: a one-line error
    assert "give at least 5" in capsys.readouterr().err
    (others / "5.png").write_bytes(b"not an image")  # 5 given, 4 readable after the codes pass
    (others / "4.png").unlink()
    named = [arg for path in sorted(others.iterdir()) for arg in ("--none-of-these", str(path))]  # files named are all read, broken or not
    assert main([*args, *named]) == 2
    assert "only 4 of the images of none of these could be read" in capsys.readouterr().err


def onnx_outputs(model, path, images) -> list[np.ndarray]:
    """The exported graph's probabilities and novelty scores of ``images``, prepared as the model prepares them."""
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = torch.stack([model.preprocessing_.transform()(image) for image in images]).numpy()
    return session.run(["probabilities", "novelty"], {"x": batch})


def test_the_onnx_graph_outputs_the_novelty_score_beside_the_probabilities(fitted, tmp_path):
    path = export_onnx(fitted, tmp_path / "model.onnx")
    description = json.loads((tmp_path / "model.onnx.json").read_text())
    assert description["novelty"]["name"] == "novelty" and description["novelty"]["threshold"] == fitted.novelty_threshold_
    images = colour_data(per_class=3, seed=8)[0] + noise_images(3)
    probabilities, novelty = onnx_outputs(fitted, path, images)
    np.testing.assert_allclose(probabilities, fitted.predict_proba(images), atol=1e-4)
    expected = fitted.novelty_score(images)
    # Equal but where a score lies within float32's rounding of a training reference (one step of 1/n)
    step = 1 / fitted.fitted_.n_train
    assert np.abs(novelty - expected).max() <= step + 1e-4
    assert ((novelty > fitted.novelty_threshold_) == (expected > fitted.novelty_threshold_)).all()


def test_a_fine_tuned_models_onnx_graph_gives_its_novelty_score(fine_tuned, tmp_path):
    path = export_onnx(fine_tuned, tmp_path / "model.onnx")
    images = colour_data(per_class=2, seed=8)[0] + noise_images(3)
    probabilities, novelty = onnx_outputs(fine_tuned, path, images)
    np.testing.assert_allclose(probabilities, fine_tuned.predict_proba(images), atol=1e-4)
    expected = fine_tuned.novelty_score(images)
    assert ((novelty > fine_tuned.novelty_threshold_) == (expected > fine_tuned.novelty_threshold_)).all()
    assert np.abs(novelty - expected).max() <= 1 / 11 + 1e-4  # within one step of the 11 held-out references


def test_more_flags_than_the_threshold_allows_are_told_from_chance():
    from headstart.strategies.novelty import NoveltyDetector, flags_more_than_calibrated

    calibrated = NoveltyDetector(method="knn", threshold=1.0, known_share=0.95, confidence=0.9)
    assert not flags_more_than_calibrated(calibrated, 4, 153)  # hymenoptera's val: 2.6%
    assert not flags_more_than_calibrated(calibrated, 14, 153)  # 9%: within what 153 images draw by chance
    assert flags_more_than_calibrated(calibrated, 273, 1279) is True  # alzheimer_mri4's test scans: 21%; a Python bool, as JSON needs
    assert flags_more_than_calibrated(calibrated, 4, 153) is False
    # a threshold from too few scores promises nothing to measure against
    assert not flags_more_than_calibrated(NoveltyDetector(method="knn", threshold=1.0, known_share=0.95, confidence=0.34), 2, 2)
    assert not flags_more_than_calibrated(None, 5, 5)


def test_cli_predict_says_unknown_and_evaluate_reports_false_rejections(colour_splits, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["-q", "fit", str(colour_splits), "-o", str(run), "--backbone", "tiny", "--engine", "torch", "--strategy", "linear"]) == 0
    fit_output = capsys.readouterr().out
    assert "known-class images flagged as none of these" in fit_output
    rejection = json.loads((run / "metrics.json").read_text())["evaluation"]["rejection"]
    test_images = json.loads((run / "metrics.json").read_text())["evaluation"]["n_images"]
    assert sum(rejection["histogram"]["counts"]) == test_images  # the last bin holds the scores beyond it
    assert len(rejection["rejected_images"]) == rejection["rejected"]
    report = (run / "report.html").read_text()
    assert "<h2>None of these</h2>" in report and 'alt="novelty scores" src="data:image/png;base64,' in report
    from headstart.report import render_report

    every_flagged = json.loads((run / "metrics.json").read_text())
    every_flagged["evaluation"]["rejection"]["accuracy_on_accepted"] = None  # read "accuracy on the accepted is n/a"
    assert "no image was accepted (accuracy " in render_report(every_flagged)
    assert rejection["more_than_calibrated"] is False or rejection["false_rejection_rate"] > 0.05
    every_flagged["evaluation"]["rejection"]["more_than_calibrated"] = True
    assert "That is more than the 5% of images like the training ones that the threshold flags, beyond chance" in render_report(every_flagged)
    odd = tmp_path / "noise.png"
    noise_images(1)[0].save(odd)
    known = next((colour_splits / "test" / "red").iterdir())
    assert main(["-q", "predict", str(run), str(odd), str(known)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "unknown: looks like none of the 3 classes (score" in lines[1] and "; nearest: " in lines[1]
    assert lines[2].split()[1] == "red"
    assert main(["-q", "predict", str(run), str(odd), "--no-reject"]) == 0
    assert "looks like none" not in capsys.readouterr().out
    others = tmp_path / "others"
    others.mkdir()
    for i, image in enumerate(noise_images(4, seed=6)):
        image.save(others / f"{i}.png")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    assert main(["-q", "evaluate", str(run), str(colour_splits), "--none-of-these", str(others)]) == 0
    out = capsys.readouterr().out
    assert "false rejections, threshold" in out and "on the accepted" in out
    assert "4 of 4 images of none of the classes flagged (100.0%); AUROC 1.000 against the known-class images" in out
    assert main(["-q", "evaluate", str(run), str(colour_splits), "--format", "json", "--none-of-these", str(others), "--none-of-these", str(broken)]) == 0
    figures = json.loads(capsys.readouterr().out)["rejection"]["none_of_these"]
    assert figures == {"images": 4, "unreadable": 1, "flagged": 4, "caught_rate": 1.0, "auroc": 1.0}
    # the evaluated images given as none of these too: refused, as fit refuses them, not counted as missed unknowns
    assert main(["-q", "evaluate", str(run), str(colour_splits), "--none-of-these", str(colour_splits / "test" / "red")]) == 2
    assert "of the images of none of these are labelled images too (the first: " in capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["evaluation"]["rejection"]["false_rejection_rate"] <= 1.0
