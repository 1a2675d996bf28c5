import json

import pytest

from headstart import DataError, TransferClassifier, evaluate_folder, fit_folder, load_dataset
from tests.conftest import write_class_folders


def test_fit_folder_writes_a_complete_run(colour_splits, tmp_path):
    model, summary = fit_folder(colour_splits, tmp_path / "run", backbone="tiny", engine="torch", strategy="linear")
    assert summary.evaluation.split == "test" and summary.evaluation.accuracy == 1.0
    assert summary.evaluation.chance_uniform == pytest.approx(1 / 3)
    assert summary.n_train == 18 and summary.computed_codes == 27
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["evaluation"]["accuracy"] == 1.0
    assert set(metrics["evaluation"]["per_class_recall"]) == {"red", "green", "blue"}
    _, again = fit_folder(colour_splits, tmp_path / "run2", backbone="tiny", engine="torch", strategy="linear")
    assert again.computed_codes == 0  # every code came from the cache


def test_a_dataset_found_before_the_fit_counts_its_search_in_the_fits_time(colour_splits):
    from headstart.data import load_dataset

    found = load_dataset(colour_splits)
    assert 0 < found.seconds_to_find < 30
    found.seconds_to_find = 30.0  # as a search of a million images takes (the command line's, before PyTorch loads)
    _, summary = fit_folder(found, backbone="tiny", engine="torch", strategy="linear", diagnostics=False)
    assert summary.seconds_by_phase["finding images"] >= 30 and summary.seconds >= 30 + summary.seconds_by_phase["fit"]


def test_fit_lists_the_held_out_mistakes_in_its_report(colour_splits, tmp_path):
    # a green test image filed under red: fit's own evaluation names it, as evaluate does
    (colour_splits / "test" / "green" / "00.png").rename(colour_splits / "test" / "red" / "filed-wrong.png")
    _, summary = fit_folder(colour_splits, tmp_path / "run", backbone="tiny", engine="torch", strategy="linear", diagnostics=False)
    [mistake] = summary.evaluation.mistakes
    assert mistake["path"].endswith("filed-wrong.png") and (mistake["label"], mistake["predicted"]) == ("red", "green")
    assert "filed-wrong.png" in (tmp_path / "run" / "report.html").read_text()


def test_a_cache_that_cannot_be_written_is_said_once_and_the_fit_goes_on(colour_splits, tmp_path, monkeypatch, caplog):
    (tmp_path / "a-file").write_text("in the way")
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "a-file" / "cache"))  # mkdir under a file fails, even as root
    _, summary = fit_folder(colour_splits, tmp_path / "run", backbone="tiny", engine="torch", diagnostics=False)
    assert summary.evaluation.accuracy == 1.0 and (tmp_path / "run" / "model.json").exists()
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "cache" in r.getMessage()]
    assert len(said) == 1 and "cannot be written" in said[0] and "HEADSTART_CACHE" in said[0]  # codes, hashes and the plan: one line


def test_auto_strategy_plans_first_and_its_pass_fills_the_cache(colour_splits, tmp_path):
    model, summary = fit_folder(colour_splits, tmp_path / "run", backbone="tiny", engine="torch")
    assert summary.computed_codes == 9  # the 18 training images' codes came from the advisor's pass
    assert summary.plan["strategy"] == model.strategy_ and 3 <= len(summary.plan["explanation"]) <= 8
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert plan["measurements"]["size"]["n_images"] == 18 and plan["alternatives"]
    assert json.loads((tmp_path / "run" / "model.json").read_text())["strategy"] == model.strategy_ != "auto"
    # the plan and the record show briefly in a notebook cell, and print() gives the plan's reasons as advise does
    assert repr(model.plan_) == f"Plan(strategy={model.strategy_!r}, tap={model.plan_.tap!r}, backbone='tiny', case={model.plan_.case!r}; print() it for the reasons)"
    assert str(model.plan_).splitlines()[:2] == [f"  case        {model.plan_.case}", f"  plan        {model.plan_.describe()}"]
    assert str(model.plan_).splitlines()[2:] == [f"  - {line}" for line in model.plan_.explanation]
    assert repr(model.fitted_).startswith(f"FittedModel(strategy={model.strategy_!r}, backbone='tiny'") and len(repr(model.fitted_)) < 200


