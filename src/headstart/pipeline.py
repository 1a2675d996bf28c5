"""The one fitting pipeline: check, advise, codes, head, fine-tune, record.

    check_params -> advisor.advise (strategy="auto") -> resolve -> codes -> linear head
                 -> fine-tuning (when the recipe says so) -> FittedModel

``TransferClassifier.fit`` and ``fit_folder`` both call :func:`fit_model`; prediction for either
kind of model goes through :func:`predict_scores`.
"""

from __future__ import annotations

import copy
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np

from . import advisor, distributed, progress
from ._memory import release_freed_memory
from ._text import shortened
from .backbones import get_backbone
from .data import grouped_hold_out, near_duplicate_groups
from .data.augment import MIRRORING_STEPS, mirror_warning, policy_steps
from .data.images import ImageSource, as_sources
from .errors import DataError
from .features import Codes
from .fitted import MODEL_PARAMS, FittedModel
from .hardware import resolve_device
from .recipe import Recipe, Runtime, check_params, input_size, needs_plan, resolve
from .strategies import LinearHead, fit_linear_head
from .strategies.ensemble import averaged_logits
from .strategies.finetune import finetune, network_outputs
from .strategies.linear import choose_solver, out_of_fold_logits
from .strategies.novelty import BANK_LIMIT, MIN_EXAMPLES, NoveltyDetector, fit_calibrated, fit_on_held_out
from .training.tensorboard import TensorBoardLog

log = logging.getLogger(__name__)

# Share of the training images held out for early stopping when fine-tuning.
EARLY_STOPPING_SHARE = 0.15


@dataclass
class Fit:
    record: FittedModel
    codes: Codes  # of every image given: the training images, then the others
    extractor: object  # what computed them (CodeExtractor or ConcatExtractor), for reuse
    seconds_codes: float  # reading, decoding and the backbone (or the cache)
    groups: np.ndarray  # a group number per readable training image: near duplicates and given groups share one


def fit_model(
    params: dict, images: Sequence, labels, *, groups=None, others: Sequence = (), none_of_these: Sequence = (), started: float | None = None,
) -> Fit:
    """Fit on ``images`` with ``labels`` as ``params`` (the estimator's) say. ``groups`` (one value per
    image, such as a subject id) keeps images that belong together on one side of every split made
    for choosing, as near duplicates are kept. ``others`` (a held-out
    split, say) get their codes in the same pass and are never fitted on; ``none_of_these``, images
    of none of the classes, teach the novelty score what they look like; ``started`` (a
    ``time.perf_counter()`` value) is when the work began, for ``time_budget``. With
    ``params["progress"]`` every phase is announced and shows its progress."""
    params = {**params, "progress": progress.wanted(params["progress"])}  # "auto" decided once; the phases read a switch
    with progress.shown(params["progress"]):
        return _fit_model(params, images, labels, groups, others, as_sources(none_of_these), time.perf_counter() if started is None else started)


