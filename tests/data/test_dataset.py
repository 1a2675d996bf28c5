import logging
import os

import pytest

from headstart.data import load_dataset
from headstart.data.dataset import Dataset
from headstart.errors import DataError
from tests.conftest import write_class_folders


def test_class_folders_get_a_stratified_split(colour_folders):
    dataset = load_dataset(colour_folders, test_size=0.34)
    assert dataset.layout == "folders"
    assert dataset.classes == ["blue", "green", "red"]
    assert dataset.splits == ["train", "test"]
    assert all(n == 2 for n in dataset.counts("test").values())
    assert all(n == 4 for n in dataset.counts("train").values())
    # The same seed always splits the same way.
    again = load_dataset(colour_folders, test_size=0.34)
    assert [r.path for r in again.split("test")] == [r.path for r in dataset.split("test")]


def test_copies_of_a_file_stay_on_one_side_of_the_split_headstart_makes(tmp_path):
    """A scraped folder holds the same picture under two names: split apart, the copy in the test
    split scored the one the model learnt (and the fit then called its own split leakage)."""
    import shutil

    pool = write_class_folders(tmp_path / "pool", per_class=20)
    for path in sorted(pool.glob("*/*.png"))[::2]:
        shutil.copyfile(path, path.with_name(f"copy of {path.name}"))
    dataset = load_dataset(pool, test_size=0.5)
    sides: dict[bytes, set] = {}
    for record in dataset.records:
        sides.setdefault(record.path.read_bytes(), set()).add(record.split)
    assert len(sides) == 60 and all(len(s) == 1 for s in sides.values())  # 30 pictures twice, each on one side
    assert all(10 <= n <= 20 for n in dataset.counts("test").values())  # every class still held out about half
    assert load_dataset(pool, test_size=0.5).records == dataset.records  # and the same way every time


def test_split_folders_are_used_as_given(colour_splits):
    dataset = load_dataset(colour_splits)
    assert dataset.layout == "splits"
    assert dataset.eval_split == "test"
    assert sum(dataset.counts("train").values()) == 18


@pytest.mark.parametrize("name", ["val", "valid", "validation", "Test"])
def test_split_folder_aliases(tmp_path, name):
    write_class_folders(tmp_path / "train", per_class=3)
    write_class_folders(tmp_path / name, per_class=2)
    dataset = load_dataset(tmp_path)
    assert dataset.eval_split in ("val", "test")


def test_non_images_are_skipped_and_counted(colour_folders):
    (colour_folders / "red" / "Thumbs.db").write_bytes(b"\x00\x01junk")
    (colour_folders / "red" / ".DS_Store").write_bytes(b"junk")
    (colour_folders / "red" / "notes.txt").write_text("shot on a sunny day")
    (colour_folders / "red" / "broken.jpg").write_bytes(b"definitely not a jpeg")
    dataset = load_dataset(colour_folders)
    reasons = sorted(s.reason for s in dataset.skipped)
    assert reasons.count("not an image") == 3
    assert [p.name for p in dataset.unreadable()] == ["broken.jpg"]
    assert len(dataset.records) == 18


def test_iphone_photos_are_read_and_dicom_files_named(colour_folders):
    import pillow_heif
    from PIL import Image

    pillow_heif.register_heif_opener()  # for its encoder: fitting reads HEIC without this line
    Image.new("RGB", (32, 24), (200, 30, 30)).save(colour_folders / "red" / "IMG_0001.HEIC")
    Image.new("RGB", (32, 24), (200, 30, 30)).save(colour_folders / "red" / "shot.avif")
    (colour_folders / "red" / "scan.dcm").write_bytes(bytes(128) + b"DICM" + bytes(64))
    dataset = load_dataset(colour_folders)
    assert {"IMG_0001.HEIC", "shot.avif"} <= {r.path.name for r in dataset.records}
    assert [(s.path.name, s.reason) for s in dataset.skipped] == [("scan.dcm", "unreadable (a DICOM file: convert it to PNG, or read its pixels with pydicom and pass the arrays to TransferClassifier)")]
    # its size from the header, which chooses the input size, in a process that has decoded no HEIC yet (it was unknown: read at 224 px, not 288)
    import subprocess
    import sys

    header = "from headstart.data.images import ImageSource; print(ImageSource(r'%s').pixel_size())" % (colour_folders / "red" / "IMG_0001.HEIC")
    assert subprocess.run([sys.executable, "-c", header], capture_output=True, text=True, check=True).stdout.strip() == "(32, 24)"


