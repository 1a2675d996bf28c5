"""Folder in, run directory out: what ``headstart fit`` and ``headstart evaluate`` do, as functions.

Codes are extracted once for every image of every split; the same pass yields the content and
perceptual hashes used to find duplicates and cross-split leakage.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.metrics import recall_score

from . import distributed, progress
from ._atomic import write_text
from ._json import as_json, to_json_label
from ._memory import release_freed_memory
from .data import Dataset, find_duplicates, load_dataset
from .data.dataset import TEST_SIZE, Skipped, check_exists, check_labels_known, kinds_of
from .data.images import as_sources, unreadable_files
from .diagnostics import diagnose, error_analysis, wilson_interval
from .diagnostics.error_analysis import balanced_accuracy
from .diagnostics.run import cv_overstated
from .errors import DataError
from .estimator import TransferClassifier
from .features import Codes
from .fitted import FittedModel
from .persistence import CHECKPOINTS, TENSORBOARD, UNREADABLE_FILE, check_run_output
from .pipeline import Fit, fit_model, head_scores, novelty_scores, refuse_labelled_examples, rejection_threshold
from .recipe import check_params
from .report import render_report
from .strategies.linear import softmax
from .strategies.novelty import NoveltyDetector, flags_more_than_calibrated
from .summary import format_summary, skipped_in_words
from .training.tensorboard import TensorBoardLog

@dataclass
class Evaluation:
    """Accuracy on one labelled split, next to the chance levels it must beat."""

    split: str
    n_images: int
    accuracy: float
    balanced_accuracy: float
    chance_uniform: float  # 1 / number of classes
    chance_majority: float  # share of the largest class
    per_class_recall: dict
    accuracy_ci95: tuple[float, float]  # Wilson interval
    # the most confident mistakes ({"path", "label", "predicted", "probability"}); evaluate_folder only:
    # images that could not be read, and the error analysis (confusion, calibration) a report shows
    mistakes: list[dict] = field(default_factory=list)
    unreadable: list[dict] = field(default_factory=list)
    masks: int = 0  # segmentation masks beside their images, passed over
    analysis: dict | None = None
    # a model with a novelty detector: false rejections at its threshold (rejection_figures)
    rejection: dict | None = None
    # evaluate_folder: (the fit's cross-validated, these images' balanced) accuracy where the first
    # is higher beyond the noise of both (diagnostics.run.cv_overstated): images unlike the training ones
    cv_overstated: tuple[float, float] | None = None


@dataclass
class FitSummary:
    """Everything ``headstart fit`` reports; also written to ``metrics.json``."""

    data: str
    layout: str
    classes: list
    n_train: int
    evaluation: Evaluation | None
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"}
    duplicates: dict = field(default_factory=dict)
    classifier: dict = field(default_factory=dict)
    backbone: str = ""
    input_size: int = 0  # the side images were read at
    engine: str = ""
    finetune: dict | None = None  # strategy, epochs, best epoch, time per epoch (fine-tuning only)
    plan: dict | None = None  # strategy="auto": what the advisor chose and why (all of it in plan.json)
    verdict: str | None = None  # the diagnostics' one-line verdict
    diagnostics: dict | None = None  # everything report.html shows (headstart.diagnostics.diagnose)
    comparison: list[dict] = field(default_factory=list)  # --compare-scratch: reference rows on the same split
    computed_codes: int = 0
    counts: dict = field(default_factory=dict)  # image_counts(): found, used per split, skipped, codes computed and cached
    run: dict = field(default_factory=dict)  # how the fit ran: world_size, backend, device
    seconds_features: float = 0.0  # reading, decoding and the backbone (or the cache)
    seconds: float = 0.0
    # Where the time went: finding the images, the fit (codes, head or fine-tuning), evaluating the
    # held-out split, diagnosing, and summarising (duplicates); writing the run folder comes after.
    seconds_by_phase: dict = field(default_factory=dict)
    output: str | None = None  # the run folder written, if any

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        """What ``headstart fit`` prints, as ``print(summary)`` shows it."""
        return format_summary(self, self.output)

    def __repr__(self) -> str:
        # The dataclass's own repr ran to 160 kB (every diagnostic): what a notebook cell showed.
        held_out = f", {self.evaluation.split} accuracy {self.evaluation.accuracy:.1%} on {self.evaluation.n_images} images" if self.evaluation else ""
        return f"FitSummary(data={self.data!r}, classes={len(self.classes)}, n_train={self.n_train}{held_out}; print() it for the whole summary)"


def fit_folder(
    data: str | os.PathLike | Dataset,
    output: str | os.PathLike | None = None,
    *,
    strict: bool = False,
    test_size: float | None = None,
    allow_outside: bool = False,
    diagnostics: bool = True,
    tensorboard: bool = False,
    compare_scratch: bool = False,
    none_of_these: Sequence = (),
    **params,
) -> tuple[TransferClassifier, FitSummary]:
    """Fit a :class:`TransferClassifier` on a dataset folder or CSV (or the :class:`Dataset`
    ``load_dataset`` found there, whose split is then used as it is) and optionally save the run.

    ``params`` go to :class:`TransferClassifier`. The held-out split (test, else val, else a
    stratified ``test_size`` of the pool, 20% by default) is evaluated and never used for fitting.
    With ``diagnostics`` the summary carries the verdict and everything the report shows; with
    ``output``, the run directory gets ``report.html`` too, and with ``tensorboard``, TensorBoard logs.
    ``compare_scratch`` also trains the small CNN from scratch on the same split, as a reference.
    ``none_of_these``: images of none of the classes, which teach the novelty score what they look like.
    """
    _check_found_once(data, test_size=test_size, allow_outside=allow_outside)
    with progress.shown(params.get("progress", progress.AUTO)):
        return _fit_folder(data, output, strict, test_size, allow_outside, diagnostics, tensorboard, compare_scratch, none_of_these, params)


def _check_found_once(data, **finding) -> None:
    """A Dataset was found and split by ``load_dataset``: options that would have changed that are
    refused, not ignored, and said where they belong."""
    given = [name for name, value in finding.items() if value not in (None, False)]
    if isinstance(data, Dataset) and given:
        names = " and ".join(given)
        raise DataError(f"{names} {'apply' if len(given) > 1 else 'applies'} where the images are found; a Dataset comes as load_dataset found and split it: pass {names} to load_dataset, or give the folder.")


def check_before_reading(data, output, params: dict, tensorboard: bool = False) -> Path | None:
    """What fit refuses before any image is read (a negative seed failed in the split; the --nproc
    launcher says it before starting processes): a bad parameter, an output folder that holds
    something else, the data missing. Returns ``output`` with '~' expanded, as a shell would."""
    if output is not None:
        output = check_run_output(output)
    check_params(TransferClassifier(**_run_directories(output, tensorboard, params)).get_params())
    if not isinstance(data, Dataset):
        check_exists(data)
    return output


def _fit_folder(
    data, output, strict, test_size, allow_outside, diagnostics, tensorboard, compare_scratch, none_of_these, params,
) -> tuple[TransferClassifier, FitSummary]:
    # A dataset found before (the command line finds it before PyTorch loads): its search counts
    # in the fit's time, as where the fit searches itself.
    start = time.perf_counter() - (data.seconds_to_find if isinstance(data, Dataset) else 0.0)
    phases = _Phases(start)
    output = check_before_reading(data, output, params, tensorboard)
    model = TransferClassifier(strict=strict, **_run_directories(output, tensorboard, params))
    dataset = data if isinstance(data, Dataset) else load_dataset(data, test_size=TEST_SIZE if test_size is None else test_size, random_state=params.get("random_state") or 0, allow_outside=allow_outside)
    progress.announce(describe_found(dataset))
    phases.done("finding images")
    if strict:
        _check_every_image(dataset, output)
    fit, codes = _fit_split(model.get_params(), dataset, start, none_of_these)
    phases.done("fit", codes=fit.seconds_codes)
    record = fit.record
    model = TransferClassifier.from_fitted(record, **model.get_params())
    world = distributed.current()
    if world.active:  # the shared work is done: rank 0 evaluates, diagnoses and writes alone
        distributed.stop()
        if not world.main:
            return model, None
    release_freed_memory()  # what fitting freed; evaluation and diagnostics come next

    records, labels = dataset.records, _labels(dataset.records)
    train = np.array([r.split == "train" for r in records])
    evaluation, scores, held_out = _evaluate_held_out(model, dataset, codes, labels)
    phases.done("evaluation")
    report = None
    if diagnostics:
        progress.announce("diagnostics: the verdict, a learning curve, likely label errors, weight statistics")
        report = _diagnose(record, dataset, codes, labels, train, evaluation, scores, held_out, fit.groups)
        phases.done("diagnostics")
    comparison = []
    if compare_scratch and evaluation is not None:
        comparison = _scratch_comparison(record, evaluation, records, train & codes.ok, labels, held_out, params)
    if tensorboard and evaluation is not None:
        _log_final_scores(Path(output) / TENSORBOARD, evaluation)
    summary = _summary(dataset, record, fit, codes, evaluation, report, comparison, model.classifier, start)
    phases.done("summary")
    summary.seconds_by_phase = phases.seconds
    summary.output = str(output) if output is not None else None
    if output is not None:
        progress.announce(f"writing {output}: the model, metrics.json and report.html")
        metrics = as_json(summary.to_dict())
        model.save(output, metrics=metrics, report=render_report(metrics))
    return model, summary


def _diagnose(record: FittedModel, dataset: Dataset, codes: Codes, labels, train, evaluation, scores, held_out, groups) -> dict:
    # the fit's groups: its readable training images are these, in this order
    fitted = np.flatnonzero(train & codes.ok)
    return diagnose(
        record, codes.codes[fitted], labels[fitted], eval_scores=scores, eval_labels=labels[held_out] if held_out is not None else None,
        eval_split=dataset.eval_split or "test", eval_ci95=evaluation.accuracy_ci95 if evaluation else None,
        train_images=[dataset.records[i].path for i in fitted],
        groups=groups,
    )


def _log_final_scores(folder: Path, evaluation) -> None:
    board = TensorBoardLog(folder)
    board.final({f"accuracy/{evaluation.split}": evaluation.accuracy, f"balanced_accuracy/{evaluation.split}": evaluation.balanced_accuracy}, {}, 0)
    board.close()


class _Phases:
    """Seconds per phase of a fit, each timed from the end of the one before."""

    def __init__(self, start: float):
        self.seconds: dict[str, float] = {}
        self._last = start

    def done(self, name: str, codes: float | None = None) -> None:
        now = time.perf_counter()
        if codes is not None:  # the fit's codes apart from its head or fine-tuning
            self.seconds["codes"] = round(codes, 2)
            self.seconds[name] = round(now - self._last - codes, 2)
        else:
            self.seconds[name] = round(now - self._last, 2)
        self._last = now


def _run_directories(output, tensorboard: bool, params: dict) -> dict:
    """``params`` with the run directory's checkpoint and TensorBoard folders filled in."""
    params = dict(params)
    if output is not None and params.get("strategy", "auto") != "linear":
        params.setdefault("checkpoint_dir", str(Path(output) / CHECKPOINTS))
    if tensorboard:
        if output is None:
            raise DataError("tensorboard logs go into the run directory; give one (-o RUN).")
        params.setdefault("tensorboard_dir", str(Path(output) / TENSORBOARD))
    return params