def _fit_model(params: dict, images: Sequence, labels, groups, others: Sequence, examples: list, started: float) -> Fit:
    check_params(params)
    world = distributed.current()
    sources, labels = checked_input(images, labels)
    if groups is not None and len(groups) != len(sources):
        raise DataError(f"got {len(groups)} groups for {len(sources)} images; give one group per image (a subject id, say), or none.")
    if 0 < len(examples) < MIN_EXAMPLES:
        raise DataError(f"got {len(examples)} image(s) of none of these; give at least {MIN_EXAMPLES}, or none.")
    asked, params = params, {**params, "input_size": input_size(params, sources)}  # the record keeps what was asked
    plan = world.from_main(lambda: make_plan(params, sources, labels)) if needs_plan(params) else None
    recipe = resolve(params, plan)
    extractor = Runtime.from_params(params).extractor(recipe.backbone, recipe.tap, params["input_size"])
    tick = time.perf_counter()
    everything = sources + as_sources(others)
    progress.announce(f"codes: {len(everything) + len(examples)} images through {recipe.backbone} at {extractor.tap} (those cached before are read back)")
    every_code = _codes(extractor, everything + examples, params["progress"], world)
    codes = every_code.subset(np.arange(len(everything)))
    example_codes = every_code.subset(np.arange(len(everything), len(everything) + len(examples)))
    refuse_labelled_examples(examples, readable_hashes(example_codes), set(filter(None, readable_hashes(codes))))
    none_of_these = _readable_examples(examples, example_codes, params["strict"])
    seconds_codes = time.perf_counter() - tick
    train = codes.subset(np.arange(len(sources)))
    ok = train.ok
    if codes.failures:
        if params["strict"]:
            raise unreadable_error(codes.failures, everything, "or fit without strict to skip them")
        if not ok.any():
            raise DataError(f"none of the {len(sources)} training images can be read ({failures_in_words(codes.failures, everything)}).")
        log.warning("skipping %d unreadable image(s) (%s)", len(codes.failures), failures_in_words(codes.failures, everything))
    classes, y_index = np.unique(labels[ok], return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"need images of at least 2 classes, but the data contain only {', '.join(map(str, classes))}.")
    # Near duplicates (re-encodes, neighbouring slices) stay together in every split made for choosing
    given = np.asarray(groups)[ok] if groups is not None else None
    groups = near_duplicate_groups([train.content_hashes[i] for i in np.flatnonzero(ok)], train.phashes[ok], given, labels=y_index)
    head, report = _linear_head(params, train.codes[ok], y_index, world, groups)
    if given is not None and report.duplicate_groups is not None:
        report = replace(report, duplicate_groups={**report.duplicate_groups, "given": True})
    record = FittedModel(
        classes=classes, head=head, head_report=report, strategy=recipe.strategy, backbone=recipe.backbone, tap=extractor.tap,
        preprocessing=extractor.preprocessing, fingerprint=extractor.fingerprint, n_train=int(ok.sum()), skipped=dict(train.failures),
        plan=plan, params=copy.deepcopy({name: asked[name] for name in MODEL_PARAMS}),
        run={**world.describe(), "device": resolve_device(params["device"]).type},
    )
    readable = [s for s, good in zip(sources, ok) if good]
    held = _train_network(record, recipe, params, readable, y_index, groups, started)
    if record.network is None:
        record.novelty = world.from_main(lambda: _novelty_detector(params, train.codes[ok], y_index, groups, head, report, none_of_these.codes))
    else:
        record.novelty = world.from_main(lambda: _network_novelty_detector(record, params, readable, y_index, groups, held, train.codes[ok], none_of_these))
    if none_of_these.images and record.novelty is None:
        log.warning("the %d images of none of these were not used: this model has no novelty detector to teach", len(none_of_these.images))
    return Fit(record, codes, extractor, seconds_codes, groups)


def _novelty_detector(
    params: dict, codes: np.ndarray, y_index: np.ndarray, groups: np.ndarray, head: LinearHead, report, shown: np.ndarray,
) -> NoveltyDetector | None:
    """The "none of these" detector on the head's codes (taught by the codes ``shown`` of images of
    none of the classes, where there are some), its threshold set from the training
    images' out-of-fold scores (keeping at least 95% of images like them, with 90% confidence); None where it cannot be calibrated (a class of one image, or the
    mini-batch solver's scale, whose head is not refitted per fold)."""
    if report.solver != "sklearn" or np.bincount(y_index).min() < 2:
        return None
    progress.announce(f"novelty: out-of-fold scores of the {len(y_index):,} training images set the 'none of these' threshold")
    try:
        logits = out_of_fold_logits(codes, y_index, params["classifier"], report, groups=groups, random_state=params["random_state"])
    except ValueError as exc:
        log.info("no novelty detector: %s", exc)
        return None
    examples = (shown, head.decision_function(shown)) if len(shown) else None
    return fit_calibrated(codes, y_index, logits, groups=groups, random_state=params["random_state"] or 0, examples=examples)


# Images a fine-tuned network's detector is made from, at most: its bank, and of those the
# held-out ones that calibrate it (a pass of the network over each; beyond, a random sample).
HELD_LIMIT = 10_000
MIN_HELD = 10  # fewer held-out images cannot place a 95% threshold


class Examples(NamedTuple):
    """Readable images of none of the classes, and their codes from the fit's extractor."""

    images: list
    codes: np.ndarray


def readable_hashes(codes: Codes) -> list[str | None]:
    """Each image's content hash, None where it could not be read."""
    return [h if good else None for h, good in zip(codes.content_hashes, codes.ok)]