def test_files_passed_over_are_counted_by_kind(colour_folders):
    from headstart.workflow import describe_found

    for name in ("IMG_1.CR2", "IMG_2.CR2", "IMG_3.cr2", "notes.txt", "Thumbs.db", "README"):
        (colour_folders / "red" / name).write_bytes(b"\x00\x01 a camera's raw file, or a note")
    words = describe_found(load_dataset(colour_folders))
    assert words.endswith("passed over 6 non-image file(s) (3 .cr2, 1 .db, 1 .txt, ...), 0 unreadable")


def test_csv_with_integer_labels_keeps_them(tmp_path):
    write_class_folders(tmp_path / "img", per_class=3)
    rows = ["path,label"]
    for number, name in ((1, "red"), (2, "green"), (15, "blue")):
        rows += [f"img/{name}/{i:02d}.png,{number}" for i in range(3)]
    (tmp_path / "labels.csv").write_text("\n".join(rows))
    dataset = load_dataset(tmp_path / "labels.csv")
    assert dataset.classes == [1, 2, 15]
    assert dataset.layout == "csv"
    # written on Windows: backslashes between folders
    (tmp_path / "windows.csv").write_text("\n".join(row.replace("/", "\\") for row in rows))
    assert [r.path for r in load_dataset(tmp_path / "windows.csv", split=False).records] == [r.path for r in load_dataset(tmp_path / "labels.csv", split=False).records]
    # codes with leading zeros are names: read as integers they would print "7" and merge "007" with "7"
    (tmp_path / "codes.csv").write_text("\n".join(rows).replace(",15", ",015").replace(",2", ",002"))
    assert load_dataset(tmp_path / "codes.csv").classes == ["002", "015", "1"]


def test_tsv_without_header(tmp_path):
    write_class_folders(tmp_path, per_class=2)
    lines = [f"{name}/{i:02d}.png\t{name}" for name in ("red", "blue") for i in range(2)]
    (tmp_path / "labels.tsv").write_text("\n".join(lines))
    assert load_dataset(tmp_path / "labels.tsv").classes == ["blue", "red"]


@pytest.mark.parametrize("escape", ["../outside.png", "/etc/passwd", "link.png"])
def test_csv_paths_may_not_escape_its_folder(tmp_path, escape):
    base = tmp_path / "base"
    write_class_folders(base, per_class=2)
    write_class_folders(tmp_path, per_class=1, colours={"x": (1, 2, 3)})
    (tmp_path / "outside.png").write_bytes((tmp_path / "x" / "00.png").read_bytes())
    os.symlink(tmp_path / "outside.png", base / "link.png")
    rows = [f"red/0{i}.png,red" for i in range(2)] + [f"blue/0{i}.png,blue" for i in range(2)] + [f"{escape},blue"]
    (base / "labels.csv").write_text("\n".join(rows))
    with pytest.raises(DataError, match="outside"):
        load_dataset(base / "labels.csv")
    if escape != "/etc/passwd":
        assert len(load_dataset(base / "labels.csv", allow_outside=True).records) == 5


def test_class_with_one_image_is_an_error(colour_folders):
    for extra in list((colour_folders / "red").iterdir())[1:]:
        extra.unlink()
    with pytest.raises(DataError, match="red have fewer than 2 images"):
        load_dataset(colour_folders)