def _fit_split(params: dict, dataset: Dataset, start: float, none_of_these: Sequence = ()) -> tuple[Fit, Codes]:
    """Fit on the training split; every other image gets its codes in the same pass. Returns the
    fit and the codes in the dataset's order."""
    records = dataset.records
    train = [i for i, r in enumerate(records) if r.split == "train"]
    others = [i for i, r in enumerate(records) if r.split != "train"]
    labels = _labels(records)
    given = _given_groups(records, train)
    fit = fit_model(params, [records[i].path for i in train], labels[train], groups=given, others=[records[i].path for i in others],
                    none_of_these=none_of_these, started=start)
    return fit, fit.codes.subset(np.argsort(np.array(train + others, dtype=int)))


def _given_groups(records, rows) -> list | None:
    """A CSV's group column for ``rows`` (None without one)."""
    return [records[i].group for i in rows] if any(r.group for r in records) else None


def _evaluate_held_out(model: TransferClassifier, dataset: Dataset, codes: Codes, labels: np.ndarray):
    """(evaluation, logits, indices) on the held-out split; (None, None, None) without one."""
    if not dataset.eval_split:
        return None, None, None
    records = dataset.records
    held_out = np.flatnonzero(np.array([r.split == dataset.eval_split for r in records]) & codes.ok)
    if model.fitted_.network is None:  # the codes are already there: no need to read the images again
        scores = head_scores(model.fitted_.head, codes.subset(held_out))
        novelty = novelty_scores(model.fitted_.novelty, codes.subset(held_out), scores)
    else:  # the network runs; a linear head averaged in reads the codes already there
        scores, _, novelty = model.predicted([records[i].path for i in held_out], head_codes=codes.subset(held_out))
    finite = np.isfinite(scores).all(axis=1)
    scores, held_out = scores[finite], held_out[finite]
    evaluation = evaluate_scores(model.classes_, scores, labels[held_out], dataset.eval_split)
    evaluation.mistakes = _mistakes(model.classes_, scores, labels[held_out], [records[i].path for i in held_out])
    novelty = novelty[finite] if novelty is not None else None
    evaluation.rejection = rejection_figures(
        scores, novelty, model.novelty_threshold_, np.searchsorted(model.classes_, labels[held_out]), model.classes_, [records[i].path for i in held_out],
        detector=model.fitted_.novelty,
    )
    return evaluation, scores, held_out


