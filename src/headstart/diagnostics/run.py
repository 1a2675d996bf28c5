"""Everything the report shows about one fitted model, as one JSON-ready dict (metrics.json's
``diagnostics``): the verdict, accuracies, training history, learning curve, errors, label
suspects and weights."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict

import numpy as np

from ..advisor.plan import MIN_GAIN, classify, trial_candidate
from ..backbones import get_backbone
from ..data.subsample import median_count
from ..errors import BackboneError
from ..fitted import FittedModel, as_record
from .error_analysis import error_analysis
from .probe import probe_refits
from .verdict import Evidence, judge, wilson_interval
from .weights import weight_report

log = logging.getLogger(__name__)

SUSPECTS_SHOWN = 30
TRAIN_ACCURACY_CHUNK = 4096
# Training images a fine-tuned network is scored on for the verdict (a seeded sample past this).
TRAIN_SCORED = 1000
# Standard errors by which a linear head's cross-validated accuracy must exceed its held-out one
# before the verdict says the held-out images differ from the training ones: 2.58, two-sided 99%,
# so a held-out split drawn like the training images raises it about once in 200 fits.
SHIFT_Z = 2.58
# And by at least this much: on a thousand images a 2-point gap is beyond the noise, but a verdict
# that tells a 98% model to distrust its cross-validated 100% alarms more than it informs
# (alzheimer_mri4's gap is 19.6 points).
SHIFT_MIN_GAP = 0.05


def diagnose(
    model,
    train_codes: np.ndarray,
    y_train,
    *,
    eval_scores: np.ndarray | None = None,
    eval_labels=None,
    eval_split: str = "test",
    eval_ci95: tuple[float, float] | None = None,
    train_images: list | None = None,
    weights: bool = True,
    groups: np.ndarray | None = None,
) -> dict:
    """Diagnose a fitted model (a :class:`~headstart.TransferClassifier` or its ``FittedModel``).

    ``train_codes`` are the codes the head was fitted on (one row per training image, labels
    ``y_train`` as given); ``eval_scores`` are the model's logits on a held-out split with its
    labels. Without a held-out split the verdict rests on cross-validation. ``groups`` (one number per
    training image, :func:`headstart.data.near_duplicate_groups`) keeps near duplicates in one fold.
    """
    record = as_record(model)
    names = [str(c) for c in record.classes]
    y = np.searchsorted(record.classes, np.asarray(y_train))
    errors = None
    if eval_scores is not None and len(eval_scores):
        errors = error_analysis(np.searchsorted(record.classes, np.asarray(eval_labels)), eval_scores, names)
    curve, suspects, probed = probe_refits(train_codes, y, C=record.head_report.C, class_weight=record.head_report.class_weight, groups=groups)
    evidence = _evidence(record, train_codes, y, errors, eval_labels, eval_split, eval_ci95, curve, len(suspects), train_images)
    return {
        "verdict": asdict(judge(evidence)),
        "evidence": asdict(evidence),
        "history": record.history.to_dict() if record.history is not None else None,
        "learning_curve": curve,
        "probed": probed,
        "errors": errors,
        "suspects": {
            "count": len(suspects),
            "n_train": probed["images"],
            "top": [_describe_suspect(s, names, train_images) for s in suspects[:SUSPECTS_SHOWN]],
        },
        "weights": _weights_or_none(record) if weights else None,
    }


def _evidence(record: FittedModel, train_codes, y, errors, eval_labels, eval_split, eval_ci95, curve, n_suspects, train_images=None) -> Evidence:
    """What the verdict weighs: held-out accuracy (else cross-validation) against chance and training."""
    validation = _validation_accuracy(record)
    if errors is not None:
        y_eval = np.searchsorted(record.classes, np.asarray(eval_labels))
        correct = int(round(errors["accuracy"] * len(y_eval)))
        held_split, held_accuracy = eval_split, errors["accuracy"]
        ci = tuple(eval_ci95) if eval_ci95 is not None else wilson_interval(correct, len(y_eval))
        majority = float(np.bincount(y_eval, minlength=len(record.classes)).max() / len(y_eval))
        missing = tuple(str(c) for c in np.asarray(record.classes)[np.bincount(y_eval, minlength=len(record.classes)) == 0])
    else:
        missing = ()
        held_split, held_accuracy = "cross-validation", validation if validation is not None else float("nan")
        ci = wilson_interval(int(round(held_accuracy * len(y))), len(y)) if validation is not None else (0.0, 1.0)
        majority = float(np.bincount(y).max() / len(y))
    counts = np.bincount(y)
    history = record.history
    trial, trial_lost = _finetune_trial(record)
    return Evidence(
        n_classes=len(record.classes),
        chance_uniform=1.0 / len(record.classes),
        chance_majority=majority,
        heldout_split=held_split,
        heldout_accuracy=float(held_accuracy),
        heldout_ci95=ci,
        train_accuracy=_train_accuracy(record, train_codes, y, train_images),
        validation_accuracy=validation,
        cv_accuracy=_cv_accuracy(record),
        strategy=record.strategy,
        best_epoch=history.best_epoch if history is not None else None,
        epochs_run=len(history.records) if history is not None else None,
        images_per_class=median_count(counts[counts > 0]),
        class_range=(int(counts[counts > 0].min()), int(counts.max())),
        imbalanced=record.head_report.class_weight is not None,
        heldout_images=len(eval_labels) if errors is not None else len(y),
        heldout_missing=missing,
        better_tap=_better_tap(record),
        finetune_strategy=_finetune_strategy(record),
        finetune_trial=trial,
        finetune_lost=trial_lost,
        cv_overstated=cv_overstated(record, errors, counts),
        groups_given=bool((record.head_report.duplicate_groups or {}).get("given")),
        **_finetuning_as_run(record),
        more_data=curve["words"] if curve else None,
        curve_doubled=curve.get("accuracy_doubled") if curve else None,
        curve_flat=bool(curve.get("flat")) if curve else False,
        suspects=n_suspects,
        confused_pair=_dominant_pair(errors),
    )


def _weights_or_none(record: FittedModel) -> dict | None:
    # A fit whose codes all came from the cache never loaded the weights; if they cannot be loaded
    # now (a hub model offline), the report goes without its weights section rather than failing.
    try:
        return model_weight_report(record)
    except BackboneError as exc:
        log.warning("no weight statistics: %s", exc)
        return None


def model_weight_report(model) -> dict:
    """Weight statistics of the model's backbone (pretrained, random, fine-tuned) and its head."""
    record = as_record(model)
    spec = get_backbone(record.backbone.split("+")[0])
    pretrained = spec.build()
    if record.network is not None:
        return weight_report(pretrained, record.network.backbone.model, record.network.head.weight.detach().float().cpu().numpy())
    return weight_report(pretrained, None, record.head.coef)