def test_classes_spelt_two_ways_in_a_csv_are_named(tmp_path, caplog):
    # a hand-made CSV: "TWO" once among "two"s was refused as a class of one image with no word of why
    write_class_folders(tmp_path, per_class=4, colours={"a": (200, 0, 0), "b": (0, 0, 200)})
    rows = ["path,label"] + [f"a/{i:02d}.png,{'TWO' if i == 0 else 'two'}" for i in range(4)] + [f"b/{i:02d}.png,ten" for i in range(4)]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"class\(es\) TWO have fewer than 2 images; they look like other classes spelt another way \(TWO -> two\): rename them"):
        load_dataset(tmp_path / "labels.csv")
    # two of each spelling: they may be two classes (letters "A" and "a"), so a warning, not an error
    (tmp_path / "labels.csv").write_text("\n".join(rows).replace("a/01.png,two", "a/01.png,TWO") + "\n")
    with caplog.at_level(logging.WARNING):
        assert sorted(load_dataset(tmp_path / "labels.csv").classes) == ["TWO", "ten", "two"]
    assert "class(es) differ only in case (TWO -> two)" in caplog.text


def test_class_with_few_images_warns(colour_folders, caplog):
    for extra in list((colour_folders / "red").iterdir())[3:]:
        extra.unlink()
    with caplog.at_level(logging.WARNING):
        load_dataset(colour_folders)
    assert "fewer than 5 images" in caplog.text


def test_many_small_classes_are_named_a_dozen_at_a_time(tmp_path, caplog):
    colours = {f"c{i:02d}": (i * 9, 100, 200 - i * 9) for i in range(20)}
    write_class_folders(tmp_path, per_class=3, colours=colours)
    with caplog.at_level(logging.WARNING):
        load_dataset(tmp_path)
    assert "c00, c01, c02, c03, c04, c05, c06, c07, c08, c09, c10, c11, ... (8 more) have fewer than 5 images" in caplog.text


def test_one_class_is_an_error(tmp_path):
    write_class_folders(tmp_path / "a", per_class=4, colours={"only": (1, 1, 1)})
    with pytest.raises(DataError, match=r"only one class \(only\); a classifier needs at least 2 classes\.$"):
        load_dataset(tmp_path / "a")
    # data/images/CLASS/, given data: the one "class" holds the classes
    write_class_folders(tmp_path / "b" / "images", per_class=3)
    with pytest.raises(DataError, match=r"only one class \(images\).* Its images lie in 3 folders \(blue, green, red\): if those are the classes, give .*b/images\.$"):
        load_dataset(tmp_path / "b")


@pytest.mark.parametrize("make, message", [(lambda p: p, "no sub-folders"), (lambda p: p / "nope", "does not exist")])
def test_unusable_roots(tmp_path, make, message):
    with pytest.raises(DataError, match=message):
        load_dataset(make(tmp_path))


def test_kaggle_csv_of_ids_finds_its_image_folder(tmp_path, caplog):
    # train.csv beside train/, a header of its own (id,has_red) and ids without folder or extension
    write_class_folders(tmp_path / "images", per_class=3)
    (tmp_path / "train").mkdir()
    rows = ["id,has_red"]
    for name in ("red", "blue"):
        for i, image in enumerate(sorted((tmp_path / "images" / name).iterdir())):
            image.rename(tmp_path / "train" / f"{name[0]}{i}.png")
            rows.append(f"{name[0]}{i},{int(name == 'red')}")
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    dataset = load_dataset(tmp_path / "train.csv", split=False)
    assert dataset.classes == [0, 1] and len(dataset.records) == 6 and not dataset.skipped
    assert dataset.records[0].path == tmp_path / "train" / "r0.png"
    assert "reading r0 as train/r0.png" in caplog.text
    # the same ids in two folders: which one is meant cannot be told
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "r0.png").write_bytes((tmp_path / "train" / "r0.png").read_bytes())
    with pytest.raises(DataError, match="found as test/r0.png and train/r0.png; write the paths with their folder"):
        load_dataset(tmp_path / "train.csv")
    # ids that name nothing: the error says where the first was looked for
    (tmp_path / "nothing.csv").write_text("path,label\nq1,a\nq2,b\n")
    with pytest.raises(DataError, match=f"none of its 2 paths is a file \\(the first would be {tmp_path / 'q1'}\\)"):
        load_dataset(tmp_path / "nothing.csv")


