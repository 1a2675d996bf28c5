"""Find labelled images on disk: class folders, split folders, or a CSV/TSV of ``path,label``.

The result is a :class:`Dataset`: a list of candidate images with labels and splits, plus the files
that were passed over and why. Nothing is decoded here (but a file named as the segmentation mask
of an image beside it, checked black and white); decoding happens once, in the feature pass.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import tarfile
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Hashable, Iterable, Sequence

import numpy as np
from PIL import Image

from .. import progress
from .._memory import collector_paused
from .._text import shortened
from ..errors import DataError
from .decode import IMAGE_EXTENSIONS, open_file, sniff_format
from .images import ImageSource
from .duplicates import own_group_where_missing, place_groups

log = logging.getLogger(__name__)

Label = Hashable

# Folder names accepted as splits, mapped to their canonical name.
SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
# Operating-system litter that is never an image; skipped silently but counted.
_IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini", ".ds_store", "icon\r"})
# Cameras' raw files, passed over by name: most begin as a TIFF whose first picture is a small
# preview (Pillow would read a NEF as its 160x120 thumbnail), and a camera shooting RAW+JPEG puts
# the JPEG, which is read, beside each one.
_RAW_EXTENSIONS = frozenset({".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".dng", ".orf", ".rw2", ".raf", ".pef", ".srw", ".x3f", ".3fr", ".iiq", ".rwl"})
# Folders of such litter: macOS's resource forks in a zip made on a Mac (hidden folders are passed over too).
_IGNORED_FOLDERS = frozenset({"__MACOSX"})

# A segmentation mask saved beside its image, as in BUSI ("benign (1)_mask.png", "..._mask_1.png")
# or ISIC ("..._segmentation.png"): not an image to classify, and often telling of its class (a
# "normal" scan's mask is all black), so training on masks would teach and score the wrong thing.
MASK_NAME = re.compile(r"^(?P<image>.+?)[ _-](?:mask|seg|segmentation)(?:[ _-]?\d+)?$", re.IGNORECASE)
MASK_REASON = "segmentation mask of"
# A mask is black and white: at least this share of its pixels within an eighth of either end
# (edges blur in JPEG and in drafting; a 40-pixel ellipse mask saved at JPEG quality 70 keeps 99.6%,
# where a photo or a scan keeps its mid-greys).
MASK_EXTREME_SHARE = 0.95

# A CSV row naming a file that is not there.
MISSING_FILE = "missing file"
TEST_SIZE = 0.2  # the share held out for testing where the data give no split
JSON_LINES = (".jsonl",)  # Hugging Face's imagefolder labels its images in metadata.jsonl (or metadata.csv)

MIN_IMAGES_PER_CLASS = 2
WARN_IMAGES_PER_CLASS = 5


@dataclass(frozen=True)
class ImageRecord:
    """One labelled image file; ``split`` is "train", "val", "test" or "pool" (not yet split)."""

    path: Path
    label: Label
    split: str
    group: str | None = None  # a CSV's group column (a subject id, say): kept on one side of every split made for choosing


@dataclass(frozen=True)
class Skipped:
    """A file passed over, with the reason in a few words."""

    path: Path
    reason: str
    split: str = "pool"  # the split it would have been in (evaluate reports only its own split's)

    @property
    def kind(self) -> str:
        """What the summary counts it as, the one place reasons are sorted: "not an image",
        "mask" (beside its image), "missing" (listed in a CSV, not on disk) or "unreadable"."""
        if self.reason == "not an image":
            return "not an image"
        if self.reason.startswith(MASK_REASON):
            return "mask"
        return "missing" if self.reason == MISSING_FILE else "unreadable"


@dataclass
class Dataset:
    """Images found under ``root`` and what was passed over.

    ``layout`` is "folders" (root/CLASS/img), "splits" (root/SPLIT/CLASS/img) or "csv".
    """

    root: Path
    layout: str
    records: list[ImageRecord]
    skipped: list[Skipped] = field(default_factory=list)
    source: str = ""  # the folder or CSV as load_dataset was given it, for what a summary names
    seconds_to_find: float = 0.0  # load_dataset's search: a fit given the dataset counts it among its phases

    def split(self, name: str) -> list[ImageRecord]:
        return [r for r in self.records if r.split == name]

    @property
    def splits(self) -> list[str]:
        order = ["train", "val", "test", "pool"]
        present = {r.split for r in self.records}
        return [s for s in order if s in present]

    @property
    def eval_split(self) -> str | None:
        """The held-out split reported as the model's accuracy: test if given, else val."""
        for name in ("test", "val"):
            if any(r.split == name for r in self.records):
                return name
        return None

    @property
    def split_to_evaluate(self) -> str:
        """The split a fitted model is evaluated on: the held-out one, else every image there is."""
        return self.eval_split or self.splits[0]

    @property
    def classes(self) -> list[Label]:
        return sorted({r.label for r in self.records}, key=_label_sort_key)

    def unreadable(self) -> list[Path]:
        """Files that look like images by name or content but cannot be read."""
        return [s.path for s in self.skipped if s.kind == "unreadable"]

    def counts(self, split: str | None = None) -> Counter:
        return Counter(r.label for r in self.records if split is None or r.split == split)

    def to_json(self) -> str:
        """What was found, as JSON (labels are text or integers, as found): the ``--nproc``
        launcher hands its search to the processes it starts (a million images take minutes to find)."""
        records = [[str(r.path), r.label, r.split, r.group] for r in self.records]
        skipped = [[str(s.path), s.reason, s.split] for s in self.skipped]
        found = {"root": str(self.root), "layout": self.layout, "source": self.source, "seconds_to_find": self.seconds_to_find}
        return json.dumps(found | {"records": records, "skipped": skipped})

    @classmethod
    def from_json(cls, text: str) -> "Dataset":
        with collector_paused():
            found = json.loads(text)
            records = [ImageRecord(Path(path), label, split, group) for path, label, split, group in found["records"]]
            skipped = [Skipped(Path(path), reason, split) for path, reason, split in found["skipped"]]
        return cls(Path(found["root"]), found["layout"], records, skipped, found["source"], found["seconds_to_find"])