def _kept_epoch(record: FittedModel):
    """The fine-tuning epoch whose weights the model holds; None for a linear head."""
    return record.history.kept() if record.history is not None else None


def _train_accuracy(record: FittedModel, train_codes: np.ndarray, y: np.ndarray, train_images: list | None = None) -> float:
    if record.network is not None and train_images:
        return _network_train_accuracy(record, train_images, y, train_codes)
    if (kept := _kept_epoch(record)) is not None:
        return float(kept.train_accuracy)  # no images to score: the kept epoch's running accuracy
    # A chunk of rows at a time: 1,000,000 codes of 5,000 classes would need 40 GB of logits at once.
    hits = total = 0
    for start in range(0, len(y), TRAIN_ACCURACY_CHUNK):
        codes = np.asarray(train_codes[start : start + TRAIN_ACCURACY_CHUNK])
        ok = np.isfinite(codes).all(axis=1)
        hits += int(np.sum(record.head.decision_function(codes[ok]).argmax(1) == y[start : start + TRAIN_ACCURACY_CHUNK][ok]))
        total += int(ok.sum())
    return hits / max(total, 1)


def _network_train_accuracy(record: FittedModel, images: list, y: np.ndarray, train_codes) -> float:
    """A fine-tuned network's accuracy on (up to TRAIN_SCORED of) its training images as it predicts:
    no augmentation, no dropout. The epoch's running accuracy is neither (on 24 images it read 55%
    where the network scored them all right), and a verdict of underfitting must not rest on it.
    Averaged with its linear head, the head's half comes from the codes it was fitted on, so that
    only the network runs (the ensemble module would run the pretrained backbone too: twice the time)."""
    from ..strategies.ensemble import averaged_logits
    from ..strategies.finetune import network_scores

    rows = np.arange(len(y))
    if len(rows) > TRAIN_SCORED:
        rows = np.sort(np.random.default_rng(0).choice(rows, TRAIN_SCORED, replace=False))
    scores, _ = network_scores(record.network, [images[i] for i in rows], record.preprocessing)
    if record.ensembled:
        scores = averaged_logits(scores, record.head.decision_function(np.asarray(train_codes[rows], dtype=np.float64)))
    ok = np.isfinite(scores).all(axis=1)
    return float(np.mean(scores[ok].argmax(1) == y[rows][ok])) if ok.any() else float("nan")


def _validation_accuracy(record: FittedModel) -> float | None:
    if (kept := _kept_epoch(record)) is not None:
        return kept.val_accuracy
    return _head_score(record)


def _cv_accuracy(record: FittedModel) -> float | None:
    """The linear classifier's cross-validated accuracy; None for the mini-batch solver's one held-out split."""
    return _head_score(record) if record.head_report.cv_folds > 0 else None


