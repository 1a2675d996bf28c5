import json

import numpy as np
import pytest

from headstart import ModelFileError, TransferClassifier, persistence
from headstart._json import as_json
from headstart.fitted import MODEL_PARAMS
from tests.test_estimator import colour_data, tiny


@pytest.fixture
def fitted():
    X, y = colour_data()
    return tiny().fit(X, y), X


def test_round_trip_predicts_identically(fitted, tmp_path):
    model, X = fitted
    model.save(tmp_path / "run")
    loaded = TransferClassifier.load(tmp_path / "run")
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    assert loaded.classes_.tolist() == model.classes_.tolist()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["model.json", "model.safetensors"]
    # what evaluate sizes cross-validation's noise by, class by class
    counts = loaded.fitted_.head_report.class_counts
    assert counts == model.fitted_.head_report.class_counts and len(counts) == len(model.classes_) and sum(counts) == len(X)


def test_integer_classes_survive_saving(tmp_path):
    X, _ = colour_data()
    model = tiny().fit(X, np.repeat([1, 2, 15], 6))
    model.save(tmp_path / "run")
    assert TransferClassifier.load(tmp_path / "run").classes_.tolist() == [1, 2, 15]


def test_model_files_hold_no_pickle(fitted, tmp_path):
    model, _ = fitted
    model.save(tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["backbone"] == "tiny" and meta["versions"]["torch"]
    weights = (tmp_path / "run" / "model.safetensors").read_bytes()
    assert b"\x80\x04" not in weights[:16] and weights[8:9] == b"{"  # safetensors: u64 length, then JSON


def test_crash_mid_save_keeps_the_previous_model(fitted, tmp_path, monkeypatch):
    model, X = fitted
    model.save(tmp_path / "run")
    before = (tmp_path / "run" / "model.safetensors").read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(persistence, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        model.save(tmp_path / "run")
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folders left behind
    TransferClassifier.load(tmp_path / "run")


def test_a_saved_model_is_on_disk_before_the_previous_one_goes(fitted, tmp_path, monkeypatch):
    # A power cut after the swap must not leave the new run's names with empty contents and no old run:
    # every file and the staging folder are synced before the swap, the parent folder after it.
    import os

    from headstart import _atomic

    model, _ = fitted
    model.save(tmp_path / "run")
    synced, swapped = [], []
    real_fsync, real_rmtree = os.fsync, _atomic.shutil.rmtree

    def fsync(fd):
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), bool(swapped)))
        real_fsync(fd)

    def rmtree(path, *args, **kwargs):  # the previous version goes once the swap is done
        swapped.append(str(path))
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(_atomic.os, "fsync", fsync)
    monkeypatch.setattr(_atomic.shutil, "rmtree", rmtree)
    model.save(tmp_path / "run")
    before_swap = {os.path.basename(path) for path, after in synced if not after and "/.run." in path}
    assert {"model.json", "model.safetensors"} <= before_swap, synced
    assert any(path.startswith(str(tmp_path / ".run.")) and not after for path, after in synced), synced  # staging's entries
    assert synced[-1] == (str(tmp_path), False), synced  # the swap itself, before the previous version is deleted


def test_resave_replaces_the_whole_directory(fitted, tmp_path):
    model, _ = fitted
    model.save(tmp_path / "run", metrics={"accuracy": 1.0})
    model.save(tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_saving_never_replaces_a_folder_or_file_it_did_not_write(fitted, tmp_path, monkeypatch):
    from headstart import DataError
    from headstart.cli import main

    model, _ = fitted
    photos = tmp_path / "photos"
    (photos / "cats").mkdir(parents=True)
    (photos / "cats" / "1.jpg").write_bytes(b"mine")
    (photos / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="photos holds cats, notes.txt, which writing a run there would delete; give a new or empty folder"):
        model.save(photos)
    assert (photos / "cats" / "1.jpg").read_bytes() == b"mine" and (photos / "notes.txt").read_text() == "mine"
    with pytest.raises(DataError, match="notes.txt is a file; give a folder to write the run to"):
        model.save(photos / "notes.txt")
    assert (photos / "notes.txt").read_text() == "mine"
    # said before any image is read: the data folder is not even looked at
    assert main(["-q", "fit", str(tmp_path / "not read"), "-o", str(photos)]) == 2
    interrupted = tmp_path / "run"
    (interrupted / "checkpoints").mkdir(parents=True)  # a fine-tuning run stopped before its first save
    model.save(interrupted)
    assert (interrupted / "model.json").is_file() and (interrupted / "checkpoints").is_dir()
    monkeypatch.chdir(interrupted)  # "-o ." from inside a run: the folder a process runs in cannot be swapped
    with pytest.raises(DataError, match="is the current folder or holds it"):  # was an OSError after the fit
        model.save(".")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda run: (run / "model.json").unlink(), "not a headstart model"),
        (lambda run: (run / "model.json").write_text("{nope"), "not valid JSON"),
        (lambda run: (run / "model.safetensors").write_bytes(b"junk"), "does not match"),
        (lambda run: (run / "model.safetensors").unlink(), "no model.safetensors"),
    ],
)
def test_damaged_models_give_clear_errors(fitted, tmp_path, damage, message):
    model, _ = fitted
    model.save(tmp_path / "run")
    damage(tmp_path / "run")
    with pytest.raises(ModelFileError, match=message):
        TransferClassifier.load(tmp_path / "run")