def test_a_file_given_for_the_data_is_a_csv_or_said_to_be_what_it_is(tmp_path, caplog):
    import shutil

    write_class_folders(tmp_path / "photos", per_class=3)
    archive = shutil.make_archive(str(tmp_path / "photos"), "zip", tmp_path / "photos")  # a Kaggle download, not unpacked
    for given, said in ((archive, "is an archive: unpack it first"), (tmp_path / "photos" / "red" / "00.png", "is one image; give the folder that holds the class folders")):
        with pytest.raises(DataError, match=said):
            load_dataset(given)
    (tmp_path / "model.bin").write_bytes(b"\x00\x93binary" * 10)
    with pytest.raises(DataError, match="is not a CSV \\(it holds binary data\\)"):
        load_dataset(tmp_path / "model.bin")
    # Excel on Windows writes Windows-1252: accented class names read as written (it was a traceback)
    rows = [f"photos/{name}/{i:02d}.png,{label}" for name, label in (("red", "caf\xe9"), ("blue", "th\xe9")) for i in range(3)]
    (tmp_path / "excel.csv").write_bytes("\n".join(["path,label", *rows]).encode("cp1252"))
    with caplog.at_level(logging.WARNING):
        assert load_dataset(tmp_path / "excel.csv", split=False).classes == ["café", "thé"]
    assert "excel.csv is not UTF-8: read as Windows-1252" in caplog.text


def test_csv_of_one_column_per_class_is_read_as_labels(tmp_path):
    # ISIC's ground truth: image,MEL,NV,BCC,UNK with a 1.0 under each image's class
    write_class_folders(tmp_path, per_class=3)
    classes = ["red", "green", "blue"]
    rows = ["image,RED,GREEN,BLUE,UNK"] + [f"{name}/{i:02d}.png," + ",".join("1.0" if c == name else "0.0" for c in classes) + ",0.0" for name in classes for i in range(3)]
    (tmp_path / "truth.csv").write_text("\n".join(rows))
    dataset = load_dataset(tmp_path / "truth.csv", split=False)
    assert sorted(dataset.classes) == ["BLUE", "GREEN", "RED"] and all(r.label == r.path.parent.name.upper() for r in dataset.records)
    rows[2] = rows[2].replace("0.0", "1.0", 1)  # two classes marked: multi-label, which one class per image cannot hold
    (tmp_path / "truth.csv").write_text("\n".join(rows))
    with pytest.raises(DataError, match="line 3 marks 2 of them"):
        load_dataset(tmp_path / "truth.csv")
    # a label column followed by 0/1 columns of something else is a label column
    (tmp_path / "flags.csv").write_text("path,label,flagged\n" + "\n".join(f"{n}/{i:02d}.png,{int(n == 'red')},1" for n in classes for i in range(3)))
    assert load_dataset(tmp_path / "flags.csv", split=False).classes == [0, 1]


@pytest.mark.parametrize("header", ["path;label\r\n", ""])
def test_a_csv_excel_wrote_with_semicolons_is_read(tmp_path, header):
    # where the comma is the decimal mark (German, French), Excel's "CSV" separates with semicolons
    write_class_folders(tmp_path, per_class=3)
    rows = [f"{name}/{i:02d}.png;{name}" for name in ("red", "green", "blue") for i in range(3)]
    (tmp_path / "labels.csv").write_bytes(("\ufeff" + header + "\r\n".join(rows) + "\r\n").encode("utf-8"))
    dataset = load_dataset(tmp_path / "labels.csv", split=False)
    assert len(dataset.records) == 9 and all(r.label == r.path.parent.name for r in dataset.records)


def test_csv_listing_one_image_under_two_labels_is_refused_as_multi_label(tmp_path):
    # long-form multi-label data (one row per image and tag) was trained as given, each copy pulling another way
    write_class_folders(tmp_path, per_class=3)
    rows = [f"{name}/{i:02d}.png,{name}" for name in ("red", "green", "blue") for i in range(3)]
    (tmp_path / "tags.csv").write_text("path,label\n" + "\n".join(rows + ["red/00.png,round", "red/00.png,red"]))
    with pytest.raises(DataError, match=r"lists 1 image\(s\) on several rows with different labels, e.g. red/00.png as red and round; .*keep one row per image"):
        load_dataset(tmp_path / "tags.csv")