def _label_sort_key(label: Label):
    # Integers sort numerically and before strings, so mixed labels never raise.
    return (0, label, "") if isinstance(label, (int, np.integer)) else (1, 0, str(label))


def check_exists(source: str | os.PathLike) -> Path:
    """``source`` as a path ('~' expanded), refused in one line when there is nothing there."""
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"{path} does not exist; give a folder of class folders or a CSV of path,label rows.")
    return path


def load_dataset(
    source: str | os.PathLike,
    *,
    test_size: float = TEST_SIZE,
    random_state: int = 0,
    allow_outside: bool = False,
    split: bool = True,
) -> Dataset:
    """Discover a labelled image dataset and make sure it has a train and a held-out split.

    Parameters
    ----------
    source : path
        A folder laid out as ``root/CLASS/image`` or ``root/SPLIT/CLASS/image`` (SPLIT among train,
        val/valid/validation, test), or a CSV/TSV file of ``path,label`` rows with paths relative
        to the file's folder.
    test_size : float
        Fraction of each class held out when the data come as one pool.
    random_state : int
        Seed of that stratified split, so the same folder always splits the same way.
    allow_outside : bool
        Let CSV paths point outside the CSV's folder (absolute paths, ``..``, or symlinks).
    split : bool
        Hold out a stratified test split when the data have none (off for evaluation data).
    """
    if not 0.0 < test_size < 1.0:
        raise DataError(f"test_size must be between 0 and 1 (a share of each class), got {test_size}.")
    started = time.perf_counter()
    path = check_exists(source)
    with collector_paused():  # the search makes a record per image, and a split remakes each
        dataset = _from_csv(path, allow_outside=allow_outside) if path.is_file() else _from_folders(path)
        dataset.source = str(source)
        if split:
            dataset = _checked_and_split(dataset, path, test_size, random_state)
    dataset.seconds_to_find = time.perf_counter() - started
    return dataset


def _checked_and_split(dataset: Dataset, path: Path, test_size: float, random_state: int) -> Dataset:
    if dataset.layout != "folders" and "train" not in dataset.splits and "pool" not in dataset.splits:
        raise DataError(f"{path} has {', '.join(dataset.splits)} split(s) but no train split; add a train/ folder.")
    check_held_out_classes(dataset)  # first: a class only test/ holds is not a "small" class to warn about
    check_class_sizes(dataset)
    if dataset.eval_split is None or "train" not in dataset.splits:
        dataset = stratified_split(dataset, test_size=test_size, random_state=random_state)
    return dataset