def _edit_meta(run, **changes):
    meta_path = run / "model.json"
    meta = json.loads(meta_path.read_text())
    meta.update(changes)
    meta_path.write_text(json.dumps(meta))


def test_newer_format_is_refused(fitted, tmp_path):
    model, _ = fitted
    model.save(tmp_path / "run")
    _edit_meta(tmp_path / "run", format_version=99)
    with pytest.raises(ModelFileError, match="newer headstart"):
        TransferClassifier.load(tmp_path / "run")


def test_model_for_other_weights_is_refused(fitted, tmp_path):
    model, _ = fitted
    model.save(tmp_path / "run")
    _edit_meta(tmp_path / "run", fingerprint="0" * 20)
    with pytest.raises(ModelFileError, match="other tiny weights"):
        TransferClassifier.load(tmp_path / "run")


def test_saved_files_get_the_usual_permissions(fitted, tmp_path):
    import os
    import stat

    model, _ = fitted
    model.save(tmp_path / "run")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o777 & ~mask
    assert stat.S_IMODE((tmp_path / "run" / "model.json").stat().st_mode) == 0o666 & ~mask


FAST = {"epochs": 2, "batch_size": 8, "precision": "fp32", "augmentation": "none"}


def records_equal(a, b) -> bool:
    """Two FittedModels hold the same: the same JSON, arrays, plan and history."""
    if a.to_json() != b.to_json():
        return False
    ta, tb = a.to_tensors(), b.to_tensors()
    same_arrays = ta.keys() == tb.keys() and all(np.array_equal(ta[k], tb[k]) for k in ta)
    as_dict = lambda part: part.to_dict() if part is not None else None  # noqa: E731
    return same_arrays and json.dumps(as_dict(a.plan)) == json.dumps(as_dict(b.plan)) and as_dict(a.history) == as_dict(b.history)


@pytest.mark.parametrize(
    "params",
    [
        {"strategy": "linear"},
        {"strategy": "auto", "time_budget": 0},
        {"strategy": "finetune_top", "finetune": FAST},
        {"strategy": "finetune_all", "finetune": FAST | {"pooling": "stochastic"}},
        {"strategy": "gradual", "finetune": FAST | {"freeze_epochs": 1}},
        {"strategy": "scratch", "finetune": FAST},
        {"backbone": "tiny+tiny@he_normal", "strategy": "linear"},
        {"strategy": "linear", "tap": "features.1+pre_logits"},
        {"strategy": "linear", "solver": "minibatch"},
    ],
    ids=["linear", "auto", "finetune_top", "finetune_all", "gradual", "scratch", "joined-backbones", "joined-taps", "minibatch-head"],
)
def test_every_strategy_round_trips_to_equal_predictions_and_an_equal_record(params, tmp_path):
    X, y = colour_data(per_class=8)
    model = TransferClassifier(**{"backbone": "tiny", "engine": "torch", **params}).fit(X, y)
    model.save(tmp_path / "run")
    loaded = TransferClassifier.load(tmp_path / "run")
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X), atol=1e-6)
    assert records_equal(loaded.fitted_, model.fitted_)
    assert (loaded.plan_ is None) == (params["strategy"] != "auto") and (loaded.history_ is None) == (loaded.net_ is None)
    for name in MODEL_PARAMS:  # the parameters that describe the model come back with it
        assert as_json(loaded.get_params()[name]) == as_json(model.get_params()[name])
    assert loaded.fit_report_ == model.fit_report_  # the solver and its held-out split included


def test_the_record_comparison_sees_a_difference(fitted):
    model, X = fitted
    other = tiny(Cs=(0.5,)).fit(X, model.classes_[np.repeat([0, 1, 2], 6)])
    assert records_equal(model.fitted_, model.fitted_) and not records_equal(model.fitted_, other.fitted_)