def _summary(dataset: Dataset, record: FittedModel, fit: Fit, codes: Codes, evaluation, report, comparison, classifier, start) -> FitSummary:
    records = dataset.records
    return FitSummary(
        data=dataset.source or str(dataset.root),
        layout=dataset.layout,
        classes=[to_json_label(c) for c in record.classes],
        n_train=record.n_train,
        evaluation=evaluation,
        skipped=[
            {"path": str(s.path), "reason": s.reason, "kind": s.kind}
            for s in dataset.skipped + [Skipped(records[i].path, why) for i, why in codes.failures.items()]  # those the scan found, then those that failed to decode
        ],
        duplicates=duplicate_report(dataset, codes),
        classifier=asdict(record.head_report) | {"kind": classifier},
        finetune=_finetune_summary(record),
        plan=_plan_summary(record),
        verdict=report["verdict"]["headline"] if report else None,
        diagnostics=report,
        comparison=comparison,
        backbone=record.backbone,
        input_size=record.input_size,
        engine=codes.engine,
        computed_codes=codes.computed,
        counts=image_counts(dataset, codes),
        run=record.run,
        seconds_features=round(fit.seconds_codes, 2),
        seconds=round(time.perf_counter() - start, 2),
    )


def evaluate_folder(model: TransferClassifier, data: str | os.PathLike | Dataset, *, allow_outside: bool = False, none_of_these: Sequence = ()) -> Evaluation:
    """Accuracy of a fitted model on a labelled folder or CSV (or the :class:`Dataset` that
    ``load_dataset(..., split=False)`` found there).

    With split folders, the test split is used (else val); with class folders, every image.
    ``none_of_these``: images of none of the classes, to measure how many the model flags.
    """
    _check_found_once(data, allow_outside=allow_outside)
    if none_of_these and model.fitted_.novelty is None:  # said before any image is read
        raise DataError("this model has no novelty detector to measure on images of none of the classes; refit it with a linear head or enough held-out images.")
    dataset = data if isinstance(data, Dataset) else load_dataset(data, split=False, allow_outside=allow_outside)
    split = dataset.split_to_evaluate
    records = dataset.split(split)
    check_labels_known(dataset, model.classes_)
    sources = as_sources([r.path for r in records])  # they remember the content hashes predicting computes
    scores, failures, novelty = model.predicted(sources)
    ok = np.isfinite(scores).all(axis=1)
    labels = _match_label_types(_labels(records), model.classes_)
    evaluation = evaluate_scores(model.classes_, scores[ok], labels[ok], split)
    kept = [r for r, good in zip(records, ok) if good]
    evaluation.rejection = rejection_figures(
        scores[ok], novelty[ok] if novelty is not None else None, model.novelty_threshold_, np.searchsorted(model.classes_, labels[ok]),
        model.classes_, [r.path for r in kept], detector=model.fitted_.novelty,
    )
    if none_of_these:
        examples = as_sources(list(none_of_these))
        figures = _none_of_these_figures(model, novelty[ok], examples)
        refuse_labelled_examples(examples, _content_hashes(examples), set(filter(None, _content_hashes(sources))))
        evaluation.rejection["none_of_these"] = figures
    evaluation.mistakes = _mistakes(model.classes_, scores[ok], labels[ok], [r.path for r in kept])
    passed_over = [s for s in dataset.skipped if s.split == split and s.kind != "not an image"]
    evaluation.masks = sum(s.kind == "mask" for s in passed_over)
    evaluation.unreadable = [{"path": str(s.path), "reason": s.reason} for s in passed_over if s.kind != "mask"]
    evaluation.unreadable += [{"path": str(records[i].path), "reason": why} for i, why in failures.items()]
    evaluation.analysis = error_analysis(np.searchsorted(model.classes_, labels[ok]), scores[ok], [str(to_json_label(c)) for c in model.classes_])
    evaluation.cv_overstated = cv_overstated(model.fitted_, evaluation.analysis)
    return evaluation


