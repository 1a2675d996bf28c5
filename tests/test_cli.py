import csv
import io
import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from headstart.cli import main
from tests.conftest import logging_restored, write_colour_splits


def run(capsys, *argv):
    code = main(["-q", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory) -> Path:
    """One fit on the colour splits, made once for the tests that use a saved run (a dozen fits
    took a minute of the suite), with a feature cache of its own."""
    root = tmp_path_factory.mktemp("fitted")
    with pytest.MonkeyPatch.context() as patch, logging_restored():
        patch.setenv("HEADSTART_CACHE", str(root / "headstart-cache"))
        code = main(["-q", "fit", str(write_colour_splits(root / "splits")), "-o", str(root / "run"), "--backbone", "tiny", "--engine", "torch"])
    assert code == 0
    return root / "run"


@pytest.fixture
def run_dir(fitted_run, tmp_path) -> Path:
    """A copy of the fitted run, the test's own to change."""
    return Path(shutil.copytree(fitted_run, tmp_path / "run"))


def test_fit_prints_a_summary(colour_splits, tmp_path, capsys):
    code, out, _ = run(capsys, "fit", colour_splits, "-o", tmp_path / "run", "--backbone", "tiny", "--engine", "torch")
    assert code == 0
    assert "test accuracy 100.0% on 9 images" in out
    assert "chance 33.3% (1/K)" in out
    assert "no leakage" in out and "logistic regression" in out
    assert (tmp_path / "run" / "model.safetensors").exists()


def test_predict_formats(run_dir, colour_splits, capsys):
    image = colour_splits / "test" / "red" / "00.png"
    code, out, _ = run(capsys, "predict", run_dir, image, "--top-k", "2")
    header, first = out.splitlines()[:2]
    assert code == 0 and header.split()[0] == "path" and first.split()[1] == "red"
    code, out, _ = run(capsys, "predict", run_dir, colour_splits / "test", "--format", "json")
    rows = json.loads(out)
    assert len(rows) == 9 and all(r["predictions"][0]["label"] in r["path"] for r in rows)
    code, out, _ = run(capsys, "predict", run_dir, image, "--format", "csv", "--top-k", "3")
    table = list(csv.DictReader(io.StringIO(out)))
    assert [r["rank"] for r in table] == ["1", "2", "3"] and table[0]["label"] == "red"


def test_predict_prints_a_large_folder_in_chunks_as_one_output(run_dir, colour_splits, tmp_path, capsys, monkeypatch):
    # 20,000 images were held until the end (1.5 GB, nothing printed for 17 s); now a chunk at a
    # time, and the whole reads as one CSV, one table, one JSON array, as a single chunk gives
    from headstart import cli

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    images = [colour_splits / "test", bad]
    whole = {fmt: run(capsys, "predict", run_dir, *images, "--format", fmt, "--top-k", "2")[1] for fmt in ("csv", "table", "json")}
    monkeypatch.setattr(cli, "PREDICT_CHUNK", 4)  # 10 images: chunks of 4, 4 and 2
    for fmt, expected in whole.items():
        code, out, _ = run(capsys, "predict", run_dir, *images, "--format", fmt, "--top-k", "2")
        assert code == 1 and out == expected, fmt  # the unreadable file still makes the exit 1
    assert len(json.loads(whole["json"])) == 10 and whole["csv"].count("path,rank") == 1
    assert len(list(csv.DictReader(io.StringIO(whole["csv"])))) == 9 * 2 + 1


def test_predict_reports_unreadable_images_and_exits_nonzero(run_dir, tmp_path, colour_splits, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    code, out, _ = run(capsys, "predict", run_dir, colour_splits / "test" / "red" / "00.png", bad)
    assert code == 1
    assert "unreadable" in out and "red" in out


def test_predict_on_a_folder_reports_an_empty_image_file_and_skips_other_files(run_dir, tmp_path, colour_splits, capsys):
    folder = tmp_path / "new"
    folder.mkdir()
    (folder / "red.png").write_bytes((colour_splits / "test" / "red" / "00.png").read_bytes())
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    Image.new("L", (40, 40), 255).save(folder / "red_mask.png")  # a segmentation mask beside red.png
    (folder / "IMG_0001.CR2").write_bytes(b"II*\x00\x10\x00\x00\x00CR\x02")  # a camera's raw file: it starts as a TIFF
    (folder / "IMG_0002.NEF").write_bytes(b"MM\x00*\x00\x00\x00\x08")
    code = main(["predict", str(run_dir), str(folder)])  # without -q, which silences warnings
    out, err = capsys.readouterr()
    assert code == 1
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(rows) == {str(folder / "empty.jpg"), str(folder / "red.png")}  # not the notes, the raw files or the mask
    assert f"passed over 3 non-image file(s) in {folder} (1 .cr2, 1 .nef, 1 .txt)" in err  # said, as fit counts them
    assert "EXIF" not in err  # Pillow's 'Corrupt EXIF data' on a TIFF-like file stays out of sight
    code = main(["predict", str(run_dir), str(folder / "red.png"), str(folder / "IMG_0001.CR2")])  # named on its own
    out, err = capsys.readouterr()
    assert code == 0 and "IMG_0001.CR2" not in out and f"passed over {folder / 'IMG_0001.CR2'}: a camera's raw file; export it as JPEG" in err
    assert rows[str(folder / "empty.jpg")].endswith("unreadable (empty file)")


def test_predict_expands_a_pattern_no_shell_expanded(run_dir, colour_splits, capsys):
    code, out, _ = run(capsys, "predict", run_dir, str(colour_splits / "test" / "*" / "0*.png"), "--format", "json")  # quoted, or Windows' cmd
    assert code == 0 and sorted(Path(r["path"]).parent.name for r in json.loads(out)) == ["blue"] * 3 + ["green"] * 3 + ["red"] * 3
    code, _, err = run(capsys, "predict", run_dir, str(colour_splits / "test" / "*.jpg"))
    assert code == 2 and "*.jpg matches no files" in err


def test_predict_refuses_an_archive_not_yet_unpacked(run_dir, colour_splits, tmp_path, capsys):
    import shutil

    archive = shutil.make_archive(str(tmp_path / "photos"), "zip", colour_splits / "test")
    code, out, err = run(capsys, "predict", run_dir, archive, colour_splits / "test" / "blue" / "00.png")
    assert code == 2 and out == "" and "photos.zip is an archive: unpack it first" in err  # not an "unreadable" row


def test_predict_reads_an_image_piped_in_and_refuses_urls(run_dir, colour_splits, capsys, monkeypatch):
    image = colour_splits / "test" / "blue" / "00.png"
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(image.read_bytes())))
    code, out, _ = run(capsys, "predict", run_dir, "-", image, "--format", "json")
    piped, from_file = json.loads(out)
    assert code == 0 and piped["path"] == "-" and piped["predictions"] == from_file["predictions"]
    code, _, err = run(capsys, "predict", run_dir, "https://example.com/bee.jpg")
    assert code == 2 and "is a URL" in err and "download it first" in err
    code, _, err = run(capsys, "predict", run_dir, "https://example.com/bee.jpg?size=large")  # not taken for a pattern
    assert code == 2 and "is a URL" in err