def test_split_folders_of_loose_images_labelled_by_a_csv_beside_them(tmp_path):
    # Roboflow's classification export: train/ and valid/ each hold their images and _classes.csv
    from tests.conftest import colour_image

    for split, seed in (("train", 0), ("valid", 50)):
        (tmp_path / split).mkdir()
        rows = ["filename, blue, red"]
        for i in range(8):
            red = i % 2 == 1
            colour_image((200, 30, 30) if red else (30, 30, 200), seed=seed + i).save(tmp_path / split / f"img{i}_jpg.rf.a{i}.jpg")
            rows.append(f"img{i}_jpg.rf.a{i}.jpg," + ("0,1" if red else "1,0"))
        (tmp_path / split / "_classes.csv").write_text("\n".join(rows))
    dataset = load_dataset(tmp_path)
    assert dataset.layout == "splits" and dataset.eval_split == "val" and dataset.classes == ["blue", "red"]
    assert dataset.counts("train") == {"blue": 4, "red": 4} and dataset.counts("val") == {"blue": 4, "red": 4}
    assert all(r.label == ("red" if int(r.path.name[3]) % 2 else "blue") for r in dataset.records)
    assert load_dataset(tmp_path / "train", split=False).counts() == {"blue": 4, "red": 4}  # one such folder alone


def test_hugging_face_imagefolder_metadata_jsonl_labels_its_images(tmp_path):
    # datasets' imagefolder: train/ and test/ each hold their images and metadata.jsonl (file_name first, other keys kept)
    import json

    from tests.conftest import colour_image

    for split, seed in (("train", 0), ("test", 50)):
        (tmp_path / split).mkdir()
        lines = []
        for i in range(6):
            label = "red" if i % 2 else "blue"
            colour_image((200, 30, 30) if i % 2 else (30, 30, 200), seed=seed + i).save(tmp_path / split / f"{i}.png")
            lines.append(json.dumps({"caption": f"photo {i}", "file_name": f"{i}.png", "label": label, "group": f"s{i}"}))
        (tmp_path / split / "metadata.jsonl").write_text("\n".join(lines) + "\n\n")
    dataset = load_dataset(tmp_path)
    assert dataset.layout == "splits" and dataset.classes == ["blue", "red"]
    assert dataset.counts("train") == {"blue": 3, "red": 3} and dataset.counts("test") == {"blue": 3, "red": 3}
    assert all(r.label == ("red" if int(r.path.stem) % 2 else "blue") for r in dataset.records)
    assert {r.group for r in dataset.records if r.split == "train"} == {f"s{i}" for i in range(6)}
    # the file given itself, and a line that is not JSON named with its number
    assert load_dataset(tmp_path / "train" / "metadata.jsonl", split=False).counts() == {"blue": 3, "red": 3}
    with (tmp_path / "train" / "metadata.jsonl").open("a") as f:
        f.write('{"file_name": "7.png", \n')
    with pytest.raises(DataError, match=r"metadata.jsonl line 8 is not JSON .*write one object per line"):
        load_dataset(tmp_path)


def test_hidden_folders_and_zip_litter_hold_no_images(tmp_path, caplog):
    # Jupyter keeps copies of images in .ipynb_checkpoints beside them; a zip made on a Mac adds __MACOSX
    write_class_folders(tmp_path, per_class=3)
    (tmp_path / "red" / ".ipynb_checkpoints").mkdir()
    (tmp_path / "red" / ".ipynb_checkpoints" / "00-checkpoint.png").write_bytes((tmp_path / "red" / "00.png").read_bytes())
    (tmp_path / "__MACOSX" / "red").mkdir(parents=True)
    (tmp_path / "__MACOSX" / "red" / "00.png").write_bytes((tmp_path / "red" / "00.png").read_bytes())
    dataset = load_dataset(tmp_path, split=False)
    assert sorted(dataset.classes) == ["blue", "green", "red"] and len(dataset.records) == 9
    assert "__MACOSX" not in caplog.text
    # a run saved beside the classes (fit photos -o photos/run) is no class either, nor warned about as one
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.json").write_text("{}")
    assert sorted(load_dataset(tmp_path, split=False).classes) == ["blue", "green", "red"] and "run" not in caplog.text