def _from_folders(root: Path) -> Dataset:
    subdirs = [d for d in sorted(root.iterdir()) if _may_hold_a_class(d)]
    if not subdirs and (table := _labels_beside_images(root)):
        return _from_csv(table, allow_outside=False)
    if not subdirs:
        raise DataError(f"{root} has no sub-folders; put each class's images in root/CLASS_NAME/.")
    split_dirs = {d: SPLIT_NAMES.get(d.name.lower()) for d in subdirs}
    _warn_unlabelled(root)
    if all(split_dirs.values()):
        records, skipped = [], []
        for split_dir, split in split_dirs.items():
            r, s = _scan_split(split_dir, split)
            records += r
            skipped += s
        layout = "splits"
    else:
        if any(split_dirs.values()):
            named = ", ".join(d.name for d, s in split_dirs.items() if s)
            log.warning("treating %s as classes, since other folders in %s are not split names", named, root)
        records, skipped = _scan_class_dirs(subdirs, "pool")
        layout = "folders"
    if not records:
        raise DataError(f"no images found under {root}; expected root/CLASS/image or root/SPLIT/CLASS/image.")
    return Dataset(root=root, layout=layout, records=records, skipped=skipped)


def _scan_split(split_dir: Path, split: str) -> tuple[list[ImageRecord], list[Skipped]]:
    """A split folder's images: in class folders, or lying loose beside the one CSV that labels them."""
    class_dirs = [d for d in sorted(split_dir.iterdir()) if _may_hold_a_class(d)]
    if not class_dirs and (table := _labels_beside_images(split_dir)):
        listed = _from_csv(table, allow_outside=False)
        return [replace(r, split=split) for r in listed.records], [replace(s, split=split) for s in listed.skipped]
    _warn_unlabelled(split_dir)
    return _scan_class_dirs(class_dirs, split)


def _labels_beside_images(folder: Path) -> Path | None:
    """The one CSV, TSV or JSON Lines file lying among a folder's loose images, which labels them,
    as Roboflow's classification export has it (``train/_classes.csv``: a file name and a 0/1
    column per class) and Hugging Face's imagefolder (``train/metadata.jsonl``)."""
    tables = [f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in (".csv", ".tsv", *JSON_LINES)]
    return tables[0] if len(tables) == 1 and any(f.is_file() and classify_file(f) is None for f in folder.iterdir()) else None


def _may_hold_a_class(folder: Path) -> bool:
    """A visible folder that is not litter, nor a run headstart saved there (``fit photos -o
    photos/run`` puts one beside the classes; it is passed over, not warned about as a class
    without images)."""
    return folder.is_dir() and not _passed_over(folder.name) and not (folder / "model.json").is_file()


def _passed_over(folder_name: str) -> bool:
    """A hidden folder or a zip's litter: never searched for images."""
    return folder_name.startswith(".") or folder_name in _IGNORED_FOLDERS


def _warn_unlabelled(split_dir: Path) -> None:
    """Images lying in the root or a split folder itself, outside any class folder, have no label
    (Kaggle's ``test/`` often holds the competition's unlabelled images): say they are not used."""
    loose = [f for f in split_dir.iterdir() if f.is_file() and classify_file(f) is None]
    if loose:
        log.warning(
            "%s holds %d image(s) outside class folders, which have no label and are not used; predict them with: headstart predict RUN %s",
            split_dir, len(loose), split_dir,
        )


def files_under(folder: Path) -> list[Path]:
    """Every file under ``folder``, sorted, but those in hidden folders (Jupyter's
    ``.ipynb_checkpoints`` holds copies of the images beside it) and in a zip's ``__MACOSX``.

    Linked folders are followed (a class folder of ``ln -s /data/set/ants batch1`` links was "no
    images found"), each real folder once, so a link back to a folder above ends instead of looping."""
    found, seen = [], set()
    for where, folders, names in os.walk(folder, followlinks=True):
        seen.add(os.path.realpath(where))
        folders[:] = [d for d in folders if not _passed_over(d) and os.path.realpath(os.path.join(where, d)) not in seen]
        found += [Path(where) / name for name in names]
    return sorted(found)


def _scan_class_dirs(class_dirs: Iterable[Path], split: str) -> tuple[list[ImageRecord], list[Skipped]]:
    records, skipped, empty = [], [], []
    where = "" if split == "pool" else f" ({split})"
    for class_dir in progress.bar(class_dirs, desc=f"finding images{where}", unit="class"):  # 100,000 images take ~12 s
        found = len(records)
        files = files_under(class_dir)
        reasons = {file: classify_file(file) for file in files}
        reasons |= masks_beside_their_images([file for file in files if reasons[file] is None])
        for file in files:
            if reasons[file] is None:
                records.append(ImageRecord(file, class_dir.name, split))
            else:
                skipped.append(Skipped(file, reasons[file], split))
        if len(records) == found:
            empty.append(str(class_dir))
    if empty:  # a class whose images failed to copy would otherwise just be missing from the model
        log.warning("folder(s) %s hold no images, so they are not classes", shortened(empty))
    return records, skipped