def test_errors_name_the_flag_that_fixes_them(colour_splits, tmp_path, capsys):
    # messages shared with the Python API give the command line's form beside the keyword's
    code, _, err = run(capsys, "fit", colour_splits, "-o", tmp_path / "a", "--backbone", "tiny", "--solver", "minibatch", "--classifier", "svm")
    assert code == 2 and "(--solver sklearn)" in err
    code, _, err = run(capsys, "fit", colour_splits, "-o", tmp_path / "b", "--backbone", "tiny+tiny", "--strategy", "finetune_top")
    assert code == 2 and "(--strategy linear)" in err
    for command in (["fit", colour_splits, "-o", tmp_path / "c"], ["advise", colour_splits]):  # a negative seed failed in numpy, with a traceback
        with pytest.raises(SystemExit) as stopped:
            run(capsys, *command, "--seed", "-1")
        assert stopped.value.code == 2 and "--seed: '-1' is not a whole number of 0 or more" in capsys.readouterr().err
        with pytest.raises(SystemExit) as stopped:  # MobileNetV2 fitted at 8 px without a word; 4 s to refuse 4,000
            run(capsys, *command, "--input-size", "8")
        assert stopped.value.code == 2 and "--input-size: '8' is not a side in pixels from 16 to 2,048" in capsys.readouterr().err