def test_linked_folders_are_followed_once(tmp_path):
    # a class folder of links to where the images live (ln -s /data/set/red batch1) was "no images found"
    write_class_folders(tmp_path / "store", per_class=3)
    for name in ("red", "green", "blue"):
        (tmp_path / "set" / name).mkdir(parents=True)
        (tmp_path / "set" / name / "batch1").symlink_to(tmp_path / "store" / name, target_is_directory=True)
    (tmp_path / "set" / "red" / "again").symlink_to(tmp_path / "set" / "red", target_is_directory=True)  # a loop: walked once
    dataset = load_dataset(tmp_path / "set", split=False)
    assert dataset.counts() == {"blue": 3, "green": 3, "red": 3}
    from headstart.data.dataset import files_under

    assert len(files_under(tmp_path / "set")) == 9


def test_unlabelled_images_in_a_split_folder_are_said_to_be_unused(tmp_path, caplog):
    # Kaggle's layout: train/CLASS/ labelled, test/ the competition's unlabelled images
    write_class_folders(tmp_path / "train", per_class=3)
    (tmp_path / "test").mkdir()
    for image in sorted((tmp_path / "train" / "red").iterdir()):
        (tmp_path / "test" / image.name).write_bytes(image.read_bytes())
    dataset = load_dataset(tmp_path, split=False)
    assert dataset.splits == ["train"] and len(dataset.records) == 9
    assert f"{tmp_path / 'test'} holds 3 image(s) outside class folders, which have no label and are not used" in caplog.text
    (tmp_path / "train" / "stray.png").write_bytes((tmp_path / "test" / "00.png").read_bytes())  # beside class folders, as the root
    caplog.clear()
    assert len(load_dataset(tmp_path / "train", split=False).records) == 9
    assert f"{tmp_path / 'train'} holds 1 image(s) outside class folders" in caplog.text