def masks_beside_their_images(images: Sequence[Path]) -> dict[Path, str]:
    """The images that are segmentation masks of another in the same folder (named after it, and
    black and white), each with the reason it is passed over."""
    stems = {(image.parent, image.stem) for image in images}
    masks = {}
    for image in images:
        named = MASK_NAME.match(image.stem)
        if named and (image.parent, named["image"]) in stems and _black_and_white(image):
            masks[image] = f"{MASK_REASON} {named['image']}"
    return masks


def _black_and_white(path: Path) -> bool:
    try:
        with open_file(path) as image:
            image.draft("L", (64, 64))  # JPEG decodes at 1/8 scale; enough to tell a mask
            counts = np.asarray(image.convert("L").histogram())
    except (OSError, ValueError, Image.DecompressionBombError):
        return False  # the feature pass will say what is wrong with it
    return counts[:32].sum() + counts[224:].sum() >= MASK_EXTREME_SHARE * counts.sum()


def kinds_of(paths: Iterable[Path]) -> dict[str, int]:
    """How many files of each kind (extension, or name without one), most first: what a count of
    files passed over shows, so that photos in a format nothing here reads (a camera's .cr2 raw
    files) stand out among the notes and Thumbs.db."""
    return dict(sorted(Counter(path.suffix.lower() or path.name for path in paths).items(), key=lambda kind: (-kind[1], kind[0])))


def is_raw_photo(path: Path) -> bool:
    """A camera's raw file, told by its extension (its content starts as a TIFF's)."""
    return path.suffix.lower() in _RAW_EXTENSIONS


def classify_file(path: Path) -> str | None:
    """Return None for a file that looks like an image, else the reason it is skipped."""
    if path.name.lower() in _IGNORED_NAMES or path.name.startswith(".") or is_raw_photo(path):
        return "not an image"
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if sniff_format(head):
        return None
    if head[128:132] == b"DICM":  # a DICOM file's preamble is 128 bytes, then its magic
        return "unreadable (a DICOM file: convert it to PNG, or read its pixels with pydicom and pass the arrays to TransferClassifier)"
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return "unreadable (not a recognised image format)" if head else "unreadable (empty file)"
    return "not an image"


def _from_csv(csv_path: Path, *, allow_outside: bool) -> Dataset:
    base = csv_path.parent.resolve()
    rows = _read_label_rows(csv_path)
    labels = _parse_labels([label for _, label, _, _ in rows])
    folder, suffix = _id_pattern(base, [rel for rel, _, _, _ in rows], csv_path)
    records, skipped = [], []
    for (rel, _, split, group), label in zip(rows, labels):
        if folder is not None and not (base / rel).exists():
            rel = f"{folder}/{rel}{suffix}" if folder else f"{rel}{suffix}"
        file = _resolve_inside(base, rel, csv_path, allow_outside)
        if not file.is_file():
            skipped.append(Skipped(file, MISSING_FILE, split))
            continue
        reason = classify_file(file)
        if reason is None:
            records.append(ImageRecord(file, label, split, group))
        else:
            skipped.append(Skipped(file, reason, split))
    if not records:
        missing = [s.path for s in skipped if s.kind == "missing"]
        where = f": none of its {len(missing)} paths is a file (the first would be {missing[0]})" if len(missing) == len(skipped) and missing else ""
        raise DataError(f"{csv_path} lists no readable images{where}; each row needs path,label with paths relative to the CSV's folder.")
    _refuse_rows_that_relabel(records, csv_path, base)
    return Dataset(root=base, layout="csv", records=records, skipped=skipped)


def _refuse_rows_that_relabel(records: list[ImageRecord], csv_path: Path, base: Path) -> None:
    """One file listed on several rows with different labels is multi-label data in long form (one
    row per image and tag): trained as it is, each copy pulls the head towards another class."""
    labels_of: dict[Path, set] = {}
    for record in records:
        labels_of.setdefault(record.path, set()).add(record.label)
    relabelled = {path: sorted(map(str, labels)) for path, labels in labels_of.items() if len(labels) > 1}
    if relabelled:
        path, labels = next(iter(relabelled.items()))
        raise DataError(
            f"{csv_path} lists {len(relabelled)} image(s) on several rows with different labels, e.g. {os.path.relpath(path, base)} as {' and '.join(labels)}; "
            "headstart trains one class per image: keep one row per image (multi-label data are not supported)."
        )