def _finetuning_as_run(record: FittedModel) -> dict:
    """The fine-tuning settings a next step must not suggest again: augmentation, dropout, and
    whether the mirror probe warned against mirroring."""
    tuned = record.finetune or {}
    augmentation = tuned.get("augmentation")
    return {
        "augmentation": ",".join(augmentation) if isinstance(augmentation, (list, tuple)) else augmentation,
        "dropout": tuned.get("dropout"),
        "mirror_warned": bool(tuned.get("mirror_warning")),
    }


def cv_overstated(record: FittedModel, errors: dict | None, train_counts: np.ndarray | None = None) -> tuple[float, float] | None:
    """(cross-validated, held-out) balanced accuracy of a linear head where the first exceeds the
    second by more than SHIFT_Z standard errors of their difference and by SHIFT_MIN_GAP: the
    held-out images are unlike the training ones (new subjects, another scanner), or the training
    images share more than near duplicates (slices of one brain: alzheimer_mri4's CV said 73.9%,
    its test split 54.3%).

    Balanced on both sides, so a held-out split of another class mix is not read as a shift (a head
    whose classes are not weighted is cross-validated in plain accuracy, on training classes within
    1.5:1 of each other). Each side's variance is the sum over classes of p(1 - p)/n, over the
    class count squared, with p add-one smoothed (a class, or a cross-validation, at 100% still has
    some): the class's recall on the held-out side, the cross-validated accuracy on the other.
    ``train_counts`` default to those the head recorded (None in files from before it did)."""
    cv = _cv_accuracy(record)
    if train_counts is None and record.head_report.class_counts is not None:
        train_counts = np.asarray(record.head_report.class_counts)
    if errors is None or cv is None or train_counts is None or record.strategy != "linear":  # a fine-tuned model is not the head cross-validated
        return None
    rows = [r for r in errors["per_class"] if r["support"] > 0]
    smoothed = [((r["recall"] * r["support"] + 1) / (r["support"] + 2), r["support"]) for r in rows]
    held = float(np.mean([r["recall"] for r in rows]))
    held_var = sum(p * (1 - p) / n for p, n in smoothed) / len(rows) ** 2
    counts = train_counts[train_counts > 0]
    cv_smoothed = (cv * counts + 1) / (counts + 2)
    cv_var = float(np.sum(cv_smoothed * (1 - cv_smoothed) / counts)) / len(counts) ** 2
    gap = cv - held
    return (cv, held) if gap > SHIFT_MIN_GAP and gap > SHIFT_Z * math.sqrt(held_var + cv_var) else None


def _head_score(record: FittedModel) -> float | None:
    score = record.head_report.cv_score
    return None if score is None or (isinstance(score, float) and math.isnan(score)) else float(score)


def _better_tap(record: FittedModel) -> str | None:
    if record.plan is None or record.strategy != "linear":
        return None
    sweep = {s.tap: s.cv_accuracy for s in record.plan.measurements.sweep}
    best = max(sweep, key=sweep.get)
    used = sweep.get(record.tap)
    return best if used is not None and best != record.tap and sweep[best] - used > 0.01 else None


def _finetune_strategy(record: FittedModel) -> str | None:
    """How the advisor would fine-tune the data it measured (None: no plan, so no measurement)."""
    if record.plan is None:
        return None
    return trial_candidate(classify(record.plan.measurements)[1])


def _finetune_trial(record: FittedModel) -> tuple[str | None, bool]:
    """The advisor's fine-tuning trial against the linear head on the same split, in words, and
    whether fine-tuning lost beyond the trial's noise (then the verdict does not suggest it)."""
    trial = [a for a in record.plan.alternatives if a.how.startswith("trial:")] if record.plan is not None else []
    tuned = next((a for a in trial if a.strategy != "linear"), None)
    linear = next((a for a in trial if a.strategy == "linear"), None)
    if tuned is None or linear is None:
        return None, False
    gain, margin = tuned.accuracy - linear.accuracy, max(MIN_GAIN, tuned.noise)
    within = ", within the noise" if abs(gain) <= margin else ""
    return f"{tuned.strategy} {tuned.accuracy:.1%} against the linear head's {linear.accuracy:.1%}{within}", gain < -margin


def _dominant_pair(errors: dict | None) -> str | None:
    if not errors or not errors["merge_suggestion"]:
        return None
    pair = errors["confused_pairs"][0]
    return f"{pair['a']} / {pair['b']}"


def _describe_suspect(suspect: dict, names: list[str], images) -> dict:
    image = images[suspect["index"]] if images is not None else None
    return {
        "path": os.fspath(image) if isinstance(image, (str, os.PathLike)) else None,
        "index": suspect["index"],
        "given": names[suspect["given"]],
        "predicted": names[suspect["predicted"]],
        "p_given": round(suspect["p_given"], 4),
        "p_predicted": round(suspect["p_predicted"], 4),
    }