def refuse_labelled_examples(examples: list, example_hashes: Sequence[str | None], labelled_hashes: set[str]) -> None:
    """Refuse images of none of these that are also labelled images (a class folder given as
    ``--none-of-these``): fitting, the score would learn the classes' own images as unknown;
    evaluating, it would count them as missed unknowns."""
    both = [i for i, h in enumerate(example_hashes) if h is not None and h in labelled_hashes]
    if both:
        first = getattr(examples[both[0]], "path", None) or f"image #{both[0]}"
        raise DataError(
            f"{len(both)} of the images of none of these are labelled images too (the first: {first}); "
            "an image cannot be one of the classes and none of them: give images of no class."
        )


def _readable_examples(images: list, codes: Codes, strict: bool) -> Examples:
    """The images of none of these that could be read (with ``strict``, all must be), at least
    ``MIN_EXAMPLES`` of them when there are any."""
    if codes.failures and strict:
        raise DataError(f"{len(codes.failures)} of the images of none of these could not be read; fix or remove them, or fit without strict to skip them.")
    if codes.failures:
        log.warning("skipping %d unreadable image(s) of none of these", len(codes.failures))
    readable = Examples([image for image, good in zip(images, codes.ok) if good], codes.codes[codes.ok])
    if 0 < len(images) and len(readable.images) < MIN_EXAMPLES:
        raise DataError(f"only {len(readable.images)} of the images of none of these could be read; give at least {MIN_EXAMPLES} readable ones, or none.")
    return readable


def _network_novelty_detector(
    record: FittedModel, params: dict, images: list, y_index: np.ndarray, groups: np.ndarray, held: np.ndarray, head_codes: np.ndarray,
    none_of_these: Examples,
) -> NoveltyDetector | None:
    """The "none of these" detector of a fine-tuned network, on its penultimate codes: kNN over the
    training images' codes (the network's, not the pretrained ones), calibrated on early stopping's
    held-out images, which the weights never learnt from (with the network's, or the ensemble's, logits)."""
    if len(held) < MIN_HELD:
        log.warning(
            "no 'none of these' detector: early stopping held out %d images, too few to set its threshold (%d or more; "
            "a linear fit calibrates on every training image): this model never answers 'unknown'", len(held), MIN_HELD,
        )
        return None
    rng = np.random.default_rng(params["random_state"] or 0)
    held = _sample(rng, held, HELD_LIMIT)
    learnt = _sample(rng, np.setdiff1d(np.arange(len(images)), held), BANK_LIMIT - len(held))
    progress.announce(f"novelty: the fine-tuned network's codes of {len(learnt) + len(held):,} training images, its threshold from the {len(held):,} held out")
    batch, shown = params["batch_size"] or 32, params["progress"]
    _, learnt_codes, _ = network_outputs(record.network, [images[i] for i in learnt], record.preprocessing, with_codes=True, batch_size=batch, progress=shown, desc="novelty bank")
    held_logits, held_codes, _ = network_outputs(record.network, [images[i] for i in held], record.preprocessing, with_codes=True, batch_size=batch, progress=shown, desc="novelty threshold")
    if record.ensembled:
        held_logits = _held_ensemble_logits(record, params, held_logits, head_codes, y_index, groups, held)
        if held_logits is None:
            return None
    # Both passes read images fine-tuning already read; a file changed since is left out.
    learnt_ok, held_ok = np.isfinite(learnt_codes).all(axis=1), np.isfinite(held_codes).all(axis=1)
    rows = np.concatenate([learnt[learnt_ok], held[held_ok]])
    held_index = np.arange(learnt_ok.sum(), len(rows))
    return fit_on_held_out(
        np.concatenate([learnt_codes[learnt_ok], held_codes[held_ok]]), y_index[rows], held_index, held_logits[held_ok], groups=groups[rows],
        examples=_network_examples(record, params, none_of_these) if none_of_these.images else None,
    )


def _network_examples(record: FittedModel, params: dict, none_of_these: Examples) -> tuple[np.ndarray, np.ndarray]:
    """The fine-tuned network's codes of the images of none of these, and the logits the model
    predicts with (its predictor: for an ensemble, averaged with the linear head's)."""
    logits, codes, _ = network_outputs(
        record.predictor(), none_of_these.images, record.preprocessing, with_codes=True, batch_size=params["batch_size"] or 32,
        progress=params["progress"], desc="none of these",
    )
    read = np.isfinite(codes).all(axis=1)  # a file changed since the codes pass is left out
    return codes[read], logits[read]