def test_counts_of_zero_are_refused_before_pytorch_loads(run_dir, colour_splits, tmp_path, capsys):
    # --top-k 0, --epochs 0, --batch-size 0 were refused clearly, but after 3-4 s of loading PyTorch
    for command in (
        ["predict", run_dir, colour_splits / "test", "--top-k", "0"],
        ["fit", colour_splits, "-o", tmp_path / "r", "--epochs", "0"],
        ["fit", colour_splits, "-o", tmp_path / "r", "--batch-size", "-3"],
        ["style", "search", tmp_path / "x.idx", colour_splits / "test" / "red" / "00.png", "-k", "0"],
    ):
        with pytest.raises(SystemExit) as stopped:
            run(capsys, *command)
        assert stopped.value.code == 2 and "is not a whole number of 1 or more" in capsys.readouterr().err, command


def test_evaluate(run_dir, colour_splits, capsys):
    code, out, _ = run(capsys, "evaluate", run_dir, colour_splits, "--format", "json")
    assert code == 0 and json.loads(out)["accuracy"] == 1.0


def test_evaluate_prints_every_figure_the_worst_mistakes_and_a_report(run_dir, tmp_path, capsys):
    from tests.conftest import write_class_folders

    # green images labelled red: confident mistakes, listed with their paths
    data = write_class_folders(tmp_path / "eval", per_class=3, seed=7)
    for i, image in enumerate(sorted((data / "green").iterdir())):
        image.rename(data / "red" / f"mislabelled-{i}.png")
    code, out, _ = run(capsys, "evaluate", run_dir, data, "--report", tmp_path / "evaluation")
    assert code == 0
    assert "(all images, 9 images)" in out and "pool" not in out
    assert "accuracy 66.7% on 9 images (95% CI" in out and "chance 33.3% (1/K)" in out and "balanced accuracy" in out
    assert "recall      red 50%, blue 100%" in out  # every class, lowest first
    mistakes = [line for line in out.splitlines() if "mislabelled-" in line]
    assert len(mistakes) == 3 and all(line.split()[1:3] == ["red", "green"] for line in mistakes)
    report = (tmp_path / "evaluation" / "report.html").read_text()
    assert "Confusion" in report or "confusion" in report
    # the report speaks as the command does: no internal "pool", no learning curve it cannot have
    assert "pool" not in report and "No learning curve" not in report and ">accuracy<b>" in report
    # files the folder scan passes over are reported too, not only those that fail to decode
    (data / "blue" / "empty.png").write_bytes(b"")
    Image.new("L", (40, 40), 0).save(data / "blue" / "00_mask.png")
    code, out, _ = run(capsys, "evaluate", run_dir, data)
    assert "(all images, 9 images; 1 segmentation mask(s) passed over; 1 unreadable skipped)" in out
    assert f"skipped     {data / 'blue' / 'empty.png'}: unreadable (empty file)" in out


def test_the_bare_command_lists_the_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: headstart") and "    fit        train a classifier" in out and "    serve " in out
    for group, first in (("style", "    index "), ("inspect", "    weights ")):  # was: "error: ... required: WHAT"
        assert main([group, "--progress"]) == 0
        captured = capsys.readouterr()
        assert captured.out.startswith(f"usage: headstart {group}") and first in captured.out and captured.err == ""