def _id_pattern(base: Path, paths: list[str], csv_path: Path) -> tuple[str | None, str]:
    """The (folder, extension) that turns a CSV's image ids into files, as Kaggle's ``train.csv``
    names ``0004be2c`` for ``train/0004be2c.jpg`` (fastai asks for ``folder=`` and ``suffix=``; here
    they are found); (None, "") when the paths name files as they are. Found from the first listed
    path that is not a file, and kept only when it is the one folder and extension that makes it
    one; said in a warning, since it reads the CSV other than as written."""
    missing = next((rel for rel in paths if not (base / rel).exists()), None)
    if missing is None or "/" in missing or "\\" in missing:
        return None, ""
    name = Path(missing).name
    matches = {
        (file.parent.relative_to(base).as_posix(), file.name[len(name):])
        for file in base.rglob(f"{glob_escape(name)}*")
        if file.is_file() and (file.name == name or (file.stem == name and file.suffix.lower() in IMAGE_EXTENSIONS))
    }
    if len(matches) != 1:
        if matches:
            raise DataError(
                f"{csv_path} names {missing}, which is no file beside it but is found as "
                f"{' and '.join(sorted(f'{f}/{name}{x}' for f, x in matches)[:3])}; write the paths with their folder (relative to the CSV)."
            )
        return None, ""
    folder, suffix = matches.pop()
    folder = "" if folder == "." else folder
    log.warning("%s lists image ids, not paths: reading %s as %s%s%s", csv_path.name, missing, f"{folder}/" if folder else "", missing, suffix)
    return folder, suffix


def glob_escape(text: str) -> str:
    """``text`` matched literally by Path.glob ([, ], * and ? bracketed)."""
    return re.sub(r"([\[\]*?])", r"[\1]", text)


def is_archive(path: Path) -> bool:
    """A zip or tar file (compressed or not): what a dataset download is before it is unpacked."""
    return zipfile.is_zipfile(path) or tarfile.is_tarfile(path)


def archive_refusal(path: Path) -> str:
    return f"{path} is an archive: unpack it first (unzip or tar -xf) and give the folder it makes."