def _held_ensemble_logits(record: FittedModel, params: dict, network_logits: np.ndarray, head_codes: np.ndarray, y_index, groups, held) -> np.ndarray | None:
    """What the ensemble says of the held-out images with neither half having seen them: the
    network's logits averaged with the linear head's out-of-fold ones. The saved head learnt from
    every image, held ones included; its in-sample confidence made the threshold reject 12-35% of
    new known-class images instead of 5% (bench_novelty --strategy finetune_top)."""
    try:
        linear = out_of_fold_logits(head_codes, y_index, params["classifier"], record.head_report, groups=groups, random_state=params["random_state"])
    except ValueError as exc:
        log.info("no novelty detector: %s", exc)
        return None
    return averaged_logits(network_logits, linear[held])


def _sample(rng: np.random.Generator, rows: np.ndarray, limit: int) -> np.ndarray:
    return rows if len(rows) <= limit else np.sort(rng.choice(rows, size=limit, replace=False))


def _codes(extractor, images: list, progress: bool, world: distributed.World) -> Codes:
    """The codes of ``images``; under several processes each computes its share (and caches it),
    and every rank gets them all, in order."""
    if not world.active:
        return extractor(images, progress=progress)
    mine = world.share(len(images))
    part = extractor([images[i] for i in mine], progress=progress and world.main, desc=f"features (1 share of {world.size})")
    return join_shares(world.gather(part), world.size)


def join_shares(parts: list[Codes], size: int) -> Codes:
    """The Codes of all images from rank r's share of every size-th image starting at r."""
    n = sum(len(part.content_hashes) for part in parts)
    codes = np.empty((n, parts[0].codes.shape[1]), dtype=parts[0].codes.dtype)
    phashes = np.empty(n, dtype=parts[0].phashes.dtype)
    hashes: list = [None] * n
    failures = {}
    for rank, part in enumerate(parts):
        codes[rank::size], phashes[rank::size], hashes[rank::size] = part.codes, part.phashes, part.content_hashes
        failures |= {rank + size * index: why for index, why in part.failures.items()}
    computed = sum(part.computed for part in parts)
    return Codes(codes, hashes, phashes, dict(sorted(failures.items())), computed, parts[0].engine)


def _linear_head(params: dict, codes: np.ndarray, y_index: np.ndarray, world: distributed.World, groups: np.ndarray):
    """The linear head; under several processes the mini-batch solver shares its batches out, and
    scikit-learn's (one process's work) runs on rank 0 and is handed to the others."""
    solver = choose_solver(params["solver"], params["classifier"], len(y_index), int(y_index.max()) + 1)
    how = "C on a held-out share, by mini-batches" if solver == "minibatch" else "C by cross-validation"
    progress.announce(f"linear head: {params['classifier']} on {len(y_index):,} codes of {codes.shape[1]:,} numbers, {how}")
    fit = lambda: fit_linear_head(  # noqa: E731
        codes, y_index, kind=params["classifier"], Cs=params["Cs"], class_weight=params["class_weight"], random_state=params["random_state"],
        n_jobs=params["n_jobs"], solver=solver, device=params["device"], progress=params["progress"] and world.main, groups=groups,
    )
    return fit() if solver == "minibatch" else world.from_main(fit)


def make_plan(params: dict, images: Sequence, labels) -> advisor.Plan:
    """The advisor's plan for these training images under ``params``."""
    if "+" in params["backbone"]:
        raise DataError(f"the advisor measures one backbone; give one, not {params['backbone']!r}.")
    images = as_sources(images)
    params = {**params, "input_size": input_size(params, images)}
    with progress.shown(params["progress"]):  # advise's own; within a fit, the same switch again
        plan = advisor.advise(
            get_backbone(params["backbone"]), images, labels, time_budget=params["time_budget"], tap=params["tap"], finetune=params["finetune"],
            input_size=params["input_size"], device=params["device"], batch_size=params["batch_size"], cache=params["cache"],
            cache_dir=params["cache_dir"], random_state=params["random_state"] or 0,
        )
    release_freed_memory()  # the measuring pass's activations: the fit's peak must not stack on them
    return plan