# The most confident mistakes an evaluation lists (its report shows them all in the confusion matrix).
MISTAKES_LISTED = 20


def _mistakes(classes: np.ndarray, scores: np.ndarray, labels: np.ndarray, paths: list) -> list[dict]:
    """Wrong predictions, the most confident first: the images worth a look (mislabelled, or a real gap)."""
    if not len(scores):
        return []
    probabilities = softmax(scores)
    predicted = probabilities.argmax(1)
    wrong = np.flatnonzero(classes[predicted] != labels)
    order = wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")][:MISTAKES_LISTED]
    return [
        {"path": str(paths[i]), "label": to_json_label(labels[i]), "predicted": to_json_label(classes[predicted[i]]), "probability": round(float(probabilities[i, predicted[i]]), 4)}
        for i in order
    ]


def predict_images(model: TransferClassifier, images, *, top_k: int = 1, reject: str | float | None = "auto") -> list[dict]:
    """Top-k predictions per image, as ``{"path", "predictions": [{"label", "probability"}]}``, and
    for a model with a novelty detector ``"novelty"`` (the score), ``"threshold"`` and ``"unknown"``
    (the image looks like none of the classes; ``reject=None`` never says so).

    An image that cannot be read gets ``"error"`` instead of predictions; the others still count.
    """
    if top_k < 1:
        raise DataError(f"top_k must be at least 1, got {top_k}.")
    images = list(images)
    scores, failures, novelty = model.predicted(images)
    threshold = rejection_threshold(model.fitted_, reject) if novelty is not None else None
    probabilities = np.full_like(scores, np.nan)
    ok = np.isfinite(scores).all(axis=1)
    if ok.any():
        probabilities[ok] = softmax(scores[ok])
    rows = []
    for i, image in enumerate(images):
        name = str(image) if isinstance(image, (str, os.PathLike)) else f"image #{i}"
        if i in failures:
            rows.append({"path": name, "error": failures[i], "predictions": []})
            continue
        best = np.argsort(-probabilities[i])[:top_k]
        predictions = [{"label": to_json_label(model.classes_[j]), "probability": round(float(probabilities[i, j]), 4)} for j in best]
        row = {"path": name, "predictions": predictions}
        if novelty is not None:
            row |= {"novelty": round(float(novelty[i]), 4), "threshold": None if threshold is None else round(threshold, 4)}
            row["unknown"] = threshold is not None and bool(novelty[i] > threshold)
        rows.append(row)
    return rows


