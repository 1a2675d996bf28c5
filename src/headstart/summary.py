"""The words of a fit and an evaluation: what ``headstart fit`` and ``headstart evaluate`` print,
and what ``print(summary)`` shows in Python. Kept apart from the command line, which only parses
and dispatches, so that the fit's record (:class:`~headstart.workflow.FitSummary`) can print
itself without importing the command line (which imports this module inside the commands that
print with it, so its own start stays without numpy and torch).
"""

from __future__ import annotations

from pathlib import Path

from ._text import shortened


def format_summary(summary, output) -> str:
    """What ``headstart fit`` prints for ``summary`` (a FitSummary), the run written to ``output``."""
    from .persistence import REPORT_FILE

    ev = summary.evaluation
    counts = summary.counts
    used = ", ".join(f"{split} {n}" for split, n in counts["used"].items())
    unreadable = [s for s in summary.skipped if s["kind"] in ("unreadable", "missing")]
    lines = [
        f"headstart fit: {summary.data} ({summary.layout} layout), backbone {summary.backbone} at {summary.input_size} px, {summary.seconds:.1f} s "
        f"({counts['codes_computed']} codes computed, {counts['codes_cached']} read from the cache; engine {summary.engine})",
        f"  images      {counts['found']} found, used: {used}; skipped {skipped_in_words(counts)}",
    ]
    for item in unreadable[:10]:
        lines.append(f"              skipped {item['path']}: {item['reason']}")
    if len(unreadable) > 10:
        lines.append(f"              ... and {len(unreadable) - 10} more (see metrics.json)")
    lines.append(f"  classes     {len(summary.classes)}: {shortened(summary.classes)}")
    clf = summary.classifier
    cv = f", CV {clf['scoring'].replace('_', ' ')} {clf['cv_score']:.1%} ± {clf['cv_score_std']:.1%}" if clf.get("cv_score_std") is not None else ""
    weights = (
        f"; classes imbalanced {clf['imbalance_ratio']:.1f}:1, so weighted by inverse frequency" if clf.get("class_weight") else ""
    )
    name = "logistic regression" if clf["kind"] == "logistic" else "linear SVM"
    if summary.plan:
        plan_lines = [line for line in summary.plan["explanation"] if not line.startswith("Plan: ")]
        chosen = next((line.removeprefix("Plan: ") for line in summary.plan["explanation"] if line.startswith("Plan: ")), summary.plan["strategy"])
        lines.append(f"  plan        {summary.plan['case']}: {chosen}")
        lines.extend(f"              {line}" for line in plan_lines)
    lines.append(f"  classifier  {name}, {_how_C_was_chosen(clf)}{cv}{weights}")
    tuned = summary.finetune
    if tuned:
        stop = f"stopped early, weights of epoch {tuned['best_epoch']}" if tuned["stopped_early"] else f"weights of epoch {tuned['best_epoch']}"
        lines.append(
            f"  fine-tuned  {tuned['strategy']} from the linear classifier: {tuned['epochs_run']} epoch{'s' if tuned['epochs_run'] != 1 else ''} ({stop}), "
            f"{tuned['seconds_per_epoch']:.1f} s/epoch{', bf16' if tuned['bf16'] else ''}; augmentation {tuned['augmentation']}; {tuned['imbalance']}"
        )
        if tuned.get("ensemble"):
            lines.append("              predicts with the mean of the fine-tuned network's and the linear classifier's probabilities")
        if tuned.get("mirror_warning"):
            lines.append(f"  WARNING     {tuned['mirror_warning']}")
    if ev is not None:
        lines.append(format_evaluation(ev, indent="  "))
    lines.append("  " + _duplicates_line(summary.duplicates))
    leaked = summary.duplicates.get("leakage", [])
    for pair in leaked[:5]:  # each with its splits: the line above also counts pairs within a split
        (first, second), (first_split, second_split) = pair["paths"], pair.get("splits", ("?", "?"))
        lines.append(f"              {pair['kind']}: {first} ({first_split})  <->  {second} ({second_split})")
    if len(leaked) > 5:
        lines.append(f"              and {len(leaked) - 5} more pair(s) across splits (metrics.json)")
    if output is None:
        lines.append("  saved to    nothing (no output folder was given)")
    else:
        lines.append(f"  saved to    {output}" + (f" (open {Path(output) / REPORT_FILE})" if summary.diagnostics else ""))
    for row in summary.comparison:
        lines.append(f"  compare     {row['model']}: {row['accuracy']:.1%}")
    if summary.verdict:
        lines.append(f"  verdict     {summary.verdict}")
        lines.extend(f"              - {step}" for step in summary.diagnostics["verdict"]["next_steps"])
    return "\n".join(lines)