class Predicted(NamedTuple):
    scores: np.ndarray  # logits, NaN rows for images that could not be read
    failures: dict[int, str]  # image index -> why it could not be read
    novelty: np.ndarray | None  # "none of these" scores (NaN where unreadable); None without a detector


def predict_scores(record: FittedModel, images: Sequence, runtime: Runtime, extractor: Callable[[], object], head_codes: Codes | None = None) -> Predicted:
    """Logits for every image that can be read (NaN rows for the others), why the others could
    not, and novelty scores when the model has a detector: the one prediction path of every model,
    which never stops at a bad file. ``extractor()`` gives the code extractor (built only for a
    linear head). ``head_codes``: the images' codes at the linear head's tap, where they are at
    hand (a fit's own held-out images): a network averaged with its head then runs alone."""
    if record.network is not None:
        with_codes = record.novelty is not None and record.novelty.needs_codes
        head_half = record.ensembled and head_codes is not None
        scores, codes, failures = network_outputs(
            record.network if head_half else record.predictor(), images, record.preprocessing, with_codes=with_codes,
            batch_size=runtime.batch_size, progress=runtime.progress,
        )
        if head_half:
            scores = averaged_logits(scores, head_scores(record.head, head_codes))
        return Predicted(scores, failures, _readable_novelty(record.novelty, codes, scores, np.isfinite(scores).all(axis=1)))
    codes = extractor()(images, progress=runtime.progress)
    scores = head_scores(record.head, codes)
    return Predicted(scores, dict(codes.failures), novelty_scores(record.novelty, codes, scores))


def novelty_scores(detector: NoveltyDetector | None, codes: Codes, scores: np.ndarray) -> np.ndarray | None:
    """The detector's score of every readable image (NaN for the others), from its codes and logits."""
    return _readable_novelty(detector, codes.codes, scores, codes.ok)


def _readable_novelty(detector: NoveltyDetector | None, codes: np.ndarray | None, scores: np.ndarray, ok: np.ndarray) -> np.ndarray | None:
    """The detector's scores of the rows ``ok`` marks readable, NaN for the others (``codes`` may be
    None for a detector that reads only logits); None without a detector."""
    if detector is None:
        return None
    novelty = np.full(len(scores), np.nan)
    if ok.any():
        novelty[ok] = detector.score(codes[ok] if codes is not None else None, scores[ok])
    return novelty


def rejection_threshold(record: FittedModel, reject: str | float | None) -> float | None:
    """The novelty threshold ``reject`` means: "auto" the calibrated one (None without a
    detector), a number itself, None no rejection."""
    if reject is None:
        return None
    if reject == "auto":
        return record.novelty.threshold if record.novelty is not None else None
    if isinstance(reject, (int, float)) and not isinstance(reject, bool):
        return float(reject)
    raise DataError(f"reject must be 'auto', a threshold (a number) or None, got {reject!r}.")


def predicted_labels(record: FittedModel, scores: np.ndarray, novelty: np.ndarray | None, reject: str | float | None = "auto", unknown=None) -> np.ndarray:
    """Each image's class, or the unknown marker where its novelty is above the threshold
    ``reject`` names (a model without a detector flags nothing)."""
    labels = record.classes[np.argmax(scores, axis=1)]
    threshold = rejection_threshold(record, reject)
    if threshold is None or novelty is None:
        return labels
    marker = unknown_marker(record.classes, unknown)
    common = np.result_type(labels.dtype, np.asarray([marker]).dtype)
    labels = labels.astype(common if common.kind == labels.dtype.kind else object)  # "unknown" among integers: object
    labels[novelty > threshold] = marker
    return labels


def unknown_marker(classes: np.ndarray, unknown=None):
    """What marks a rejected image: ``unknown`` when given, else -1 for numeric classes and
    "unknown" for names; never one of ``classes`` (a rejected image must not read as class 0)."""
    marker = unknown if unknown is not None else (-1 if np.issubdtype(np.asarray(classes).dtype, np.number) else "unknown")
    if any(marker == c for c in classes.tolist()):
        raise DataError(f"the unknown marker {marker!r} is one of the model's classes; pass predict(..., unknown=...) another value.")
    return marker