# The rejected images a report lists (metrics.json keeps them all in the histogram's counts).
REJECTED_LISTED = 24
HISTOGRAM_BINS = 30


def _content_hashes(sources: list) -> list[str | None]:
    """Each image's content hash: the one predicting remembered, else read now; None where the
    file cannot be read (predicting counts those)."""
    hashes = []
    for source in sources:
        try:
            hashes.append(source.known_hash() or source.open().content_hash)
        except (OSError, TypeError, ValueError):
            hashes.append(None)
    return hashes


def _none_of_these_figures(model: TransferClassifier, known: np.ndarray, images: Sequence) -> dict:
    """How the model's "none of these" fares on images of no class: the share flagged at its
    threshold, and AUROC against the known-class images' scores (1: every one more novel)."""
    from sklearn.metrics import roc_auc_score

    novel = model.predicted(list(images)).novelty  # NaN where unreadable: counted, not fatal
    read = np.isfinite(novel)
    novel = novel[read]
    truth = np.r_[np.zeros(len(known)), np.ones(len(novel))]
    return {
        "images": int(len(novel)), "unreadable": int((~read).sum()), "flagged": int((novel > model.novelty_threshold_).sum()),
        "caught_rate": float((novel > model.novelty_threshold_).mean()) if len(novel) else None,
        "auroc": float(roc_auc_score(truth, np.r_[known, novel])) if len(novel) and len(known) else None,
    }