def format_evaluation(ev, indent: str = "", all_classes: bool = False) -> str:
    low, high = ev.accuracy_ci95
    recall = sorted(ev.per_class_recall.items(), key=lambda kv: kv[1])
    limit = 50 if all_classes else 12
    shown = ", ".join(f"{k} {v:.0%}" for k, v in recall[:limit]) + (f" ... ({len(recall) - limit} more)" if len(recall) > limit else "")
    name = accuracy_name(ev.split)
    return (
        f"{indent}{name} {ev.accuracy:.1%} on {ev.n_images} images (95% CI {low:.1%}-{high:.1%}); "
        f"chance {ev.chance_uniform:.1%} (1/K), {ev.chance_majority:.1%} (majority); balanced accuracy {ev.balanced_accuracy:.1%}\n"
        f"{indent}recall      {'lowest first: ' if len(recall) > limit else ''}{shown}"
        + (f"\n{indent}{_rejection_line(ev.rejection, ev.accuracy, ev.n_images)}" if ev.rejection else "")
        + (f"\n{indent}{_unlike_training_line(*ev.cv_overstated)}" if ev.cv_overstated else "")
    )


def _unlike_training_line(cv: float, held: float) -> str:
    """evaluate on images unlike the training ones: the fit's cross-validation, measured on the
    training images, beyond the noise above what these score (alzheimer_mri4's new subjects)."""
    return (
        f"unlike      cross-validation said {cv:.1%} on the training images; these score {held:.1%} balanced, lower beyond the noise of both: "
        "they differ from the training images (another source, new subjects?), and this is the figure to expect on images like them"
    )


def accuracy_name(split: str | None) -> str:
    """"test accuracy" for a fit's held-out split; plain "accuracy" for every image of an evaluated
    folder (its split is called "pool" inside, a word no reader should meet)."""
    return "accuracy" if split in (None, "pool") else f"{split} accuracy"


def _rejection_line(r: dict, accuracy: float, n_images: int) -> str:
    """How "none of these" fares on images of known classes: each rejection is a false one."""
    # every image flagged: "accuracy 50.0% -> none on the accepted" read as a figure
    accepted = f"{r['accuracy_on_accepted']:.1%} on the accepted" if r["accuracy_on_accepted"] is not None else "no image accepted"
    return (
        f"unknown     {r['rejected']} of {n_images} known-class images flagged as none of these ({r['false_rejection_rate']:.1%} false rejections, "
        f"threshold {r['threshold']:#.3g}); accuracy {accuracy:.1%} -> {accepted}, {r['accuracy_with_rejection']:.1%} counting flags as errors"
        + (f"; the score learnt from {r['examples']} images of none of these" if r.get("examples") else "")
        + _few_to_calibrate(r.get("confidence"))
        + (_more_than_calibrated(r["false_rejection_rate"]) if r.get("more_than_calibrated") else "")
        + (_none_of_these_line(r["none_of_these"]) if r.get("none_of_these") else "")
    )


def _few_to_calibrate(confidence: float | None) -> str:
    """Under 45 training images' scores no threshold keeps 95% of images like them with 90%
    confidence: said, since a model of 8 images flagged 1 of its 2 test images (older runs: None)."""
    from .strategies.novelty import CONFIDENCE, KNOWN_SHARE

    if confidence is None or confidence >= CONFIDENCE:
        return ""
    return (
        f"\n              too few training images to set the threshold surely (a {confidence:.0%} chance that it keeps {KNOWN_SHARE:.0%} of images like them, "
        f"not {CONFIDENCE:.0%}): expect more flags; --no-reject always names a class"
    )