def head_scores(head: LinearHead, codes: Codes) -> np.ndarray:
    """The linear head's logits on ``codes``; NaN rows where an image could not be read."""
    scores = np.full((len(codes.content_hashes), len(head.intercept)), np.nan)
    if codes.ok.any():
        scores[codes.ok] = head.decision_function(codes.codes[codes.ok])
    return scores


def unreadable_error(failures: dict[int, str], images: Sequence, fix: str = "") -> DataError:
    return DataError(f"cannot read {len(failures)} image(s) ({failures_in_words(failures, images)}); remove or replace them{', ' + fix if fix else ''}.")


def failures_in_words(failures: dict[int, str], images: Sequence) -> str:
    """Each reason once (a batch fails for one reason more often than not), with the first three
    images it applies to."""
    by_reason: dict[str, list[str]] = {}
    for i, why in failures.items():
        by_reason.setdefault(why, []).append(_describe(images[i], i))
    return "; ".join(f"{shortened(names, 3)}: {why}" for why, names in by_reason.items())


def _describe(image, index: int) -> str:
    image = image.image if isinstance(image, ImageSource) else image
    return str(image) if isinstance(image, (str, os.PathLike)) else f"image #{index}"


def as_image_list(images) -> list:
    """``images`` as a list: of paths or images, or a stacked (N, H, W[, C]) array split into images;
    a one-column table (a pandas DataFrame) gives its column. A single path, a single (H, W, C)
    image, a table of several columns and (image, label) pairs are refused, each with what to pass
    instead."""
    if isinstance(images, (str, os.PathLike)) and os.path.isdir(images):
        raise DataError(
            f"expected a list of images, got the folder {images!s}; list its images (sorted(Path(folder).rglob('*.jpg'))), "
            "or give a folder of class folders to fit_folder."
        )
    if isinstance(images, (str, os.PathLike)):
        raise DataError(f"expected a list of images, got the single path {images!s}; wrap it in a list.")
    if _is_pil_image(images):  # not iterable: it failed as "'JpegImageFile' object is not iterable"
        raise DataError(f"expected a list of images, got one PIL image ({images.width}x{images.height} {images.mode}); pass [image].")
    if _one_image_array(images):
        shape = tuple(images.shape)
        raise DataError(f"expected a batch of images, got one {shape[0]}x{shape[1]}x{shape[2]} image (an array of shape {shape}); pass x[None] or [x].")
    if hasattr(images, "columns") and hasattr(images, "iloc"):  # a pandas DataFrame iterates over its column names
        columns = [str(name) for name in images.columns]
        if len(columns) != 1:
            raise DataError(f"expected a list of images, got a table of {len(columns)} columns ({shortened(columns, 3)}); pass the column of images, e.g. df[{columns[0]!r}].")
        return list(images.iloc[:, 0])
    pairs = "expected images, got (image, label) pairs (a PyTorch dataset?); pass the images and the labels apart"
    if hasattr(images, "samples") and hasattr(images, "targets"):  # torchvision's ImageFolder: said before decoding every image
        raise DataError(f"{pairs}: X = [path for path, _ in ds.samples], y = ds.targets.")
    listed = list(images)
    if any(isinstance(image, tuple) for image in listed):
        raise DataError(f"{pairs}: X = [image for image, _ in ds], y = [label for _, label in ds].")
    return listed


def _is_pil_image(images) -> bool:
    pil = sys.modules.get("PIL.Image")  # nothing is a PIL image unless PIL is loaded: no import here
    return pil is not None and isinstance(images, pil.Image)


def _one_image_array(images) -> bool:
    """An (H, W, C) array or tensor with C of 1, 3 or 4: one image, not H images of W x C pixels,
    which is how a stack (N, H, W) would be read. Three grayscale images stacked, (3, H, W), stay three."""
    shape = getattr(images, "shape", ())
    return len(shape) == 3 and shape[2] in (1, 3, 4) and min(shape[0], shape[1]) > 4


def check_one_label_each(n_images: int, n_labels: int) -> None:
    if n_images != n_labels:
        raise DataError(f"got {n_images} images but {n_labels} labels; give one label per image.")


def checked_input(images, labels) -> tuple[list[ImageSource], np.ndarray]:
    """The training images as sources and their labels as a 1-D array, or a DataError that says
    what to fix: counts that differ, no images, missing labels, labels that mix types."""
    images = as_image_list(images)
    _check_float_ranges(images)
    sources = as_sources(images)
    labels = _label_array(labels)
    check_one_label_each(len(sources), len(labels))
    if not sources:
        raise DataError("no images given; fit needs at least two labelled images per class.")
    return sources, labels