def rejection_figures(
    scores: np.ndarray, novelty: np.ndarray | None, threshold: float | None, truth_index: np.ndarray,
    classes: np.ndarray | None = None, paths: Sequence | None = None, detector: NoveltyDetector | None = None,
) -> dict | None:
    """What "none of these" does on labelled images of known classes: the share rejected (every
    one a false rejection), accuracy on the accepted ones, accuracy counting a rejection as an
    error, the scores' histogram and the rejected images, the most novel first (with ``classes``
    and ``paths``); from ``detector``, how many images of none of these it learnt from, the
    threshold's chance of keeping its share (under 0.9 when set from fewer than 45 scores), and
    whether more were flagged than that share allows by chance (images unlike the training ones)."""
    if novelty is None or threshold is None or not len(scores):
        return None
    accepted = novelty <= threshold
    right = scores.argmax(1) == truth_index
    figures = {
        "threshold": float(threshold), "rejected": int((~accepted).sum()), "false_rejection_rate": float(1 - accepted.mean()),
        "accuracy_on_accepted": float(right[accepted].mean()) if accepted.any() else None,
        "accuracy_with_rejection": float((right & accepted).mean()),
        "histogram": score_histogram(novelty, threshold),
        "examples": detector.examples if detector is not None else 0, "confidence": detector.confidence if detector is not None else None,
        "more_than_calibrated": flags_more_than_calibrated(detector, int((~accepted).sum()), len(accepted)),
    }
    if classes is not None and paths is not None:
        order = [i for i in np.argsort(-novelty) if not accepted[i]][:REJECTED_LISTED]
        figures["rejected_images"] = [
            {"path": str(paths[i]), "label": to_json_label(classes[truth_index[i]]), "predicted": to_json_label(classes[scores[i].argmax()]), "score": float(novelty[i])}
            for i in order
        ]
    return figures


def score_histogram(novelty: np.ndarray, threshold: float) -> dict:
    """Counts of the scores in equal bins from the lowest to a little past the threshold (or the
    99th percentile, if higher); the last bin holds every score beyond (an image far from all the
    training ones scores orders of magnitude above the rest)."""
    threshold = float(threshold)
    top = max(float(np.quantile(novelty, 0.99)), threshold + 0.25 * max(abs(threshold), 1e-6))
    low = min(float(novelty.min()), threshold)
    edges = np.linspace(low, top if top > low else low + 1e-6, HISTOGRAM_BINS + 1)
    counts, _ = np.histogram(np.clip(novelty, low, edges[-1]), bins=edges)
    return {"edges": [round(float(e), 6) for e in edges], "counts": counts.astype(int).tolist(), "beyond": int((novelty > edges[-1]).sum())}


def evaluate_scores(classes: np.ndarray, scores: np.ndarray, labels: np.ndarray, split: str) -> Evaluation:
    """Accuracy figures from a model's scores (one row per image, columns ``classes``) against the true labels."""
    predicted = classes[np.argmax(scores, axis=1)]
    n = len(labels)
    correct = int((predicted == labels).sum())
    present = [c for c in classes if np.any(labels == c)]
    recalls = recall_score(labels, predicted, labels=present, average=None, zero_division=0)
    _, counts = np.unique(labels, return_counts=True)
    return Evaluation(
        split=split,
        n_images=n,
        accuracy=correct / n,
        balanced_accuracy=balanced_accuracy(labels, predicted),
        chance_uniform=1.0 / len(classes),
        chance_majority=float(counts.max() / n),
        per_class_recall={str(to_json_label(c)): float(r) for c, r in zip(present, recalls)},
        accuracy_ci95=wilson_interval(correct, n),
    )