def _table_text(path: Path) -> str:
    """A labels file's text, or a one-line refusal of what people give instead: an archive (a
    Kaggle download), one image, or another binary file. Excel on Windows writes CSVs in
    Windows-1252, read as such where the bytes are not UTF-8."""
    data = path.read_bytes()
    if is_archive(path):
        raise DataError(archive_refusal(path))
    if classify_file(path) is None:
        raise DataError(f"{path} is one image; give the folder that holds the class folders, or a CSV of path,label rows.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        if b"\0" in data[:8192]:
            raise DataError(f"{path} is not a CSV (it holds binary data); give a folder of class folders or a CSV of path,label rows.") from None
        log.warning("%s is not UTF-8: read as Windows-1252, as Excel writes it", path)
        return data.decode("cp1252", errors="replace")


def _delimiter(first_line: str, csv_path: Path) -> str:
    """Tabs for a TSV; semicolons where the first line has them and no comma (Excel writes its
    CSVs so where the comma is the decimal mark: German, French); else commas."""
    if csv_path.suffix.lower() == ".tsv" or "\t" in first_line:
        return "\t"
    return ";" if ";" in first_line and "," not in first_line else ","


def _read_label_rows(csv_path: Path) -> list[tuple[str, str, str, str | None]]:
    """Rows of (path, label, split, group); a header row and an optional third 'split' column are
    allowed, and a header may name a 'group' column (a subject id, say) anywhere after the label."""
    text = _table_text(csv_path)
    if csv_path.suffix.lower() in JSON_LINES:
        table = _json_lines_table(text, csv_path)
    else:
        table = [row for row in csv.reader(text.splitlines(), delimiter=_delimiter(text.split("\n", 1)[0], csv_path)) if row and any(c.strip() for c in row)]
    if not table:
        raise DataError(f"{csv_path} is empty; write one path,label row per image.")
    header = [c.strip().lower() for c in table[0]][:2]
    has_header = (
        csv_path.suffix.lower() in JSON_LINES
        or header in (["path", "label"], ["filename", "label"], ["file", "label"], ["image", "label"])
        or _looks_like_a_header(table, csv_path.parent)
    )
    names = [c.strip().lower() for c in table[0]] if has_header else []
    split_column = names.index("split") if "split" in names else 2
    group_column = names.index("group") if "group" in names else None
    if has_header:
        header_row, table = table[0], table[1:]
        table = _one_hot_to_labels(header_row, [i for i in range(1, len(names)) if names[i] not in ("split", "group")], table, csv_path) or table
    rows = []
    for number, row in enumerate(table, start=2 if has_header else 1):
        if len(row) < 2:
            raise DataError(f"{csv_path} line {number} has {len(row)} column(s); expected path,label.")
        if not row[1].strip():
            raise DataError(f"{csv_path} line {number} has no label for {row[0].strip()}; label the row or remove it.")
        split = SPLIT_NAMES.get(row[split_column].strip().lower(), "pool") if len(row) > split_column and row[split_column].strip() else "pool"
        group = row[group_column].strip() or None if group_column is not None and len(row) > group_column else None
        rows.append((row[0].strip(), row[1].strip(), split, group))
    return rows


def _json_lines_table(text: str, path: Path) -> list[list[str]]:
    """Hugging Face's ``metadata.jsonl`` (one object per image: ``file_name`` and its label) as a
    table whose header row is the objects' keys: ``file_name`` first, then ``label`` where there is
    one, then the rest (a ``split`` or ``group`` key keeps its meaning)."""
    objects = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} line {number} is not JSON ({exc.msg}); write one object per line, such as {{\"file_name\": \"a.jpg\", \"label\": \"cat\"}}.") from None
        if not isinstance(item, dict) or "file_name" not in item:
            raise DataError(f"{path} line {number} has no \"file_name\"; write one object per line, such as {{\"file_name\": \"a.jpg\", \"label\": \"cat\"}}.")
        objects.append(item)
    if not objects:
        return []
    keys = list(dict.fromkeys(key for item in objects for key in item))
    keys = ["file_name"] + (["label"] if "label" in keys else []) + [k for k in keys if k not in ("file_name", "label")]
    return [keys] + [["" if item.get(k) is None else str(item.get(k)) for k in keys] for item in objects]


def _one_hot_to_labels(header: list[str], columns: list[int], table: list[list[str]], csv_path: Path) -> list[list[str]] | None:
    """A table of one 0/1 column per class (ISIC's ``image,MEL,NV,BCC,...``) as path,label rows,
    each labelled by the column that holds its 1; None for a table of labels. Read as labels, its
    first class column would silently become a two-class "MEL or not" problem."""
    if len(columns) < 2 or not table or header[1].strip().lower() in ("label", "labels", "class", "category", "target"):
        return None  # a column named as the label is one, whatever columns follow it
    try:
        marks = np.array([[float(row[i]) for i in columns] for row in table])
    except (ValueError, IndexError):
        return None
    if not np.isin(marks, (0.0, 1.0)).all():
        return None
    per_row = marks.sum(axis=1)
    if (per_row != 1).any():
        line = int(np.flatnonzero(per_row != 1)[0]) + 2
        raise DataError(
            f"{csv_path} has one 0/1 column per class, and line {line} marks {int(per_row[line - 2])} of them; "
            "headstart trains one class per image: keep one mark per row (multi-label data are not supported)."
        )
    classes = [header[i].strip() for i in columns]
    return [[row[0], classes[int(np.argmax(mark))], *row[2:]] for row, mark in zip(table, marks)]  # split and group columns stay where they were


def _looks_like_a_header(table: list[list[str]], base: Path) -> bool:
    """A first row of column names other than ours (Kaggle's ``id,has_cactus``): its path names no
    file and has neither folder nor extension, and its label is no other row's (a class of one
    image is refused anyway)."""
    first = table[0]
    name = first[0].strip() if len(first) >= 2 else ""
    if len(table) < 2 or not name or any(c in name for c in "./\\") or (base / name).exists():
        return False
    return all(len(row) < 2 or row[1].strip() != first[1].strip() for row in table[1:])


def _parse_labels(raw: Sequence[str]) -> list[Label]:
    """Integers stay integers (labels 1..15 give classes 1..15); anything else stays a string.
    Labels read as integers only when each is written as its integer is ("007" is a code, and
    reading it as 7 would print another name and merge it with a class "7")."""
    try:
        numbers = [int(v) for v in raw]
    except ValueError:
        return list(raw)
    return numbers if all(str(n) == v.strip() for n, v in zip(numbers, raw)) else list(raw)


def _resolve_inside(base: Path, rel: str, csv_path: Path, allow_outside: bool) -> Path:
    if "\\" in rel and not (base / rel).exists():  # a CSV written on Windows: data\cats\1.jpg
        rel = rel.replace("\\", "/")
    candidate = Path(rel)
    full = candidate if candidate.is_absolute() else base / candidate
    if allow_outside:
        return full
    resolved = full.resolve()
    if candidate.is_absolute() or not resolved.is_relative_to(base):
        raise DataError(
            f"{csv_path} refers to {rel}, which lies outside {base}; "
            "move the images under the CSV's folder or pass allow_outside=True (--allow-outside)."
        )
    return full


def check_class_sizes(dataset: Dataset) -> None:
    """Refuse classes too small to train and evaluate on; warn about classes that are merely small."""
    counts = dataset.counts()
    tiny = sorted((str(c) for c, n in counts.items() if n < MIN_IMAGES_PER_CLASS))
    respelt = _respelt_classes(counts)
    if tiny:
        renames = [f"{name} -> {larger}" for name, larger in respelt if str(name) in tiny]
        fix = f"they look like other classes spelt another way ({shortened(renames)}): rename them to match" if renames else "add images or remove those classes"
        raise DataError(f"class(es) {shortened(tiny)} have fewer than {MIN_IMAGES_PER_CLASS} images; {fix}.")
    if respelt:  # "A" and "a" may be two classes (letters), "Ants" and "ants" rarely are
        pairs = [f"{name} -> {larger}" for name, larger in respelt]
        log.warning("class(es) differ only in case (%s); if each pair is one class, rename to match, since class names are compared exactly", shortened(pairs))
    if len(counts) < 2:
        raise DataError(f"found only one class ({next(iter(counts))}); a classifier needs at least 2 classes.{_classes_one_level_down(dataset)}")
    small = sorted((str(c) for c, n in counts.items() if n < WARN_IMAGES_PER_CLASS))
    if small:
        log.warning("class(es) %s have fewer than %d images; results will be noisy", shortened(small), WARN_IMAGES_PER_CLASS)


def _respelt_classes(counts: dict) -> list[tuple]:
    """``("TWO", "two")`` for each class whose name is another's but for case or spaces, the
    smaller class with the larger."""
    by_spelling: dict[str, list] = {}
    for name in counts:
        by_spelling.setdefault(_spelling(name), []).append(name)
    pairs = []
    for names in by_spelling.values():
        largest = max(names, key=lambda name: (counts[name], str(name)))  # a tie: the same pair every time
        pairs += [(name, largest) for name in sorted(names, key=str) if name != largest]
    return pairs


def _spelling(name) -> str:
    """A class name as compared for respellings: case and surrounding spaces left out."""
    return str(name).casefold().strip()


def _classes_one_level_down(dataset: Dataset) -> str:
    """Where the one class's images lie in folders of their own (``data/images/CLASS/``, given
    ``data``), the folder to give instead; else nothing."""
    if dataset.layout != "folders":
        return ""
    folder = dataset.root / str(dataset.records[0].label)
    inner = sorted({r.path.relative_to(folder).parts[0] for r in dataset.records if folder in r.path.parents[1:]})
    return f" Its images lie in {len(inner)} folders ({shortened(inner)}): if those are the classes, give {folder}." if len(inner) > 1 else ""


def check_labels_known(dataset: Dataset, classes: Sequence) -> None:
    """Refuse evaluation data whose held-out split has labels that are none of a model's ``classes``."""
    unknown = sorted({str(r.label) for r in dataset.split(dataset.split_to_evaluate)} - {str(c) for c in classes})
    if not unknown:
        return
    renames = respellings(unknown, classes)
    inside = respellings([Path(dataset.source).name], classes) and dataset.layout == "folders"  # given one class's folder, not the folder of classes
    raise DataError(
        f"labels {', '.join(unknown[:5])} are not among the model's classes ({', '.join(map(str, classes[:10]))}); "
        + (f"rename them to match ({shortened(renames)}), since class names are compared exactly." if renames
           else f"{dataset.source} is named as one class: give the folder that holds the class folders." if inside
           else f"evaluate on data with the same class names{_scored_apart(dataset, unknown)}.")
    )


def _scored_apart(dataset: Dataset, unknown: list[str]) -> str:
    """Where a label's images lie in one folder: how to score them as none of the classes instead
    (what a user who adds an 'other' folder to see the novelty detector at work wants)."""
    folders = sorted({str(r.path.parent) for r in dataset.split(dataset.split_to_evaluate) if str(r.label) in unknown})
    if dataset.layout == "csv" or len(folders) != len(unknown):
        return ""
    moved = " ".join(folders[:5])
    return f" (to see how many images of none of them the model flags as unknown, move {moved} out and give it with --none-of-these)"


def respellings(names: Iterable, known: Iterable) -> list[str]:
    """``"Ants -> ants"`` for each of ``names`` that is one of ``known`` but for case or spaces."""
    by_case = {_spelling(k): str(k) for k in known}
    return [f"{name} -> {by_case[_spelling(name)]}" for name in names if _spelling(name) in by_case]


def check_held_out_classes(dataset: Dataset) -> None:
    """Refuse a val or test split holding a class the train split lacks: no model can predict it,
    and scoring it would fail after the whole fit."""
    if "train" not in dataset.splits:
        return
    trained = {r.label for r in dataset.split("train")}
    for split in ("val", "test"):
        extra = sorted({str(r.label) for r in dataset.split(split) if r.label not in trained})
        if extra:
            where = f"{split}/" if dataset.layout == "splits" else f"the {split} split"
            renames = respellings(extra, trained)
            if renames:  # "Ants" in val/, "ants" in train/: one class spelt two ways
                train = "train/" if dataset.layout == "splits" else "the train split"
                raise DataError(f"{where} names class(es) as {train} does not ({shortened(renames)}); rename them to match, since class names are compared exactly.")
            raise DataError(
                f"{where} has class(es) {shortened(extra)} with no training images, and a model learns only the classes it is shown: "
                f"add their training images, or move them out of {where} ('headstart evaluate RUN DATA --none-of-these FOLDER' "
                "counts how many images of other classes a model flags)."
            )


def stratified_split(dataset: Dataset, *, test_size: float = TEST_SIZE, random_state: int = 0) -> Dataset:
    """Split the pool (or a lone train split) into train and test, keeping every class in both."""
    source_split = "pool" if "pool" in dataset.splits else "train"
    pool = dataset.split(source_split)
    others = [r for r in dataset.records if r.split != source_split]
    rng = np.random.default_rng(random_state)
    by_class: dict[Label, list[ImageRecord]] = {}
    for record in pool:
        by_class.setdefault(record.label, []).append(record)
    for label, members in by_class.items():
        if len(members) < MIN_IMAGES_PER_CLASS:
            raise DataError(
                f"class {label} has {len(members)} image(s) in the {source_split} split; "
                f"it needs {MIN_IMAGES_PER_CLASS} to hold one out for testing."
            )
    split_records = []
    for label in sorted(by_class, key=_label_sort_key):
        members = by_class[label]
        order = rng.permutation(len(members))
        n_test = min(max(1, round(len(members) * test_size)), len(members) - 1)
        held_out = set(order[:n_test].tolist())
        for i, record in enumerate(members):
            split_records.append(replace(record, split="test" if i in held_out else "train"))
    return replace(dataset, records=others + _groups_on_one_side(split_records, test_size))


def _groups_on_one_side(records: list[ImageRecord], test_size: float) -> list[ImageRecord]:
    """``records`` with each group of a CSV's group column, and each set of copies of one file,
    wholly in train or wholly in test: a subject, or a picture, on both sides would make the test
    accuracy partly a measure of memory (the fit's duplicates line called it leakage, of a split
    headstart had made itself)."""
    copies = _copies(records)
    if not copies and not any(r.group for r in records):
        return records
    side = np.array([r.split == "test" for r in records], dtype=int)
    labels = np.array([str(r.label) for r in records])
    groups = [r.group or copies.get(i) for i, r in enumerate(records)]
    side = place_groups(side, labels, own_group_where_missing(groups), np.array([1 - test_size, test_size]))
    return [replace(r, split="test" if s else "train") for r, s in zip(records, side)]


def _copies(records: list[ImageRecord]) -> dict[int, str]:
    """A group name for each record whose file has the same bytes as another of its class's. Only
    files of a size that two or more of a class share are read (most photos' sizes are their own),
    so this costs a stat per file. Copies in two classes (a label conflict, which the fit reports)
    are left where they fall: kept together, a class could lose all its training or test images."""
    by_size: dict[tuple[str, int], list[int]] = {}
    for i, record in enumerate(records):
        try:
            by_size.setdefault((str(record.label), os.path.getsize(record.path)), []).append(i)
        except OSError:
            continue  # said where it is read
    groups: dict[int, str] = {}
    for same_size in (members for members in by_size.values() if len(members) > 1):
        by_content: dict[str, list[int]] = {}
        for i in same_size:
            try:
                by_content.setdefault(ImageSource(records[i].path).open().content_hash, []).append(i)
            except OSError:
                continue
        for members in (members for members in by_content.values() if len(members) > 1):
            groups.update(dict.fromkeys(members, f"\0copies of {records[members[0]].path}"))
    return groups
