"""The verdict: is the model learning beyond chance, is it overfitting or underfitting, or healthy?

Held-out accuracy (test, else validation) is compared with chance through its 95% Wilson interval,
so a small test set cannot pass noise off as learning; train against held-out accuracy says whether
the model memorises. Each verdict comes with the next steps that fit the evidence of this run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._text import shortened

# Train minus held-out accuracy above which the model is memorising rather than generalising. A
# linear head on CNN codes typically fits its training images perfectly and loses 2 to 12 points on
# held-out ones (hymenoptera 4.6, flowers 5.9, digits-15 11.5: docs/benchmarks.md); 15 is past that.
OVERFIT_GAP = 0.15
# Training accuracy below which the model cannot even fit the images it learns from.
UNDERFIT_TRAIN = 0.80

VERDICTS = ("not learning", "too few to tell", "overfitting", "underfitting", "healthy")


@dataclass
class Evidence:
    """The figures a verdict rests on (accuracies as fractions)."""

    n_classes: int
    chance_uniform: float  # 1 / number of classes
    chance_majority: float  # share of the largest class in the held-out split
    heldout_split: str  # "test", "val" or "cross-validation"
    heldout_accuracy: float
    heldout_ci95: tuple[float, float]
    train_accuracy: float | None = None
    validation_accuracy: float | None = None  # cross-validation or the early-stopping split
    cv_accuracy: float | None = None  # the linear classifier's cross-validated accuracy (its line in the summary), fine-tuned or not
    strategy: str = "linear"  # "linear", a fine-tuning strategy, or "scratch"
    best_epoch: int | None = None  # fine-tuning: the epoch whose weights were kept
    epochs_run: int | None = None
    images_per_class: float | None = None  # median, training split
    class_range: tuple[int, int] | None = None  # the smallest and the largest class's training images
    imbalanced: bool = False  # the head weighted its classes: the small ones are where images are missing
    better_tap: str | None = None  # a tap the advisor's sweep scored higher than the one used
    finetune_strategy: str | None = None  # how the advisor would fine-tune these data (finetune_all unlike ImageNet); None: not measured
    finetune_trial: str | None = None  # the advisor's fine-tuning trial against the linear head, in words, where one ran
    finetune_lost: bool = False  # that trial: fine-tuning lost beyond its noise, so it is not suggested
    augmentation: str | None = None  # fine-tuning's augmentation policy as run ("objects", "none", steps joined by ",")
    dropout: float | None = None  # fine-tuning's dropout before the head, as run
    mirror_warned: bool = False  # the mirror probe told mirrored training images from their originals
    groups_given: bool = False  # cross-validation kept the user's groups (subjects) apart already
    cv_overstated: tuple[float, float] | None = None  # (the head's cross-validated, held-out balanced) accuracy where the first exceeds the second beyond their noise
    more_data: str | None = None  # the learning curve's estimate, in words
    curve_doubled: float | None = None  # the learning curve's accuracy at twice the images per class
    curve_flat: bool = False  # the learning curve says doubling the images gains under half a point
    suspects: int = 0  # training images whose label looks wrong
    confused_pair: str | None = None  # "a / b" when one pair dominates the errors
    heldout_images: int | None = None  # how many held-out images the accuracy counts
    heldout_missing: tuple[str, ...] = ()  # classes with no held-out image


@dataclass
class Verdict:
    label: str  # one of VERDICTS
    headline: str  # one line, with the numbers
    evidence: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)


def judge(e: Evidence) -> Verdict:
    """The verdict for one run, its evidence in words, and two or three next steps."""
    verdict = _judge(e)
    if e.cv_overstated and verdict.label in ("overfitting", "underfitting", "healthy"):
        # Cross-validation met images like the ones it trained on; the held-out split met others.
        # Whatever the verdict, the held-out figure is the one to trust, and its cause comes first.
        cv, held = e.cv_overstated
        verdict.evidence.append(f"Cross-validation over the training images said {cv:.1%}; the {e.heldout_split} split's balanced accuracy is {held:.1%}, lower beyond the noise of both.")
        why = (
            "another source or scanner? Cross-validation already kept the groups given apart)" if e.groups_given
            else "new subjects, another source or scanner?), or training images resemble each other more than new ones do. "
            "Name each image's subject or source in a CSV 'group' column so cross-validation meets new ones as the test does"
        )
        trust = f"Trust the {e.heldout_split} figure ({held:.1%} balanced), not cross-validation's {cv:.1%}: the {e.heldout_split} images differ from the training ones ({why}."
        verdict.next_steps = [trust, *verdict.next_steps][:3]
    return verdict


def _judge(e: Evidence) -> Verdict:
    chance = max(e.chance_uniform, e.chance_majority)
    low, high = e.heldout_ci95
    held = f"{e.heldout_split} {e.heldout_accuracy:.1%} (95% CI {low:.1%} to {high:.1%})"
    chance_words = f"chance {chance:.1%}" + (" (the largest class)" if e.chance_majority > e.chance_uniform else f" (1 of {e.n_classes})")
    train = f"train {e.train_accuracy:.1%}" if e.train_accuracy is not None else None
    gap = e.train_accuracy - e.heldout_accuracy if e.train_accuracy is not None else None
    evidence = [f"{held}; {chance_words}."]
    if train:
        evidence.append(f"{train.capitalize()}, {abs(gap) * 100:.1f} points {'above' if gap >= 0 else 'below'} held-out.")
    if e.validation_accuracy is not None:
        evidence.append(f"Validation ({'cross-validation' if e.strategy == 'linear' else 'early-stopping split'}): {e.validation_accuracy:.1%}.")

    if e.heldout_missing:
        evidence.append(f"The {e.heldout_split} split has no images of {len(e.heldout_missing)} of the {e.n_classes} classes ({shortened(e.heldout_missing)}).")
        if len(e.heldout_missing) == e.n_classes - 1:  # one class: its share is 100%, so no accuracy beats chance
            return Verdict("too few to tell", _one_class_headline(e), evidence, _one_class_steps(e))
    if low <= chance and high >= _clearly_learning(chance):
        # The interval holds chance and accuracy well beyond it alike (even where the accuracy
        # itself is at chance, as 2 of 4 is): the test set cannot tell learning from guessing,
        # which is not the same as showing there is none.
        return Verdict("too few to tell", _too_few_headline(e, chance), evidence, _too_few_steps(e, chance))
    if low <= chance:  # the 95% interval reaches chance (or the accuracy is below it)
        memorised = f"; it memorised the training set ({train})" if gap is not None and gap > OVERFIT_GAP else ""
        return Verdict(
            "not learning",
            f"Not learning: {e.heldout_split} accuracy {e.heldout_accuracy:.1%} is not above chance ({chance:.1%}){memorised}.",
            evidence,
            _not_learning_steps(e),
        )
    if gap is not None and gap > OVERFIT_GAP:
        return Verdict(
            "overfitting",
            f"Overfitting: {train}, {e.heldout_split} {e.heldout_accuracy:.1%}: it fits the training images far better than new ones.",
            evidence,
            _overfitting_steps(e),
        )
    if e.train_accuracy is not None and e.train_accuracy < UNDERFIT_TRAIN:
        return Verdict(
            "underfitting",
            f"Underfitting: {train}, {e.heldout_split} {e.heldout_accuracy:.1%}: the model cannot separate even its training images.",
            evidence,
            _underfitting_steps(e),
        )
    return Verdict(
        "healthy",
        f"Healthy: {e.heldout_split} {e.heldout_accuracy:.1%}, well above {chance_words}" + (f", {train}." if train else "."),
        evidence,
        _healthy_steps(e),
    )


def _clearly_learning(chance: float) -> float:
    """An accuracy that would be clear learning: halfway from chance to 100%."""
    return chance + (1.0 - chance) / 2


def _one_class_headline(e: Evidence) -> str:
    return (
        f"Too few to tell: every {e.heldout_split} image is of one class, so its accuracy ({e.heldout_accuracy:.1%}) "
        f"cannot show that the model tells the {e.n_classes} classes apart."
    )


def _one_class_steps(e: Evidence) -> list[str]:
    steps = [f"Add {e.heldout_split} images of every class ({shortened(e.heldout_missing)} {'has' if len(e.heldout_missing) == 1 else 'have'} none)."]
    if e.cv_accuracy is not None and e.heldout_split != "cross-validation":
        steps.append(f"Meanwhile read the cross-validated accuracy over the training images ({e.cv_accuracy:.1%}, in the classifier line).")
    return steps


def _too_few_headline(e: Evidence, chance: float) -> str:
    low, high = e.heldout_ci95
    images = f"{e.heldout_images} {e.heldout_split} images are" if e.heldout_images else f"the {e.heldout_split} images are"
    if e.heldout_accuracy <= chance:
        return (
            f"Too few to tell: {images} too few: accuracy {e.heldout_accuracy:.1%} is not above chance ({chance:.1%}), "
            f"but its 95% interval {low:.0%}-{high:.0%} reaches far above it too."
        )
    return (
        f"Too few to tell: {images} too few: accuracy {e.heldout_accuracy:.1%}, "
        f"but its 95% interval {low:.0%}-{high:.0%} includes chance ({chance:.1%})."
    )


def _too_few_steps(e: Evidence, chance: float) -> list[str]:
    needed = images_to_tell(e.heldout_accuracy, chance)
    at_this = f"at {e.heldout_accuracy:.0%} accuracy, about {needed} held-out images would put the interval above chance" if needed else ""
    steps = [f"Hold out more images for testing ({at_this})." if at_this else "Hold out more images for testing."]
    if e.cv_accuracy is not None and e.heldout_split != "cross-validation":
        steps.append(
            f"Read the cross-validated accuracy over the training images instead ({e.cv_accuracy:.1%}, in the classifier line): "
            "it counts every training image once."
        )
    steps.append(_more_data(e, "More images per class"))
    return steps[:3]


def images_to_tell(accuracy: float, chance: float, limit: int = 100_000) -> int | None:
    """The fewest held-out images at which ``accuracy`` has a 95% Wilson interval above ``chance``."""
    if accuracy <= chance:
        return None
    n = 1
    while n <= limit:
        if wilson_interval(round(accuracy * n), n)[0] > chance:
            return n
        n = n + 1 if n < 100 else int(n * 1.05)
    return None


def _not_learning_steps(e: Evidence) -> list[str]:
    steps = []
    if e.suspects:
        steps.append(f"Check the labels: {e.suspects} training images get a low probability for their own label (see 'Likely label errors').")
    else:
        steps.append("Check that each folder's images really belong to its class, and that train and test come from the same source.")
    if e.strategy != "linear":
        steps.append("Use a linear head on a pretrained backbone's codes (--strategy linear): training a network needs far more images per class.")
    steps.append(_more_data(e, "More images per class"))
    return steps[:3]


def _overfitting_steps(e: Evidence) -> list[str]:
    steps = []
    if e.strategy == "scratch":
        steps.append("Start from pretrained weights: a linear head on CNN codes (--strategy linear) needs no training of the network.")
    elif e.strategy != "linear":
        if e.best_epoch is not None and e.epochs_run and e.best_epoch < e.epochs_run:
            steps.append(f"Stop at epoch {e.best_epoch} (early stopping kept it: validation loss was lowest there), or lower the learning rate.")
        steps.append(_augment_step(e))
        steps.append("Or train less of the network: --strategy linear keeps the pretrained weights fixed.")
    else:
        # The head's C is already the cross-validated best: regularising it harder costs accuracy.
        # What helps a linear head on fixed codes is more (or more varied) data, or better codes.
        steps.append(_more_data(e, "More data"))
        if e.better_tap:
            steps.append(f"Try the codes of {e.better_tap} (--tap {e.better_tap}): the layer sweep scored them higher.")
        if not e.finetune_lost:
            steps.append(f"Fine-tune with augmentation ({_finetune_option(e)}): it trains on varied copies of each image{_trial_words(e)}.")
        return steps[:3]
    steps.append(_more_data(e, "More data"))
    return steps[:3]


def _augment_step(e: Evidence) -> str:
    """More varied copies, or (where the run already made them) stronger regularisation; never the
    policy it ran with, and without mirroring where the probe saw mirroring change the images."""
    more_dropout = f"--set dropout={min(0.8, (e.dropout or 0.5) + 0.1):.1f}"
    if e.mirror_warned:
        return f"Augment without mirroring (--augmentation text_signs: the probe told mirrored images from their originals) and regularise more ({more_dropout})."
    if e.augmentation in (None, "none"):
        return f"Augment (--augmentation objects, or text_signs where mirroring changes the meaning) and regularise more ({more_dropout})."
    return f"Regularise more ({more_dropout}, --set mixup=0.2): it already trains on augmented copies ('{e.augmentation}')."


def _underfitting_steps(e: Evidence) -> list[str]:
    steps = []
    if e.strategy == "linear":
        if e.better_tap:
            steps.append(f"Try the codes of {e.better_tap} (--tap {e.better_tap}): the layer sweep scored them higher.")
        if not e.finetune_lost:
            steps.append(f"Fine-tune the network ({_finetune_option(e)}){_trial_words(e)}.")
        steps.append("Regularise the head less (larger C values).")
    else:
        longer = f"--epochs {max(24, 2 * e.epochs_run)}" if e.epochs_run else "--epochs 24"
        steps.append(f"Train longer or with a higher learning rate ({longer}, --set head_lr=0.003).")
        less = f"--set dropout={max(0.0, (0.5 if e.dropout is None else e.dropout) - 0.3):.1f}"
        if e.strategy in ("finetune_top", "gradual"):
            steps.append(f"Fine-tune more of the network (--strategy finetune_all) and regularise less ({less}).")
        else:  # finetune_all trains every layer already, scratch has no pretrained layers to free
            steps.append(f"Regularise less ({less}, --set label_smoothing=0).")
    if e.confused_pair:
        steps.append(f"Or merge classes that cannot be told apart: {e.confused_pair} dominate the errors.")
    return steps[:3]


def _healthy_steps(e: Evidence) -> list[str]:
    if _no_mistakes_measured(e):
        # nothing measured is left to gain; what more images would buy is a narrower interval
        low, high = e.heldout_ci95
        return [
            "To gain more: nothing measured is left: cross-validation and the held-out images show no mistakes.",
            f"Test on more images to be sure: {e.heldout_images} {e.heldout_split} images leave the 95% interval at {low:.1%}-{high:.1%}.",
        ]
    steps = [_more_data(e, "To gain more")]
    if e.confused_pair:
        steps.append(f"Look at the most confused pair, {e.confused_pair}: merge them if no one could tell them apart either.")
    if e.suspects:
        steps.append(f"Review the {e.suspects} training images a held-out probe puts in another class (report.html, 'Likely label errors'): fixing mislabelled ones lifts the ceiling.")
    if len(steps) < 2:
        steps.append(
            f"Fine-tuning may add a point or two: fit again with {_finetune_option(e)} and compare on the same split{_trial_words(e)}."
            if e.strategy == "linear" and not e.finetune_lost
            else "Nothing urgent: the per-class recall in report.html shows where the remaining errors are."
        )
    return steps[:3]


def _finetune_option(e: Evidence) -> str:
    """The fine-tuning strategy to suggest: the one the advisor's rule picks for data as similar to
    ImageNet as these measured (the top blocks do not adapt enough to data unlike it), else both."""
    if e.finetune_strategy:
        return f"--strategy {e.finetune_strategy}"
    return "--strategy finetune_top, or finetune_all for data unlike ImageNet"


def _trial_words(e: Evidence) -> str:
    return f" (the advisor's trial: {e.finetune_trial})" if e.finetune_trial else ""


def _no_mistakes_measured(e: Evidence) -> bool:
    return e.heldout_accuracy >= 1.0 and e.cv_accuracy is not None and e.cv_accuracy >= 1.0


def _more_data(e: Evidence, lead: str) -> str:
    have = f" (now {e.images_per_class:g} per class)" if e.images_per_class else ""
    if e.class_range and e.class_range[0] != e.class_range[1]:  # a median of 1 and 24 is not "1 per class"
        have = f" (now {e.class_range[0]} to {e.class_range[1]} per class)"
    # 5 bees beside 122 ants: more of every class is not the advice
    collect = "collect more images, of the smallest classes first" if e.imbalanced else "collect more images per class"
    if e.more_data and _curve_below_measured(e):
        # The curve is fitted on parts of the training images (3-fold, up to two thirds of them); on a
        # few images per class its points are noisy enough that its extrapolation can land below what
        # all of them measure, and "doubling them: ~91.8%" beside a measured 100% reads as a loss.
        return (
            f"{lead}: {collect}{have}; the learning curve, fitted on parts of the training images, "
            f"stays below the {e.cv_accuracy:.1%} cross-validated on all of them, so it cannot say how much more would add."
        )
    if e.more_data:
        # the curve grows every class by the same share; where the head weighted its classes, the
        # small ones are where the errors are (MRI: 52 to 2,560 per class, "now 717" the median)
        smallest = f" Grow the smallest classes first{have}." if e.imbalanced and not e.curve_flat else ""
        # the curve is cross-validated on the training images, so it speaks for images like them
        alike = " The curve is measured on the training images: it holds for new ones like them." if e.cv_overstated else ""
        return f"{lead}: {e.more_data}{smallest}{alike}"
    return f"{lead}: {collect}{have}."


def _curve_below_measured(e: Evidence) -> bool:
    # "flat" speaks of a gain, true at any level: hymenoptera's curve (96.0% now, 96.3% doubled) sits
    # below its 96.7% CV because its probe trains on two thirds of the images, and was told "cannot say"
    return not e.curve_flat and e.curve_doubled is not None and e.cv_accuracy is not None and e.curve_doubled <= e.cv_accuracy


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% confidence interval of a proportion; sound even at 0% or 100% on small samples."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (round(float(centre - half), 4), round(float(centre + half), 4))