def test_a_summary_prints_as_the_command_line_does_and_shows_briefly(colour_splits, tmp_path):
    _, summary = fit_folder(colour_splits, tmp_path / "run", backbone="tiny", engine="torch", strategy="linear")
    # a notebook cell showed the dataclass's repr: every diagnostic, 160 kB on five ants and five bees
    assert repr(summary) == "FitSummary(data=%r, classes=3, n_train=18, test accuracy 100.0%% on 9 images; print() it for the whole summary)" % str(colour_splits)
    assert str(summary).startswith(f"headstart fit: {colour_splits} (splits layout)") and f"saved to    {tmp_path / 'run'} (open" in str(summary)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["output"] == str(tmp_path / "run")


def test_cross_split_duplicates_are_reported_as_leakage(colour_splits, tmp_path):
    leaked = colour_splits / "test" / "red" / "leaked.png"
    leaked.write_bytes((colour_splits / "train" / "red" / "00.png").read_bytes())
    _, summary = fit_folder(colour_splits, None, backbone="tiny", engine="torch")
    assert summary.duplicates["cross_split"] == 1
    pair = summary.duplicates["leakage"][0]
    assert pair["kind"] == "exact" and sorted(pair["splits"]) == ["test", "train"]
    assert summary.duplicates["conflicting_labels"] == []  # the same label both sides
    from headstart.summary import format_summary

    shown = {f"{pair['paths'][0]} ({pair['splits'][0]})", f"{pair['paths'][1]} ({pair['splits'][1]})"}
    line = next(line.strip() for line in format_summary(summary, tmp_path / "run").splitlines() if "<->" in line)
    assert set(line.removeprefix("exact: ").split("  <->  ")) == shown  # which split each image is in: pairs within one are counted too


def test_paths_from_the_home_folder_are_expanded(colour_splits, tmp_path, monkeypatch):
    # '~/runs/x' from Python made a folder named '~' in the working directory
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    model, _ = fit_folder(colour_splits, "~/runs/x", backbone="tiny", engine="torch", strategy="linear", diagnostics=False)
    model.save("~/saved")
    TransferClassifier.load("~/saved")
    from headstart.export import export_onnx

    export_onnx(model, "~/model.onnx")
    assert all((tmp_path / "home" / name).exists() for name in ("runs/x/model.json", "saved/model.json", "model.onnx"))
    assert not (tmp_path / "~").exists()


def test_bad_parameters_are_refused_before_the_images_are_read(tmp_path):
    with pytest.raises(DataError, match="random_state=-1 must be a whole number of at least 0"):
        fit_folder(tmp_path / "not-read", None, backbone="tiny", random_state=-1)


def test_identical_images_labelled_differently_are_named(colour_splits, tmp_path, capsys):
    from headstart.cli import main

    copy = colour_splits / "train" / "blue" / "copy-of-red.png"
    copy.write_bytes((colour_splits / "train" / "red" / "00.png").read_bytes())
    assert main(["-q", "fit", str(colour_splits), "-o", str(tmp_path / "run"), "--backbone", "tiny", "--engine", "torch", "--no-diagnostics"]) == 0
    out = capsys.readouterr().out
    assert "1 identical pair(s) labelled differently" in out and "copy-of-red.png (blue)" in out
    [conflict] = json.loads((tmp_path / "run" / "metrics.json").read_text())["duplicates"]["conflicting_labels"]
    assert sorted(conflict["labels"]) == ["blue", "red"]
    assert "identical pair(s) labelled differently" in (tmp_path / "run" / "report.html").read_text()


def test_near_duplicates_are_found(colour_splits):
    import numpy as np
    from PIL import Image

    # A smooth scene (a lit disc on a gradient), then a smaller JPEG re-encode of it.
    yy, xx = np.mgrid[0:120, 0:160]
    disc = ((xx - 100) ** 2 + (yy - 50) ** 2 < 900) * 150
    scene = np.stack([xx * 1.2 + disc, yy * 1.5 + disc / 2, 255 - xx], axis=-1).clip(0, 255).astype(np.uint8)
    Image.fromarray(scene).save(colour_splits / "train" / "blue" / "scene.png")
    Image.fromarray(scene).resize((80, 60)).save(colour_splits / "train" / "blue" / "scene-small.jpg", quality=85)
    _, summary = fit_folder(colour_splits, None, backbone="tiny", engine="torch")
    assert summary.duplicates["within_split"] == {"exact": 0, "near": 1}
    # ... and the head's cross-validation kept the pair in one fold, and says so
    assert summary.classifier["duplicate_groups"] == {"groups": 1, "images": 2, "largest": 2}