def test_evaluate_writes_its_report_only_to_a_folder_of_its_own(run_dir, colour_splits, capsys):
    # --report naming the run replaced the fit's own report.html; naming the images' folder wrote among them
    fit_report = (run_dir / "report.html").read_bytes()
    for folder, holds in ((run_dir, "metrics.json"), (colour_splits, "test, train")):
        code, _, err = run(capsys, "evaluate", run_dir, colour_splits / "test", "--report", folder)
        assert code == 2 and err.startswith(f"error: --report {folder} holds other files (") and holds in err and f"e.g. {folder}-eval" in err
    assert (run_dir / "report.html").read_bytes() == fit_report and not (colour_splits / "report.html").exists()


def test_evaluate_help_describes_every_argument(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = capsys.readouterr().out
    for argument in ("run ", "data ", "--format", "--report", "--allow-outside"):
        line = next(line for line in text.splitlines() if line.strip().startswith(argument.strip()))
        assert len(line.split()) > 1 or argument.strip() in ("run", "data"), line


@pytest.mark.parametrize("placement", ["before", "after"])
def test_global_flags_work_before_or_after_the_subcommand(placement, colour_splits, tmp_path, capsys):
    flags = ["-q", "--debug"]
    rest = ["fit", str(colour_splits), "-o", str(tmp_path / "run"), "--backbone", "resnet9000"]
    argv = flags + rest if placement == "before" else rest[:1] + flags + rest[1:]
    with pytest.raises(Exception, match="unknown backbone"):  # --debug: the exception itself, not one line
        main(argv)
    parsed = __import__("headstart.cli", fromlist=["build_parser"]).build_parser().parse_args(argv)
    assert parsed.quiet and parsed.debug


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fit", "/no/such/folder", "-o", "x"], "does not exist"),
        (["predict", "/no/such/run", "img.png"], "/no/such/run does not exist; give the run directory"),
        (["fit", "{data}", "-o", "{tmp}/r", "--backbone", "resnet9000"], "unknown backbone"),
        (["fit", "{data}", "-o", "{tmp}/r", "--backbone", "tiny", "--tap", "nope"], "has no tap"),
    ],
)
def test_errors_are_one_line_with_nonzero_exit(argv, message, colour_splits, tmp_path, capsys):
    argv = [a.format(data=colour_splits, tmp=tmp_path) for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert "Traceback" not in err


def test_debug_shows_the_traceback(capsys):
    from headstart import DataError

    with pytest.raises(DataError):
        main(["--debug", "fit", "/no/such/folder", "-o", "x"])


def test_demo_runs_offline(tmp_path, capsys):
    code, out, _ = run(capsys, "demo", "-o", tmp_path / "demo", "--backbone", "tiny")
    assert code == 0
    assert "headstart fit PATH/TO/IMAGES" in out
    assert (tmp_path / "demo" / "model.json").exists()
    assert len(list((tmp_path / "demo-images" / "train").rglob("*.png"))) == 150
    # a first run: the fit is held to the demo's time budget, and says so
    assert "Fitting within a 60 s time budget" in out
    assert json.loads((tmp_path / "demo" / "model.json").read_text())["params"]["time_budget"] == 60.0


def test_demo_refuses_a_negative_budget_before_writing_anything(tmp_path, capsys):
    code, out, err = run(capsys, "demo", "-o", tmp_path / "demo", "--time-budget", "-1")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "must be a number of seconds, 0 or more" in err
    assert not list(tmp_path.iterdir())


def test_a_mirroring_warning_is_printed_once_in_the_summary(tmp_path, capsys):
    from tests.data.test_augment import gradient

    for i in range(24):  # dark-to-bright ramps: a probe tells them from their mirrors
        (tmp_path / "images" / "ab"[i // 12]).mkdir(parents=True, exist_ok=True)
        gradient(i).save(tmp_path / "images" / "ab"[i // 12] / f"{i}.png")
    code = main([  # without -q, which would silence the logged warnings too
        "fit", str(tmp_path / "images"), "-o", str(tmp_path / "run"), "--backbone", "tiny", "--engine", "torch", "--no-diagnostics",
        "--strategy", "finetune_top", "--epochs", "1", "--augmentation", "objects", "--set", "precision=fp32",
    ])
    out, err = capsys.readouterr()
    assert code == 0
    assert out.count("consider augmentation 'text_signs'") == 1 and "  WARNING     augmentation 'objects' mirrors" in out
    assert "consider augmentation" not in err

def test_backbones_lists_the_offline_ones(capsys):
    code, out, _ = run(capsys, "backbones")
    assert code == 0 and "mobilenet_v2" in out and "efficientnet_lite0" in out
    rows = out.splitlines()[:-1]
    assert len({row.index("taps:") for row in rows}) == 1  # one column, however long the sizes are


def test_fit_with_fine_tuning_writes_history(colour_splits, tmp_path, capsys):
    code, out, _ = run(
        capsys, "fit", colour_splits, "-o", tmp_path / "tuned", "--backbone", "tiny", "--engine", "torch",
        "--strategy", "finetune_top", "--epochs", "2", "--augmentation", "hflip,rot90", "--set", "pooling=stochastic",
        "--set", "drop-connect=0.1",
    )
    assert code == 0, out
    settings = json.loads((tmp_path / "tuned" / "model.json").read_text())["finetune"]
    assert settings["pooling"] == "stochastic" and settings["drop_connect"] == 0.1
    assert "fine-tuned  finetune_top from the linear classifier" in out and "('hflip', 'rot90')" in out
    assert settings["ensemble"] is True and "predicts with the mean of the fine-tuned network's and the linear classifier's" in out
    history = json.loads((tmp_path / "tuned" / "history.json").read_text())
    assert 1 <= len(history["records"]) <= 2
    code, out, _ = run(capsys, "predict", tmp_path / "tuned", colour_splits / "test" / "red" / "00.png", "--format", "json")
    assert code == 0 and json.loads(out)[0]["predictions"][0]["label"] in ("red", "green", "blue")


def test_fine_tuning_run_keeps_checkpoints_and_resumes(colour_splits, tmp_path, capsys):
    argv = ["fit", colour_splits, "-o", tmp_path / "tuned", "--backbone", "tiny", "--engine", "torch", "--strategy", "gradual", "--epochs", "2"]
    code, out, _ = run(capsys, *argv)
    assert code == 0, out
    assert (tmp_path / "tuned" / "checkpoints" / "last.safetensors").exists()
    code, resumed, _ = run(capsys, *argv, "--resume")
    assert code == 0 and "2 epochs" in resumed
    assert (tmp_path / "tuned" / "checkpoints" / "last.safetensors").exists()
    code, _, err = run(capsys, "fit", colour_splits, "-o", tmp_path / "bad", "--backbone", "tiny", "--strategy", "gradual", "--set", "dropuot=0.3")
    assert code == 2 and "did you mean 'dropout'?" in err and not (tmp_path / "bad").exists()
    code, _, err = run(capsys, "fit", colour_splits, "-o", tmp_path / "bad", "--backbone", "tiny", "--set", "dropout")
    assert code == 2 and "--set takes KEY=VALUE" in err
    code, _, err = run(capsys, "fit", colour_splits, "-o", tmp_path / "bad", "--backbone", "tiny", "--strategy", "linear", "--epochs", "3")
    assert code == 2 and "configure fine-tuning; add --strategy" in err
    code, _, err = run(capsys, "fit", colour_splits, "-o", tmp_path / "lin", "--backbone", "tiny", "--strategy", "linear", "--resume")
    assert code == 2 and "--resume continues a fine-tuning run" in err
    # auto planned a linear head: there is nothing to resume, and the fit says so instead of refitting in silence
    assert main(["fit", str(colour_splits), "-o", str(tmp_path / "auto"), "--backbone", "tiny", "--resume"]) == 0
    assert "nothing to resume: the plan is a linear classifier" in capsys.readouterr().err


def test_progress_announces_each_phase_and_each_epoch_only_when_asked(colour_splits, tmp_path, capsys):
    argv = ["fit", str(colour_splits), "-o", str(tmp_path / "tuned"), "--backbone", "tiny", "--engine", "torch", "--strategy", "finetune_top", "--epochs", "2"]
    assert main(argv + ["--progress"]) == 0
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[0].startswith("headstart fit: ") and "found 27 images of 3 classes (train 18, test 9)" in err
    assert "codes: 27 images through tiny" in err and "linear head: logistic on 18 codes" in err
    epochs = [line for line in lines if line.startswith("fine-tuning epoch ")]
    assert len(epochs) >= 1 and all(" | held-out loss " in line and " | lr " in line and line.endswith(" s") for line in epochs), epochs
    assert "diagnostics: " in err and "writing " in err
    # resuming says from which epoch
    assert main(argv + ["--resume", "--progress"]) == 0
    assert f"fine-tuning: resuming from {tmp_path / 'tuned' / 'checkpoints'}" in capsys.readouterr().err
    # not a terminal and not asked (capsys): no phase or epoch lines, only warnings; -q: nothing at all
    assert main(argv) == 0
    assert all(line.startswith("warning: ") for line in capsys.readouterr().err.splitlines())
    assert main(argv + ["-q", "--progress"]) == 0 and capsys.readouterr().err == ""


def test_report_rebuilds_the_same_page_from_metrics(run_dir, capsys):
    html = (run_dir / "report.html").read_text()
    (run_dir / "report.html").unlink()
    code, out, _ = run(capsys, "report", run_dir)
    assert code == 0 and str(run_dir / "report.html") in out
    assert (run_dir / "report.html").read_text() == html  # metrics.json alone rebuilds the same page


def test_fit_summary_ends_with_the_verdict(colour_splits, tmp_path, capsys):
    code, out, _ = run(capsys, "fit", colour_splits, "-o", tmp_path / "run", "--backbone", "tiny", "--engine", "torch", "--strategy", "linear")
    lines = out.splitlines()
    verdict = next(i for i, line in enumerate(lines) if line.strip().startswith("verdict"))
    assert "Healthy" in lines[verdict] and all(line.strip().startswith("- ") for line in lines[verdict + 1 :])


def test_inspect_weights_of_a_backbone_and_of_a_run(run_dir, capsys):
    code, out, _ = run(capsys, "inspect", "weights", "tiny")
    assert code == 0 and out.splitlines()[0].startswith("layer") and "features.0.0.weight" in out and "looks untrained" in out
    code, out, _ = run(capsys, "inspect", "weights", run_dir, "--format", "json")
    layers = json.loads(out)["layers"]
    assert code == 0 and layers[-1]["layer"] == "head (new)"


def test_report_and_inspect_fail_in_one_line(tmp_path, capsys):
    code, _, err = run(capsys, "report", tmp_path)
    assert code == 2 and "has no metrics.json" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "report", tmp_path / "mistyped")  # said as missing, not as lacking metrics.json
    assert code == 2 and "mistyped does not exist" in err
    code, _, err = run(capsys, "inspect", "weights", "no_such_backbone")
    assert code == 2 and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "inspect", "weights", tmp_path / "runs" / "mistyped")  # a path: the run is missing, not just a backbone
    assert code == 2 and f"no run directory {tmp_path / 'runs' / 'mistyped'}, and unknown backbone" in err


def test_compare_scratch_adds_the_from_scratch_reference(colour_splits, tmp_path, capsys):
    code, out, _ = run(capsys, "fit", colour_splits, "-o", tmp_path / "run", "--backbone", "tiny", "--engine", "torch", "--strategy", "linear", "--compare-scratch")
    assert code == 0 and "compare     from scratch: scratch_cnn@he_normal, 64 px" in out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [row["model"].split(":")[0] for row in metrics["comparison"]] == ["this run", "from scratch"]
    assert "Against training from scratch" in (tmp_path / "run" / "report.html").read_text()


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_an_interrupted_fit_says_so_once_and_how_to_resume(stop, colour_splits, tmp_path, capsys, monkeypatch):
    import signal

    import headstart.workflow

    def interrupted(*args, **kwargs):
        if stop == "ctrl-c":
            raise KeyboardInterrupt
        handler = signal.getsignal(signal.SIGTERM)  # what SIGTERM (a scheduler's stop) would run now: not the default death
        assert callable(handler), handler
        handler(signal.SIGTERM, None)

    monkeypatch.setattr(headstart.workflow, "fit_folder", interrupted)
    before = signal.getsignal(signal.SIGTERM)
    code = main(["fit", str(colour_splits), "-o", str(tmp_path / "run"), "--strategy", "finetune_top"])
    err = capsys.readouterr().err
    assert code == 130 and err.count("interrupted") == 1 and "rerun the same command with --resume" in err
    assert signal.getsignal(signal.SIGTERM) is before  # given back


def test_ctrl_c_pressed_again_while_a_fit_stops_is_not_a_traceback(tmp_path):
    # An impatient second (and third) Ctrl-C landed in a finaliser while the first unwound: "Exception
    # ignored in: <function tqdm.__del__ ...> KeyboardInterrupt" after the line that says how to resume.
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import write_class_folders

    data = write_class_folders(tmp_path / "data", per_class=12)
    command = [sys.executable, "-m", "headstart", "fit", str(data), "-o", str(tmp_path / "run"), "--backbone", "tiny", "--engine", "torch",
               "--strategy", "finetune_all", "--epochs", "500", "--no-diagnostics", "--progress"]
    env = {**os.environ, "HEADSTART_CACHE": str(tmp_path / "cache")}
    # SIGINT as a terminal's foreground job has it (a job started in the background inherits it ignored)
    fit = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    said = []
    for line in fit.stderr:
        said.append(line)
        if line.startswith("fine-tuning epoch 3/"):
            for pause in (0.0, 0.0, 0.002):  # within the first interrupt's unwinding, as a hurried second press
                time.sleep(pause)
                fit.send_signal(signal.SIGINT)
            break
    said.append(fit.stderr.read())
    err = "".join(said)
    assert fit.wait(timeout=60) == 130, err[-2000:]
    assert "Traceback" not in err and "Exception ignored" not in err, err[-2000:]
    assert err.count("interrupted; finished epochs are checkpointed: rerun the same command with --resume") == 1


def test_a_stopped_nproc_job_says_how_to_resume_and_its_ranks_keep_sigterms_default(colour_splits, tmp_path, capsys, monkeypatch):
    import signal

    import torch.distributed.run
    from torch.distributed.elastic.multiprocessing.api import SignalException

    from headstart.cli import _stop_as_interrupt

    def stopped(config):  # torchrun's agent, sent SIGTERM by a scheduler: the ranks got it too, and died of it
        raise SignalException("stopped", signal.SIGTERM)

    monkeypatch.setattr(torch.distributed.run, "run", stopped)
    code = main(["fit", str(colour_splits), "-o", str(tmp_path / "run"), "--strategy", "finetune_top", "--nproc", "2"])
    err = capsys.readouterr().err
    assert code == 130 and err.count("interrupted") == 1 and "rerun the same command with --resume" in err
    # A rank leaves SIGTERM as it is: torchrun sends it to the survivors when one rank dies, and an
    # interrupt raised wherever the rank was (a finalizer) printed a traceback.
    monkeypatch.setenv("WORLD_SIZE", "2")
    before = signal.getsignal(signal.SIGTERM)
    assert _stop_as_interrupt() is None and signal.getsignal(signal.SIGTERM) is before


def test_the_nproc_launcher_says_it_hands_the_images_over(colour_splits, tmp_path, capsys, monkeypatch):
    import torch.distributed.run

    monkeypatch.setattr(torch.distributed.run, "run", lambda config: None)  # the processes' own work is another test's
    assert main(["--progress", "fit", str(colour_splits), "-o", str(tmp_path / "run"), "--strategy", "linear", "--nproc", "2"]) == 0
    said = [line.rsplit("\r", 1)[-1] for line in capsys.readouterr().err.splitlines()]
    handing = next(i for i, line in enumerate(said) if line.startswith("handing the "))  # a million images: seconds to write, and to read
    assert said[handing].endswith(" images found to 2 processes") and said[handing + 1].startswith("starting 2 processes: torchrun")


def test_every_command_says_what_it_starts_first(run_dir, capsys):
    assert main(["backbones", "--progress"]) == 0
    assert capsys.readouterr().err.splitlines()[0] == "headstart backbones (loading PyTorch)"
    assert main(["report", str(run_dir), "--progress"]) == 0
    assert capsys.readouterr().err.startswith(f"headstart report: rebuilding {run_dir}")


def test_every_argument_of_every_command_says_what_it_is():
    import argparse

    from headstart.cli import build_parser

    def silent(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from silent(sub, f"{path} {name}".strip())
            elif action.help is None and not isinstance(action, argparse._HelpAction):
                yield f"{path}: {action.option_strings[0] if action.option_strings else action.dest}"

    assert list(silent(build_parser(), "")) == []


def test_the_unknown_line_keeps_its_digits_and_says_when_its_threshold_is_unsure():
    from headstart.summary import _rejection_line

    rejection = {"rejected": 0, "false_rejection_rate": 0.0, "threshold": 1.0, "accuracy_on_accepted": 1.0, "accuracy_with_rejection": 1.0}
    assert "(0.0% false rejections, threshold 1.00);" in _rejection_line(rejection, 1.0, 4)  # it read "threshold 1", beside "0.984" elsewhere
    # set from 8 training images' scores, the threshold keeps 95% of images like them with a 34% chance: said
    few = _rejection_line({**rejection, "confidence": 1 - 0.95**8}, 1.0, 4)
    assert "(a 34% chance that it keeps 95% of images like them, not 90%): expect more flags; --no-reject always names a class" in few
    assert "too few" not in _rejection_line({**rejection, "confidence": 0.93}, 1.0, 4)
    every = _rejection_line({**rejection, "rejected": 2, "false_rejection_rate": 1.0, "accuracy_on_accepted": None, "accuracy_with_rejection": 0.0}, 0.5, 2)
    assert "accuracy 50.0% -> no image accepted, 0.0% counting flags as errors" in every  # read "-> none on the accepted"
    # alzheimer_mri4's test scans (new subjects): 273 of 1,279 flagged, where images like the training
    # ones see about 5%: said, not left as "21.3% false rejections" beside a 95% promise
    shifted = _rejection_line({**rejection, "rejected": 273, "false_rejection_rate": 0.213, "confidence": 0.9, "more_than_calibrated": True}, 0.629, 1279)
    assert "21% flagged, where the threshold flags about 5% of images like the training ones: these images differ from them" in shifted
    assert "differ from them" not in _rejection_line({**rejection, "more_than_calibrated": False}, 1.0, 4)


def test_the_command_ends_at_once_with_its_output_and_exit_code(fitted_run, colour_splits, tmp_path):
    """`headstart` leaves without Python's shutdown (1.5 s of tearing PyTorch down): its output is
    whole, its exit code kept, and a reader that left early (`| head`) costs no traceback."""
    import subprocess
    import sys

    image = sorted((colour_splits / "test" / "red").iterdir())[0]
    env = {**os.environ, "HEADSTART_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "headstart", "-q", "predict", str(fitted_run), str(image), "--format", "csv"]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.splitlines()[1].startswith(f"{image},1,red,")  # the whole table, flushed before leaving
    missing = subprocess.run([*command[:-3], str(tmp_path / "gone.jpg")], capture_output=True, text=True, env=env)
    assert missing.returncode == 2 and missing.stderr.startswith("error: ")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    process.stdout.close()  # the reader is gone before a line is written
    stderr = process.communicate()[1].decode()
    assert process.returncode == 141 and stderr == ""  # was: "Exception ignored ... BrokenPipeError", exit 120