def test_empty_csv(tmp_path):
    (tmp_path / "labels.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        load_dataset(tmp_path / "labels.csv")


def test_csv_row_without_label(tmp_path):
    (tmp_path / "labels.csv").write_text("a.png\n")
    with pytest.raises(DataError, match="line 1 has 1 column"):
        load_dataset(tmp_path / "labels.csv")
    # a blank label is a row left unlabelled, not a class named ""
    (tmp_path / "labels.csv").write_text("path,label\na.png,cat\nb.png, \n")
    with pytest.raises(DataError, match="line 3 has no label for b.png"):
        load_dataset(tmp_path / "labels.csv")


def test_split_folders_without_train(tmp_path):
    write_class_folders(tmp_path / "val", per_class=2)
    write_class_folders(tmp_path / "test", per_class=2)
    with pytest.raises(DataError, match="no train split"):
        load_dataset(tmp_path)


def test_test_size_must_be_a_share():
    with pytest.raises(DataError, match="between 0 and 1"):
        load_dataset(".", test_size=20)


def test_a_held_out_class_that_train_lacks_is_refused_before_any_work(tmp_path, caplog):
    write_class_folders(tmp_path / "train", per_class=3, colours={"red": (200, 0, 0), "blue": (0, 0, 200)})
    write_class_folders(tmp_path / "test", per_class=2)  # red, green, blue: green was never trained
    with pytest.raises(DataError, match=r"test/ has class\(es\) green with no training images"):
        load_dataset(tmp_path)
    assert "fewer than" not in caplog.text  # green was warned about as a small class before the error
    assert load_dataset(tmp_path, split=False).splits  # evaluation data is not refused for it
    # the same class spelt otherwise ("Green" in val/, "green" in train/) is named as such, with the fix
    write_class_folders(tmp_path / "train", per_class=3, colours={"green": (0, 200, 0)})
    (tmp_path / "test" / "green").rename(tmp_path / "test" / "Green")
    with pytest.raises(DataError, match=r"test/ names class\(es\) as train/ does not \(Green -> green\); rename them"):
        load_dataset(tmp_path)


def test_a_class_folder_without_images_is_named_in_a_warning(tmp_path, caplog):
    write_class_folders(tmp_path, per_class=3)
    (tmp_path / "wasps").mkdir()  # its images failed to copy
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not an image")
    assert sorted(load_dataset(tmp_path).classes) == ["blue", "green", "red"]
    assert f"folder(s) {tmp_path / 'notes'}, {tmp_path / 'wasps'} hold no images, so they are not classes" in caplog.text


def test_segmentation_masks_beside_their_images_are_passed_over_and_counted(tmp_path):
    from PIL import Image, ImageDraw

    from headstart.workflow import describe_found
    from tests.conftest import colour_image

    write_class_folders(tmp_path, per_class=3)
    mask = Image.new("L", (40, 40))
    ImageDraw.Draw(mask).ellipse((5, 5, 30, 25), fill=255)
    mask.save(tmp_path / "red" / "00_mask.png")  # BUSI's naming, black and white
    mask.convert("RGB").save(tmp_path / "red" / "00_mask_1.jpg", quality=70)  # a second mask, JPEG-blurred
    mask.save(tmp_path / "blue" / "01-segmentation.png")
    colour_image((200, 0, 0), seed=9).save(tmp_path / "red" / "01_mask.png")  # a photo so named: kept
    mask.save(tmp_path / "green" / "lone_mask.png")  # no image beside it: kept
    dataset = load_dataset(tmp_path, split=False)
    masks = {s.path.name: s.reason for s in dataset.skipped}
    assert masks == {"00_mask.png": "segmentation mask of 00", "00_mask_1.jpg": "segmentation mask of 00", "01-segmentation.png": "segmentation mask of 01"}
    assert {"01_mask.png", "lone_mask.png"} <= {r.path.name for r in dataset.records}
    assert describe_found(dataset) == "found 11 images of 3 classes (pool 11); passed over 0 non-image file(s), 3 segmentation mask(s) of images beside them, 0 unreadable"


def test_the_search_of_class_folders_shows_a_bar_when_progress_is_on(colour_splits, capsys):
    from headstart import progress

    with progress.shown(True):
        load_dataset(colour_splits)
    shown = capsys.readouterr().err
    assert "finding images (train)" in shown and "finding images (test)" in shown and "class/s" in shown
    load_dataset(colour_splits)  # progress off: nothing on standard error
    assert capsys.readouterr().err == ""


def test_what_was_found_round_trips_through_json(tmp_path, colour_folders):
    (colour_folders / "red" / "notes.txt").write_text("not an image")
    (colour_folders / "blue" / "empty.png").write_bytes(b"")
    folders = load_dataset(colour_folders, test_size=0.5)
    write_class_folders(tmp_path / "img", per_class=4)
    rows = ["path,label,group"] + [f"img/{name}/{i:02d}.png,{number},subject{i % 2}" for number, name in ((1, "red"), (15, "blue")) for i in range(4)]
    (tmp_path / "labels.csv").write_text("\n".join(rows))
    table = load_dataset(tmp_path / "labels.csv", split=False)
    for found in (folders, table):
        again = Dataset.from_json(found.to_json())
        assert again == found and again.records[0].path == found.records[0].path  # Paths, integer labels and groups kept
    assert {s.kind for s in folders.skipped} == {"not an image", "unreadable"} and table.classes == [1, 15] and table.records[0].group == "subject0"


def test_the_search_pauses_the_garbage_collector_and_leaves_it_as_it_was(tmp_path, colour_folders, monkeypatch):
    import gc

    from headstart.data import dataset

    during = []
    classify = dataset.classify_file
    monkeypatch.setattr(dataset, "classify_file", lambda path: (during.append(gc.isenabled()), classify(path))[1])
    load_dataset(colour_folders)
    assert during and not any(during) and gc.isenabled()  # off while a record per image is made, then on
    (tmp_path / "nothing" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no images found"):  # raised while it is off
        load_dataset(tmp_path / "nothing")
    assert gc.isenabled()
    gc.disable()
    try:
        load_dataset(colour_folders)
        assert not gc.isenabled()  # a caller's choice stays
    finally:
        gc.enable()