def test_unreadable_files_are_skipped_or_fatal_with_strict(colour_splits, tmp_path):
    (colour_splits / "train" / "red" / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    _, summary = fit_folder(colour_splits, None, backbone="tiny", engine="torch")
    assert [s["path"].endswith("truncated.png") for s in summary.skipped] == [True]
    with pytest.raises(DataError, match="truncated.png"):
        fit_folder(colour_splits, None, backbone="tiny", engine="torch", strict=True)


def test_strict_lists_every_unreadable_file_in_one_pass(colour_splits, tmp_path):
    # three kinds at once: empty (found by the folder scan), truncated and unrecognised (found by decoding)
    (colour_splits / "train" / "red" / "empty.png").write_bytes(b"")
    good = (colour_splits / "train" / "red" / "00.png").read_bytes()
    (colour_splits / "train" / "red" / "truncated.png").write_bytes(good[: len(good) // 2])
    (colour_splits / "test" / "blue" / "garbage.jpg").write_bytes(b"\xff\xd8\xff" + b"\x13" * 200)
    with pytest.raises(DataError) as failure:
        fit_folder(colour_splits, None, backbone="tiny", engine="torch", strict=True)
    message = str(failure.value)
    assert message.startswith("--strict: 3 unreadable or missing file(s)") and "\n" not in message
    assert all(name in message for name in ("empty.png: unreadable (empty file)", "truncated.png: unreadable (truncated", "garbage.jpg: unreadable"))
    assert "BytesIO" not in message and "0x" not in message
    # without --strict the fit skips them, saves its model, and every count agrees
    _, summary = fit_folder(colour_splits, tmp_path / "run", backbone="tiny", engine="torch")
    counts = summary.counts
    assert counts["unreadable"] == 3 and counts["found"] == 27 + 3
    assert counts["used"] == {"train": 18, "test": 9} == {"train": summary.n_train, "test": summary.evaluation.n_images}
    assert counts["codes_computed"] + counts["codes_cached"] == 27
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["counts"] == counts



def test_files_a_csv_lists_but_lacks_are_counted_as_missing_and_fail_strict(colour_folders, tmp_path):
    rows = ["path,label"] + [f"{c}/{i:02d}.png,{c}" for c in ("red", "green", "blue") for i in range(6)] + ["red/gone.png,red"]
    (colour_folders / "labels.csv").write_text("\n".join(rows))
    with pytest.raises(DataError, match=r"--strict: 1 unreadable or missing file\(s\): .*gone.png: missing file"):
        fit_folder(colour_folders / "labels.csv", None, backbone="tiny", engine="torch", strict=True)
    _, summary = fit_folder(colour_folders / "labels.csv", None, backbone="tiny", engine="torch", strategy="linear", diagnostics=False)
    assert summary.counts["missing"] == 1 and summary.counts["unreadable"] == 0 and summary.counts["found"] == 18  # not found: it is not there


def test_many_unreadable_files_are_listed_in_a_file(colour_splits, tmp_path):
    for i in range(12):
        (colour_splits / "train" / "red" / f"empty-{i:02d}.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"and 2 more: all 12 are listed in .*unreadable.txt"):
        fit_folder(colour_splits, tmp_path / "run", backbone="tiny", engine="torch", strict=True)
    listed = (tmp_path / "run" / "unreadable.txt").read_text().splitlines()
    assert len(listed) == 12 and all(line.endswith("unreadable (empty file)") for line in listed)


def test_saved_files_are_readable_by_others(colour_splits, tmp_path):
    fit_folder(colour_splits, tmp_path / "run", backbone="tiny", engine="torch")
    modes = {path.name: path.stat().st_mode & 0o777 for path in (tmp_path / "run").iterdir() if path.is_file()}
    assert len(set(modes.values())) == 1 and modes["model.safetensors"] == modes["model.json"], modes


def test_evaluate_folder_uses_the_saved_model(colour_splits, tmp_path):
    fit_folder(colour_splits, tmp_path / "run", backbone="tiny", engine="torch")
    model = TransferClassifier.load(tmp_path / "run")
    evaluation = evaluate_folder(model, colour_splits)
    assert evaluation.split == "test" and evaluation.n_images == 9 and evaluation.accuracy == 1.0
    pool = write_class_folders(tmp_path / "pool", per_class=2, seed=5)
    assert evaluate_folder(model, pool).n_images == 6


def test_options_a_found_dataset_cannot_take_are_refused(colour_splits, tmp_path):
    """A Dataset comes split: a test_size or allow_outside given beside it would be ignored."""
    found = load_dataset(colour_splits)
    with pytest.raises(DataError, match="^test_size applies where the images are found; .* pass test_size to load_dataset"):
        fit_folder(found, tmp_path / "run", test_size=0.5, backbone="tiny", engine="torch")
    with pytest.raises(DataError, match="^test_size and allow_outside apply where"):
        fit_folder(found, tmp_path / "run", test_size=0.5, allow_outside=True, backbone="tiny", engine="torch")
    assert not (tmp_path / "run").exists()
    with pytest.raises(DataError, match="^allow_outside applies where"):
        evaluate_folder(TransferClassifier(), found, allow_outside=True)
    pool = write_class_folders(tmp_path / "pool", per_class=4)  # given a folder, test_size splits it
    _, summary = fit_folder(pool, None, test_size=0.5, backbone="tiny", engine="torch", diagnostics=False)
    assert summary.evaluation.n_images == 2 * len(summary.classes)


def test_evaluate_refuses_unknown_classes(colour_splits, tmp_path):
    fit_folder(colour_splits, tmp_path / "run", backbone="tiny", engine="torch")
    other = write_class_folders(tmp_path / "other", per_class=2, colours={"purple": (120, 0, 120), "red": (200, 40, 40)})
    # a class of the model's and one of none: how to score that one apart
    with pytest.raises(DataError, match=rf"purple are not among the model's classes .* flags as unknown, move {other / 'purple'} out and give it with --none-of-these\)\.$"):
        evaluate_folder(TransferClassifier.load(tmp_path / "run"), other)
    (other / "purple").rename(other / "Blue")  # the model's "blue", spelt otherwise
    with pytest.raises(DataError, match=r"rename them to match \(Blue -> blue\)"):
        evaluate_folder(TransferClassifier.load(tmp_path / "run"), other)
    # one class's folder given for the folder of classes: its subfolders read as classes
    (colour_splits / "test" / "red" / "sub").mkdir()
    (colour_splits / "test" / "red" / "00.png").rename(colour_splits / "test" / "red" / "sub" / "00.png")
    with pytest.raises(DataError, match="red is named as one class: give the folder that holds the class folders"):
        evaluate_folder(TransferClassifier.load(tmp_path / "run"), colour_splits / "test" / "red")


def test_imbalanced_data_get_class_weights(tmp_path):
    root = tmp_path / "imb"
    write_class_folders(root, per_class=12, colours={"many": (200, 40, 40)})
    write_class_folders(root, per_class=4, colours={"few": (40, 40, 200)})
    _, summary = fit_folder(root, None, backbone="tiny", engine="torch")
    assert summary.classifier["class_weight"] == "balanced"


def test_predict_images_ranks_classes_and_reports_failures(colour_splits, tmp_path):
    from headstart import predict_images

    model, _ = fit_folder(colour_splits, None, backbone="tiny", engine="torch")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n")
    rows = predict_images(model, [colour_splits / "test" / "blue" / "00.png", bad], top_k=3)
    assert [p["label"] for p in rows[0]["predictions"]][0] == "blue"
    probabilities = [p["probability"] for p in rows[0]["predictions"]]
    assert probabilities == sorted(probabilities, reverse=True) and abs(sum(probabilities) - 1) < 1e-3
    assert rows[1]["error"].startswith("unreadable") and rows[1]["predictions"] == []