def _label_array(labels) -> np.ndarray:
    """``labels`` as a 1-D array. A list is looked at before NumPy converts it: NumPy turns
    ``["a", nan]`` (a pandas column with an empty cell) into ``["a", "nan"]``, and ``[1, "b"]`` into
    ``["1", "b"]``, a class "nan" and labels no longer as given."""
    listed = not isinstance(labels, np.ndarray)
    labels = _one_label_each(np.array(list(labels), dtype=object) if listed else labels)
    values = labels.tolist()
    missing = [i for i, label in enumerate(values) if _is_missing(label)]
    if missing:
        raise DataError(f"{len(missing)} image(s) have no label (None, NaN or blank), the first #{missing[0]}; label them or leave them out.")
    if not listed:  # an array keeps its dtype, as given
        return labels
    texts = [label for label in values if isinstance(label, str)]
    numbers = [label for label in values if isinstance(label, (int, float, np.number)) and not isinstance(label, (bool, np.bool_))]
    if texts and numbers:
        raise DataError(f"the labels mix numbers and text (e.g. {numbers[0]!r} and {texts[0]!r}); give every label as one type, e.g. [str(label) for label in y].")
    return np.asarray(values)  # the dtype NumPy gives labels of one type: str, int, float or bool


def _is_missing(label) -> bool:
    """None, NaN (unequal to itself), pandas' NA and NaT (told by name: pandas is not needed here),
    or blank text (a spreadsheet's empty cell read as "": it became a class named "", as a CSV's
    blank label cell is refused)."""
    return (
        label is None or type(label).__name__ in ("NAType", "NaTType") or (isinstance(label, (float, np.floating)) and label != label)
        or (isinstance(label, str) and not label.strip())
    )


def _check_float_ranges(images: list) -> None:
    """Float arrays are read one at a time, as 0-1 when none passes 1 and as 0-255 otherwise. Only
    the whole set shows two mistakes, so they are told here, once: images normalised already
    (values below 0: refused, since every one of them would be skipped as unreadable), and a set
    whose brightest value stays far below 255 (scikit-learn's ``load_digits``: 0-16), which would
    be read as nearly black (a warning: it may be meant)."""
    floats = [image for image in map(_as_array, images) if image is not None and image.dtype.kind == "f" and image.size]
    below = [low for low in (float(np.nanmin(image)) for image in floats) if low < 0]
    if below:
        raise DataError(
            f"{len(below)} of the {len(images)} images have pixel values below 0 (down to {min(below):g}), as after normalisation; "
            "pass images as 0-1 or 0-255 (headstart normalises for the backbone)."
        )
    brightest = max((float(np.nanmax(image)) for image in floats), default=0.0)
    if 1 < brightest <= 32:
        log.warning(
            "the float images reach only %g, so they are read as 0-255 and look nearly black; if %g is white, pass X / %g (0-1)",
            brightest, brightest, brightest,
        )


def _as_array(image) -> np.ndarray | None:
    """A NumPy array or a PyTorch tensor as an array; None for anything else (a path, a PIL image)."""
    if isinstance(image, np.ndarray):
        return image
    if not (hasattr(image, "detach") and hasattr(image, "is_floating_point")):
        return None
    tensor = image.detach().cpu()
    return (tensor.float() if tensor.is_floating_point() else tensor).numpy()  # NumPy has no bfloat16


def _one_label_each(labels: np.ndarray) -> np.ndarray:
    """``labels`` as a 1-D array: a column (n, 1) is flattened with scikit-learn's warning, as its
    classifiers do; a one-hot table (Keras' ``to_categorical``) is refused with the line that undoes it."""
    if labels.ndim == 2 and labels.shape[1] == 1:
        from sklearn.utils.validation import column_or_1d

        return column_or_1d(labels, warn=True)
    if labels.ndim == 2 and labels.size and np.isin(labels, (0, 1)).all() and (labels.sum(axis=1) == 1).all():
        raise DataError(f"the labels are one-hot ({labels.shape[0]} rows of {labels.shape[1]} columns); pass one class per image, e.g. y.argmax(axis=1).")
    if labels.ndim != 1:
        raise DataError(f"expected one label per image (a 1-D sequence), got shape {labels.shape}.")
    return labels