def _scratch_comparison(record: FittedModel, evaluation, records, fitted, labels, held_out, params) -> list[dict]:
    """The fitted model and a small CNN trained from scratch on the same images, scored on the
    same held-out split: the gap transfer makes on the user's own data."""
    keep = ("random_state", "device", "batch_size", "progress")
    scratch = TransferClassifier(strategy="scratch", engine="torch", cache=False, **{k: params[k] for k in keep if k in params})
    start = time.perf_counter()
    scratch.fit([r.path for r, f in zip(records, fitted) if f], labels[fitted])
    seconds = time.perf_counter() - start
    scores, _ = scratch.scores_and_failures([records[i].path for i in held_out])
    reference = evaluate_scores(scratch.classes_, scores, labels[held_out], evaluation.split)
    history = scratch.history_
    return [
        {"model": f"this run: {record.strategy} on {record.backbone}", "accuracy": evaluation.accuracy, "ci95": list(evaluation.accuracy_ci95)},
        {
            "model": f"from scratch: {scratch.backbone_}, {scratch.preprocessing_.crop} px, {len(history.records)} epochs (kept {history.best_epoch})",
            "accuracy": reference.accuracy,
            "ci95": list(reference.accuracy_ci95),
            "train_accuracy": history.kept().train_accuracy,
            "seconds": round(seconds, 1),
        },
    ]


def _finetune_summary(record: FittedModel) -> dict | None:
    if record.history is None:
        return None
    records = record.history.records
    settings = record.finetune
    return {
        "strategy": record.strategy,
        "epochs_run": len(records),
        "best_epoch": record.history.best_epoch,
        "stopped_early": record.history.stopped_early,
        "seconds_per_epoch": round(float(np.mean([r.seconds for r in records])), 2),
        "bf16": settings["bf16"],
        "augmentation": settings["augmentation"],
        "imbalance": settings["imbalance_plan"],
        "mirror_warning": settings.get("mirror_warning"),
        "ensemble": record.ensembled,
    }


def _plan_summary(record: FittedModel) -> dict | None:
    plan = record.plan
    if plan is None:
        return None
    return {"strategy": plan.strategy, "tap": plan.tap, "backbone": plan.backbone, "case": plan.case, "explanation": plan.explanation, "seconds": round(plan.seconds, 1)}


def duplicate_report(dataset: Dataset, codes: Codes) -> dict:
    """Exact and near duplicates; pairs across train and a held-out split are leakage, and exact
    copies labelled differently are label conflicts (one of the two labels is wrong, or the classes
    overlap: either way the model is taught both answers for one picture). Near pairs are not:
    brain-MRI slices of different subjects and classes share perceptual hashes (273 such pairs in
    alzheimer_mri4, none exact), so only identical files say for certain that a label is doubled."""
    ok = np.flatnonzero(codes.ok)
    pairs = find_duplicates([codes.content_hashes[i] for i in ok], codes.phashes[ok])
    records = dataset.records
    within = {"exact": 0, "near": 0}
    leakage, conflicts = [], []
    for pair in pairs:
        a, b = records[ok[pair.first]], records[ok[pair.second]]
        if a.split == b.split:
            within[pair.kind] += 1
        else:
            leakage.append({"kind": pair.kind, "distance": pair.distance, "paths": [str(a.path), str(b.path)], "splits": [a.split, b.split]})
        if pair.kind == "exact" and a.label != b.label:
            conflicts.append({"paths": [str(a.path), str(b.path)], "labels": [to_json_label(a.label), to_json_label(b.label)]})
    return {"within_split": within, "cross_split": len(leakage), "leakage": leakage, "conflicting_labels": conflicts, **_groups_across_splits(dataset)}


def _groups_across_splits(dataset: Dataset) -> dict:
    """The groups of a CSV's group column (subjects, say) with images in more than one split, each
    with its count per split: where the CSV gives the split, a subject on both sides scores itself
    (headstart keeps a group on one side only of the splits it makes). Nothing without groups."""
    splits: dict[str, dict[str, int]] = {}
    for record in dataset.records:
        if record.group:
            counts = splits.setdefault(record.group, {})
            counts[record.split] = counts.get(record.split, 0) + 1
    if not splits:
        return {}
    across = [{"group": group, "splits": counts} for group, counts in splits.items() if len(counts) > 1]
    return {"groups": len(splits), "groups_across_splits": across}