def _more_than_calibrated(rate: float) -> str:
    from .strategies.novelty import KNOWN_SHARE

    return (
        f"\n              {rate:.0%} flagged, where the threshold flags about {1 - KNOWN_SHARE:.0%} of images like the training ones: "
        "these images differ from them (another source, new subjects?)"
    )


def _none_of_these_line(figures: dict) -> str:
    """How many images of none of the classes the threshold flags (each flag a right one)."""
    auroc = f"; AUROC {figures['auroc']:.3f} against the known-class images" if figures["auroc"] is not None else ""
    caught = f" ({figures['caught_rate']:.1%})" if figures["caught_rate"] is not None else ""
    return f"\n              {figures['flagged']} of {figures['images']} images of none of the classes flagged{caught}{auroc}"


def _duplicates_line(duplicates: dict) -> str:
    within = duplicates.get("within_split", {})
    cross = duplicates.get("cross_split", 0)
    leak = f"{cross} pair(s) across splits: LEAKAGE, held-out accuracy is optimistic" if cross else "none across splits (no leakage)"
    line = f"duplicates  {within.get('exact', 0)} exact, {within.get('near', 0)} near within splits; {leak}"
    across = duplicates.get("groups_across_splits", [])
    if across:
        first = across[0]
        where = ", ".join(f"{split} {n}" for split, n in first["splits"].items())
        line += (
            f"\n  groups      {len(across)} of {duplicates['groups']} groups (the CSV's group column) have images in more than one split, e.g. {first['group']} ({where}): "
            "LEAKAGE, held-out accuracy is optimistic; give each group one split, or leave the split column out and headstart keeps them apart"
        )
    conflicts = duplicates.get("conflicting_labels", [])
    if conflicts:
        first = conflicts[0]
        line += (
            f"\n              {len(conflicts)} identical pair(s) labelled differently (one label is wrong, or the classes overlap), "
            f"e.g. {first['paths'][0]} ({first['labels'][0]}) and {first['paths'][1]} ({first['labels'][1]}); all in metrics.json and report.html"
        )
    return line


def _how_C_was_chosen(clf: dict) -> str:
    if clf.get("solver") != "minibatch" and clf.get("cv_score") is None:  # nothing was cross-validated
        return f"C={clf['C']:g}, " + ("not cross-validated (a class has one training image)" if clf["cv_folds"] < 2 else "the one value given")
    if clf.get("solver") != "minibatch":
        return f"C={clf['C']:g} chosen by {clf['cv_folds']}-fold CV{_grouped(clf.get('duplicate_groups'))}"
    if not clf["held_out"]:
        return f"mini-batch solver, C={clf['C']:g}"
    return f"mini-batch solver, C={clf['C']:g} chosen on {clf['held_out']:,} held-out codes ({clf['scoring'].replace('_', ' ')} {clf['cv_score']:.1%})"


def _grouped(groups: dict | None) -> str:
    """How CV kept near duplicates apart, when it had any to keep apart."""
    if not groups or not groups["groups"]:
        return ""
    kinds = "the given groups and near duplicates" if groups.get("given") else "near duplicates"
    return f" ({kinds} kept in one fold: {groups['images']} images in {groups['groups']} groups, the largest {groups['largest']})"


def skipped_in_words(counts: dict) -> str:
    """``3 non-image file(s) (2 .txt, 1 .db), 2 unreadable``, with the segmentation masks where there are any."""
    kinds = kinds_in_words(counts.get("not_image_kinds", {}))
    masks = f", {counts['masks']} segmentation mask(s) of images beside them" if counts.get("masks") else ""
    missing = f", {counts['missing']} listed but missing" if counts.get("missing") else ""
    return f"{counts['not_images']} non-image file(s){kinds}{masks}, {counts['unreadable']} unreadable{missing}"


def kinds_in_words(kinds: dict[str, int]) -> str:
    """`` (2 .txt, 1 .db)``: the three commonest kinds of :func:`~headstart.data.dataset.kinds_of`."""
    shown = list(kinds.items())
    return f" ({', '.join(f'{n} {kind}' for kind, n in shown[:3])}{', ...' if len(shown) > 3 else ''})" if shown else ""