def _train_network(record: FittedModel, recipe: Recipe, params: dict, images: list, y_index: np.ndarray, groups: np.ndarray, started: float) -> np.ndarray:
    """Fine-tune (or train from scratch) as the recipe says, into ``record``; log to TensorBoard.
    Returns the indices of the images held out for early stopping (none without fine-tuning)."""
    board = TensorBoardLog(params["tensorboard_dir"]) if params["tensorboard_dir"] and distributed.current().main else None
    held = np.zeros(0, dtype=int)
    try:
        if recipe.finetune is not None:
            record.network, record.history, record.finetune, held = _fine_tune(recipe, params, images, y_index, groups, record, started, board)
        elif params["resume"]:  # auto planned a linear head: no epochs to resume, and fitting it takes seconds
            log.warning("nothing to resume: the plan is a linear classifier, which has no epochs; it was fitted whole")
        if board is not None:
            step = len(record.history.records) if record.history is not None else 0
            board.final({"accuracy/cross_validation": record.head_report.cv_score}, {"linear_head": record.head.coef}, step)
    finally:
        if board is not None:
            board.close()
    return held


def _fine_tune(recipe: Recipe, params: dict, images: list, y_index: np.ndarray, groups: np.ndarray, record: FittedModel, started: float, board):
    config = recipe.finetune
    if params["time_budget"] is not None:  # what the budget leaves after measuring and the linear head
        config = replace(config, time_limit=max(0.0, params["time_budget"] - (time.perf_counter() - started)))
    if np.bincount(y_index).min() < 2:
        raise DataError(
            f"strategy {config.strategy!r} needs at least 2 training images per class (some are held out for early stopping); "
            "add images or use strategy='linear'."
        )
    fit, stop = grouped_hold_out(y_index, EARLY_STOPPING_SHARE, groups=groups, random_state=params["random_state"])
    spec = get_backbone(recipe.backbone)
    result = finetune(
        spec, [images[i] for i in fit], y_index[fit], [images[i] for i in stop], y_index[stop], config,
        n_classes=len(record.classes),
        head_init=None if recipe.from_scratch else _warm_start_head(record, spec, params, images, y_index, groups),  # from scratch: no warm start
        checkpoint_dir=Path(params["checkpoint_dir"]) if params["checkpoint_dir"] else None,
        resume=params["resume"],
        preprocessing=record.preprocessing,
        on_epoch_end=board,
    )
    warning = distributed.current().from_main(lambda: _mirror_warning(recipe, images, record, config, params["cache_dir"])) if recipe.check_mirroring else None
    settings = {**asdict(config), "imbalance_plan": result.imbalance.reason, "bf16": result.bf16, "mirror_warning": warning}
    return result.net, result.history, settings, stop


def _warm_start_head(record: FittedModel, spec, params: dict, images: list, y_index: np.ndarray, groups: np.ndarray) -> LinearHead:
    """The linear head the network's own head starts from: on the codes that head reads, the top
    tap's. The record's head is it unless it reads another tap (the one the advisor's trial scored
    fine-tuning with: the network predicts averaged with it); then one is fitted on the top codes
    (the advisor's measuring pass left them in the feature cache)."""
    if record.tap == spec.default_tap:
        return record.head
    progress.announce(f"warm start: a linear head on {spec.name}'s top codes, which the network's own head reads")
    world = distributed.current()
    top = _codes(Runtime.from_params(params).extractor(spec.name, spec.default_tap, params["input_size"]), images, params["progress"], world)
    return _linear_head(params, np.nan_to_num(top.codes), y_index, world, groups)[0]


def _mirror_warning(recipe: Recipe, images: list, record: FittedModel, config, cache_dir) -> str | None:
    """Warn when the augmentation mirrors images that a probe can tell from their mirrors."""
    if not MIRRORING_STEPS & set(policy_steps(config.augmentation)) or len(images) < 10:
        return None
    spec = get_backbone(recipe.backbone.split("+")[0])
    accuracy, n_checked = advisor.mirror_probe(spec, images, record.preprocessing, config.seed, cache_dir=cache_dir)
    return mirror_warning(config.augmentation, accuracy, n_checked, in_summary=True)  # the fit's summary carries it