def describe_found(dataset: Dataset) -> str:
    """``found 258 images of 4 classes (train 206, test 52); passed over 3 non-image files, 2 unreadable``"""
    splits = ", ".join(f"{name} {sum(r.split == name for r in dataset.records)}" for name in dataset.splits)
    skipped = _skipped(dataset)
    passed = f"; passed over {skipped_in_words(skipped)}" if dataset.skipped else ""
    return f"found {len(dataset.records) + skipped['unreadable']} images of {len(dataset.classes)} classes ({splits}){passed}"


def _skipped(dataset: Dataset, unreadable_codes: int = 0) -> dict[str, int]:
    """Files passed over: not images, segmentation masks beside their images, and unreadable ones
    (those the scan found, and ``unreadable_codes`` more that failed to decode)."""
    not_images = [s.path for s in dataset.skipped if s.kind == "not an image"]
    masks = sum(s.kind == "mask" for s in dataset.skipped)
    missing = sum(s.kind == "missing" for s in dataset.skipped)  # listed in a CSV, not on disk
    return {
        "not_images": len(not_images),
        "not_image_kinds": kinds_of(not_images),
        "masks": masks,
        "missing": missing,
        "unreadable": len(dataset.skipped) - len(not_images) - masks - missing + unreadable_codes,
    }


def image_counts(dataset: Dataset, codes: Codes) -> dict:
    """The one set of counts the summary, metrics.json and the report show: image files found, used per
    split, passed over (not images, segmentation masks, unreadable), and codes computed against read from the cache."""
    readable = Counter(record.split for record, ok in zip(dataset.records, codes.ok) if ok)
    used = {split: readable[split] for split in dataset.splits if readable[split]}
    skipped = _skipped(dataset, len(codes.failures))
    return {
        "found": len(dataset.records) + skipped["unreadable"] - len(codes.failures),  # images to classify, readable or not
        "used": used,
        **skipped,
        "codes_computed": codes.computed,
        "codes_cached": int(codes.ok.sum()) - codes.computed,
    }


def _labels(records) -> np.ndarray:
    # A dataset's labels are all folder names (strings) or all CSV integers, never a mix.
    return np.asarray([r.label for r in records])


def _match_label_types(labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Folder names are strings; a model trained with integer labels compares them as integers."""
    if classes.dtype.kind in "iu" and labels.dtype.kind not in "iu":
        return labels.astype(classes.dtype)
    return labels


# Unreadable files named in a --strict error; more go to a file in the run directory.
STRICT_LISTED = 10


def _unreadable_shared_out(paths: list[Path]) -> dict[Path, str]:
    """:func:`unreadable_files` of ``paths``, in their order; several processes each decode their
    share and every one gets the whole answer (each decoded every image before)."""
    world = distributed.current()
    share = world.share(len(paths))
    mine = unreadable_files([paths[i] for i in share])
    failed = [(int(i), mine[paths[i]]) for i in share if paths[i] in mine]
    return {paths[i]: why for i, why in sorted(pair for part in world.gather(failed) for pair in part)}


def _check_every_image(dataset: Dataset, output) -> None:
    """--strict: decode every image before any work, and fail naming all that cannot be read."""
    progress.announce(f"--strict: decoding all {len(dataset.records)} images first, to find every unreadable one")
    found = {s.path: s.reason for s in dataset.skipped if s.kind in ("unreadable", "missing")}
    found |= _unreadable_shared_out([r.path for r in dataset.records])
    if not found:
        return
    listed = "; ".join(f"{path}: {why}" for path, why in list(found.items())[:STRICT_LISTED])
    where = ""
    if len(found) > STRICT_LISTED:
        target = Path(output or ".") / UNREADABLE_FILE
        if distributed.current().main:  # one process writes the list
            target.parent.mkdir(parents=True, exist_ok=True)
            write_text(target, "".join(f"{path}\t{why}\n" for path, why in found.items()))
        where = f"; and {len(found) - STRICT_LISTED} more: all {len(found)} are listed in {target}"
    raise DataError(f"--strict: {len(found)} unreadable or missing file(s): {listed}{where}; remove or replace them, or drop --strict to skip them.")
