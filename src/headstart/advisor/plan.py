"""From measurements to a plan: which way to transfer, with which settings, and why.

The rule of thumb (cs231n's four cases) gives a first answer from size and similarity; cheap
measurements then confirm or overturn it: the layer sweep picks the tap for a linear head, and a
fine-tuning trial (when the time budget allows; trained as the real run would be) decides between
the linear head and fine-tuning on held-out images. A difference within the noise keeps the rule's
answer: the cheaper linear head for small data, fine-tuning for large data (see decide()).
The thresholds are calibrated on the datasets listed in docs/advisor.md.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, NamedTuple

import numpy as np

from .. import progress
from ..progress import format_seconds
from ..backbones import PRE_LOGITS, BackboneSpec
from ..data.augment import is_mirror_sensitive
from ..data.duplicates import grouped_hold_out, stratified_folds
from ..data.sampling import plan_imbalance
from ..strategies.finetune import FineTuneConfig
from ..strategies.linear import fit_linear_head, softmax
from .measure import Measurements, Similarity, SizeStats, TapScore, mirror_probe

# Median images per class below which a dataset is "small" (docs/advisor.md: on photos, fine-tuning
# gained under a point over the linear head at 20 and at ~120 images per class).
SMALL_PER_CLASS = 150
# "Similar to ImageNet": the BatchNorm-statistics distance on ImageNet's side of its threshold, set
# midway between the photo datasets and the nearest grey one (docs/advisor.md). The ImageNet head's
# confidence decides only for a backbone without BatchNorm statistics: it moves with the input size
# (oxford17flowers 0.45 at 224 px and 0.34 at 288; digits 0.12 at 224 and 0.62 at 96), where the
# distance stays on its side (flowers 0.32 and 0.34; digits 1.05 and 0.92).
SIMILAR_CONFIDENCE = 0.38  # mean max-probability of the ImageNet head
SIMILAR_BN_DISTANCE = 0.45  # BatchNorm-statistics distance
DEFAULT_CONFIG = FineTuneConfig()
FINETUNE_EPOCHS = DEFAULT_CONFIG.epochs
# The fine-tuning trial trains as many epochs as the real run would (a 6-epoch trial scored 11 to 17
# points below the full run and missed fine-tuning's gain on digits: docs/advisor.md). Below: the
# share of the sample held out to score it, and the smallest gain that counts.
TRIAL_HELD_OUT = 0.2
MIN_GAIN = 0.01
# One split scores the trial on a fifth of the sample (30 images at 15 per class, where two images
# decide); further splits of the same 5-fold partition, each image scored once, run while advice stays
# within first contact's bound (60 s on a few hundred images; this leaves room for the fit to start).
TRIAL_FOLDS = round(1 / TRIAL_HELD_OUT)
ADVICE_SECONDS = 45.0
# Cost of one fine-tuning image-epoch relative to one eager forward pass (backward ~2x forward,
# plus augmentation), used to keep the trial inside the time budget.
# Measured on hymenoptera (2-core CPU, bf16): an epoch of finetune_top took about one forward
# pass's time per image, finetune_all about two.
COST_FACTOR = {"finetune_top": 1.0, "finetune_all": 2.0}
# The other embedded ImageNet backbone (installed offline, always there), whose top codes a linear
# head on small data similar to ImageNet may read beside the first's: on flowers-17 the two joined
# scored 93.2% in cross-validation against 90.3% alone (docs/advisor.md).
PARTNERS = {"mobilenet_v2": "efficientnet_lite0", "efficientnet_lite0": "mobilenet_v2"}


@dataclass
class Alternative:
    strategy: str  # "linear", "finetune_top", "finetune_all"
    tap: str
    accuracy: float
    noise: float  # standard error of the estimate
    how: str  # how it was measured


@dataclass
class Plan:
    strategy: str  # "linear", "finetune_top" or "finetune_all"
    tap: str  # codes the linear head reads (fine-tuning: the head its network is averaged with; its warm start reads pre_logits)
    backbone: str  # whose codes: the measured backbone, or it and its partner ("mobilenet_v2+efficientnet_lite0")
    case: str  # the cs231n case, e.g. "small, similar"
    rule: str  # what the rule of thumb alone would do
    settings: dict  # fine-tuning settings (FineTuneConfig fields) when fine-tuning
    imbalance: str
    measurements: Measurements
    alternatives: list[Alternative] = field(default_factory=list)
    explanation: list[str] = field(default_factory=list)
    seconds: float = 0.0
    from_cache: bool = False  # reused: made before from the same images, labels and settings
    input_size: int | None = None  # the side the images were measured at (None in plans from before it was kept)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        """The plan :meth:`to_dict` gave (as read back from JSON)."""
        m = d["measurements"]
        measurements = Measurements(
            size=SizeStats(**m["size"]),
            similarity=Similarity(**m["similarity"]),
            sweep=[TapScore(**s) for s in m["sweep"]],
            n_measured=m["n_measured"],
            sweep_classes=m.get("sweep_classes", 0),
            seconds_per_image=m["seconds_per_image"],
            seconds=m["seconds"],
        )
        # JSON has no tuples; fine-tuning settings such as augmentation=("flip", "crop") had them.
        settings = {k: tuple(v) if isinstance(v, list) else v for k, v in d["settings"].items()}
        alternatives = [Alternative(**a) for a in d["alternatives"]]
        return cls(**{**d, "measurements": measurements, "settings": settings, "alternatives": alternatives})

    def __str__(self) -> str:
        """The case, the choice and its reasons, as ``headstart advise`` prints them under its first line."""
        skew = f"; imbalance: {self.imbalance}" if self.measurements.size.imbalance_ratio > 1.5 else ""
        lines = [f"  case        {self.case}", f"  plan        {self.describe()}{skew}"]
        return "\n".join(lines + [f"  - {line}" for line in self.explanation])

    def __repr__(self) -> str:
        # The dataclass's own repr gave every measurement and alternative: a wall in a notebook cell.
        return f"Plan(strategy={self.strategy!r}, tap={self.tap!r}, backbone={self.backbone!r}, case={self.case!r}; print() it for the reasons)"

    def describe(self) -> str:
        if self.strategy != "linear":
            averaged = self.tap != PRE_LOGITS and self.settings.get("ensemble", DEFAULT_CONFIG.ensemble)
            with_head = f", averaged with the linear classifier on the {self.tap} codes" if averaged else ""
            return f"{self.strategy} (head warm-started from the linear classifier{with_head})"
        if "+" in self.backbone:
            return describe_joined(self.backbone, self.tap)
        return "linear classifier on " + ("top-layer codes" if self.tap == PRE_LOGITS else f"the {self.tap} codes")


def classify(measurements: Measurements) -> tuple[bool, bool]:
    """(small, similar) from the measurements and the calibrated thresholds."""
    small = measurements.size.median_per_class < SMALL_PER_CLASS
    s = measurements.similarity
    if s.bn_distance is not None:
        similar = s.bn_distance <= SIMILAR_BN_DISTANCE
    elif s.head_confidence is not None:
        similar = s.head_confidence >= SIMILAR_CONFIDENCE
    else:
        similar = True  # no signal: assume the usual case, photos
    return small, similar


def rule_of_thumb(small: bool, similar: bool) -> tuple[str, str]:
    """The cs231n answer: (strategy, in words)."""
    if small and similar:
        return "linear", "a linear classifier on the top-layer codes"
    if small:
        return "linear", "a linear classifier on codes from earlier in the network (the top layers are specific to ImageNet)"
    if similar:
        return "finetune_top", "fine-tune the top blocks"
    return "finetune_all", "fine-tune through the whole network, from the pretrained weights"


def trial_candidate(similar: bool) -> str:
    """The fine-tuning strategy worth a trial. On data unlike ImageNet the top blocks alone do not
    adapt enough: finetune_top lost to finetune_all on 3 of the 4 grey benchmark sets, by 5 to 24
    points (docs/advisor.md), so the trial tries the whole network, as the rule does for large data."""
    return "finetune_top" if similar else "finetune_all"


def best_linear(sweep: list[TapScore], prefer_earlier: bool) -> TapScore:
    """The best tap of the sweep; a tap within the noise of the best loses to the top tap (it is
    the default and the cheapest to explain), unless the rule points earlier."""
    top = next(s for s in sweep if s.tap == PRE_LOGITS)
    best = max(sweep, key=lambda s: s.cv_accuracy)
    if prefer_earlier or best.tap == PRE_LOGITS:
        return best
    noise = max(best.cv_std, top.cv_std) / math.sqrt(best.folds)
    return top if best.cv_accuracy - top.cv_accuracy <= max(noise, MIN_GAIN / 2) else best


def estimate_seconds(strategy: str, n_images: int, measurements: Measurements, epochs: int) -> float:
    return epochs * n_images * measurements.seconds_per_image * COST_FACTOR[strategy]


@dataclass
class _Budget:
    """What fine-tuning would cost here, against the time budget."""

    candidate: str  # the fine-tuning strategy worth a trial
    epochs: int
    final: float  # seconds of the real run
    trial: float  # seconds of the trial
    spent: float
    limit: float | None

    def allows(self, seconds: float) -> bool:
        return self.limit is None or self.spent + seconds <= self.limit


class TrialResult(NamedTuple):
    """Fine-tuning against the linear head on the trial's held-out images, pooled over its splits."""

    finetuned: float  # accuracy
    linear: float
    noise: float  # standard error of the paired difference
    held: int  # images scored (each once)
    splits: int = 1
    time_bound: int | None = None  # the fewest epochs a split's time left room for, when fewer than asked


@dataclass
class _Choice:
    strategy: str = "linear"
    line: str | None = None  # what the trial (or its absence) says
    budget_bound: bool = False
    alternatives: list[Alternative] = field(default_factory=list)


def decide(
    spec: BackboneSpec,
    measurements: Measurements,
    sample: dict,
    images: list,
    *,
    time_budget: float | None = None,
    tap: str | None = None,
    finetune_overrides: dict | None = None,
    random_state: int = 0,
    preprocessing=None,
    cache_dir=None,
) -> Plan:
    """Choose the plan; runs the fine-tuning trial when the rule is in doubt and time allows.
    ``cache_dir``: where the measuring pass cached its graph (the mirror probe runs in it)."""
    start = time.perf_counter()
    preprocessing = preprocessing or spec.preprocessing
    small, similar = classify(measurements)
    rule_strategy, rule_words = rule_of_thumb(small, similar)
    linear = _linear_choice(measurements.sweep, small and not similar, tap)
    overrides = dict(finetune_overrides or {})
    budget = _budget(measurements, sample, similar, int(overrides.get("epochs", FINETUNE_EPOCHS)), time_budget)
    augmentation_line = None
    if not (small and similar) and budget.allows(budget.final) and "augmentation" not in overrides:
        overrides["augmentation"], augmentation_line = choose_augmentation(spec, images, sample, preprocessing, random_state, cache_dir)
    clock = _AdviceClock(start - measurements.seconds, budget, small)
    trial = lambda: _trial(spec, budget.candidate, linear.tap, sample, images, {**overrides, "epochs": budget.epochs}, random_state, preprocessing, clock.more_time, clock.seconds_left)  # noqa: E731
    choice = _choose_strategy(small, similar, rule_strategy, linear, sample, budget, trial)
    strategy = choice.strategy
    alternatives = [Alternative("linear", s.tap, s.cv_accuracy, s.cv_std / math.sqrt(s.folds), "cross-validated on the sample") for s in measurements.sweep]
    alternatives += choice.alternatives
    backbone, linear_tap, partner_line = spec.name, linear.tap, _partner_skipped_line(sample) if strategy == "linear" else None
    if strategy == "linear" and "partner" in sample:
        joined, backbone, linear_tap, partner_line = _with_partner(spec, linear, measurements, sample, random_state)
        alternatives.append(joined)
    case = f"{'small' if small else 'large'}, {'similar' if similar else 'different'}"
    lines = [_size_line(measurements, small), _similarity_line(measurements, similar), _sweep_line(measurements), f"Rule of thumb ({case}): {rule_words}."]
    lines += [line for line in (choice.line, augmentation_line if strategy != "linear" else None, partner_line, _overrun_line(measurements, time_budget)) if line]
    ensemble = bool(overrides.get("ensemble", DEFAULT_CONFIG.ensemble))
    lines += _closing_lines(spec, strategy, backbone, linear, linear_tap, measurements.sweep, tap is None, rule_strategy, small, similar, choice.budget_bound, ensemble)
    settings = {"epochs": budget.epochs, "head_lr": DEFAULT_CONFIG.head_lr, "lr_mult": DEFAULT_CONFIG.lr_mult, **overrides} if strategy != "linear" else {}
    return Plan(
        strategy=strategy,
        tap=linear_tap,  # fine-tuning predicts with this head averaged in, the head its trial was scored with
        backbone=backbone,
        case=case,
        rule="linear (earlier tap)" if small and not similar else rule_strategy,
        settings=settings,
        imbalance=plan_imbalance(sample["labels"], "auto").reason,
        measurements=measurements,
        alternatives=alternatives,
        explanation=lines,
        seconds=measurements.seconds + time.perf_counter() - start,
    )


def _partner_skipped_line(sample: dict) -> str | None:
    """Said when the time budget left the second backbone out (a step dropped in silence reads as
    one never considered)."""
    if "partner_skipped" not in sample:
        return None
    partner, seconds = sample["partner_skipped"]
    return f"Second embedded backbone: {partner} not tried: its codes would take about {format_seconds(seconds)}, more than the time budget leaves."


def _overrun_line(measurements: Measurements, time_budget: float | None) -> str | None:
    if time_budget is None or measurements.seconds <= time_budget:
        return None
    return f"Time budget {time_budget:g} s: measuring alone took {measurements.seconds:.1f} s (it is never cut short), so nothing optional was tried."


@dataclass
class _AdviceClock:
    """How much more of the trial advice has time for, from when advice started."""

    started: float  # time.perf_counter() when measuring began
    budget: _Budget
    small: bool

    def more_time(self, seconds: float) -> bool:
        """Whether another trial split of ``seconds`` keeps advice within first contact's bound, and
        advice and the fit within the budget."""
        elapsed = time.perf_counter() - self.started + seconds
        return elapsed <= ADVICE_SECONDS and self.budget.allows(elapsed + self.budget.final)

    def seconds_left(self) -> float | None:
        """How long the next split may fine-tune: on small data, what is left of first contact's
        advice bound (its schedule is shortened to fit; the demo's one split took 54 s of a 67 s
        fit); on large data no bound, since its fit takes many times longer than any advice and a
        trial cut short would be unfair to the fine-tuning the rule asks for."""
        return max(0.0, ADVICE_SECONDS - (time.perf_counter() - self.started)) if self.small else None


def _linear_choice(sweep: list[TapScore], prefer_earlier: bool, tap: str | None) -> TapScore:
    """The sweep's best tap, or the user's (its CV score is the sweep's when the sweep tried it)."""
    if tap is None:
        return best_linear(sweep, prefer_earlier=prefer_earlier)
    return next((s for s in sweep if s.tap == tap), TapScore(tap, 0.0, 0, float("nan"), float("nan")))


def _budget(measurements: Measurements, sample: dict, similar: bool, epochs: int, time_budget: float | None) -> _Budget:
    candidate = trial_candidate(similar)
    trial_images = int(len(sample["labels"]) * (1 - TRIAL_HELD_OUT))
    return _Budget(
        candidate=candidate,
        epochs=epochs,
        final=estimate_seconds(candidate, measurements.size.n_images, measurements, epochs),
        trial=estimate_seconds(candidate, trial_images, measurements, epochs),
        spent=measurements.seconds,
        limit=time_budget,
    )


def _choose_strategy(small, similar, rule_strategy, linear: TapScore, sample, budget: _Budget, trial) -> _Choice:
    """Linear or fine-tuning: by the rule, by a trial (``trial()`` runs it), or by the budget."""
    if small and similar:
        return _Choice()  # the rule and the sweep agree on the cheap answer; nothing to try
    if int(np.bincount(sample["labels"]).min()) < 5:
        strategy = rule_strategy if rule_strategy != "linear" and budget.allows(budget.final) else "linear"
        return _Choice(strategy, "No fine-tuning trial: some class has fewer than 5 images to split.")
    if rule_strategy == "linear" and (misses := linear_misses(linear, sample)) is not None and misses < 2:
        return _Choice("linear", f"No fine-tuning trial: the linear head misses {misses} of the {len(sample['labels'])} measured images in cross-validation, leaving fine-tuning nothing to win beyond a trial's noise.")
    if budget.allows(budget.trial + budget.final):
        held = int(round(len(sample["labels"]) * TRIAL_HELD_OUT))
        progress.announce(
            f"fine-tuning trial: {budget.candidate}, up to {budget.epochs} epochs on {len(sample['labels']) - held} of the measured images, "
            f"against the linear head on the other {held} (at most about {format_seconds(budget.trial)} a split, early stopping may end it sooner; "
            f"up to {TRIAL_FOLDS} splits while advice stays within {ADVICE_SECONDS:.0f} s)",
        )
        return _judge_trial(TrialResult(*trial()), budget, rule_strategy, linear)
    if rule_strategy != "linear" and budget.allows(budget.final):
        return _Choice(rule_strategy, f"No time for a trial within the {budget.limit:.0f} s budget; following the rule unconfirmed.")
    # On small data the fine-tuning the rule doubts is run only after a trial confirms it: both must fit.
    needed, what = (budget.trial + budget.final, "A fine-tuning trial and run") if rule_strategy == "linear" else (budget.final, "Fine-tuning")
    return _Choice(
        "linear", f"{what} would take about {needed:.0f} s more, past the {budget.limit:.0f} s budget ({budget.spent:.0f} s spent measuring); staying linear.",
        budget_bound=True,
    )


def linear_misses(linear: TapScore, sample) -> int | None:
    """How many measured images the linear head gets wrong in cross-validation (None where a tap
    given was not cross-validated). The trial chooses fine-tuning only where it wins more paired
    images than the square root of those the two disagree on (the noise in :func:`_trial`): with
    at most one miss to win back, it cannot."""
    return round((1 - linear.cv_accuracy) * len(sample["labels"])) if math.isfinite(linear.cv_accuracy) else None


def _judge_trial(result: TrialResult, budget: _Budget, rule_strategy: str, linear: TapScore) -> _Choice:
    ft, lin, noise, held, splits, time_bound = result
    candidate, gain, margin = budget.candidate, ft - lin, max(MIN_GAIN, noise)
    if rule_strategy == "linear":  # fine-tuning must beat the rule's linear head beyond the noise
        choose_finetune = gain > margin
    else:
        # The rule says fine-tune (large data): only a clear loss overturns it. The trial trains
        # on 68% of the images and the real run on 85%, and fine-tuning gains more from the
        # extra images than a linear head does, so a tie in the trial is not a tie in the run
        # (Fashion-MNIST-200: trial -0.5 points, full run +2.1; docs/advisor.md).
        choose_finetune = gain >= -margin
    if choose_finetune:
        verdict = f"fine-tuning wins by {gain * 100:.1f} points (noise {noise * 100:.1f})." if gain > margin else (
            f"{gain * 100:+.1f} points, within the noise ({noise * 100:.1f}): the rule's {candidate} stands."
        )
    elif rule_strategy != "linear":
        verdict = f"fine-tuning loses by {-gain * 100:.1f} points, beyond the noise ({noise * 100:.1f}): the linear head."
    elif gain > 0:
        verdict = f"+{gain * 100:.1f} points, within the noise ({noise * 100:.1f}): the cheaper linear head."
    else:
        verdict = f"fine-tuning does no better ({gain * 100:+.1f} points): the linear head."
    where = f"{held} held-out images" + (f" ({splits} splits, each image scored once)" if splits > 1 else "")
    epochs = f"{budget.epochs} epochs" if time_bound is None else f"{time_bound} of {budget.epochs} epochs (the {ADVICE_SECONDS:.0f} s advice bound)"
    alternatives = [
        Alternative(candidate, PRE_LOGITS, ft, noise, f"trial: {epochs}, scored on {where}"),
        Alternative("linear", linear.tap, lin, noise, f"trial: same splits, scored on {where}"),
    ]
    line = f"Trial on {where}: {candidate} {ft:.1%} vs linear ({linear.tap}) {lin:.1%}: {verdict}"
    if time_bound is not None:
        line += f" Its fine-tuning had time for {time_bound} of {budget.epochs} epochs within the {ADVICE_SECONDS:.0f} s advice bound, so it may understate fine-tuning."
    return _Choice(candidate if choose_finetune else "linear", line, alternatives=alternatives)


def _closing_lines(spec, strategy, backbone, linear, linear_tap, sweep, tap_chosen, rule_strategy, small, similar, budget_bound, ensemble) -> list[str]:
    """The "Plan:" line, and for small similar data what fine-tuning might still add."""
    top = next(s for s in sweep if s.tap == PRE_LOGITS)
    if backbone == spec.name:
        sweep_best = max(sweep, key=lambda s: s.cv_accuracy) if tap_chosen else None  # an asked tap needs no reason
        lines = [_plan_line(strategy, linear, top, sweep_best, rule_strategy, small, similar, budget_bound, ensemble)]
    else:
        lines = [f"Plan: {describe_joined(backbone, linear_tap)}, joined."]
    if strategy == "linear" and small and similar:
        # On flowers (20 per class) finetune_top beat this head by 1.6 points; on hymenoptera it tied.
        # A head with no mistake in cross-validation leaves no point to add, as the verdict says.
        gain = "; it may add a point or two: --strategy finetune_top." if linear.cv_accuracy < 1 else ", and the linear head makes no mistake in cross-validation."
        lines.append(f"Fine-tuning is not tried at this size (too few images to score it fairly){gain}")
    return lines


def choose_augmentation(spec, images, sample, preprocessing, random_state, cache_dir=None) -> tuple[str, str]:
    """``objects`` (which mirrors images), unless a probe tells up to 100 training images from their
    mirror images well above chance: then ``text_signs``, which never mirrors."""
    index = sample["index"]
    if len(index) < 10:
        return "objects", "Augmentation: objects (too few images to check whether mirroring changes their meaning)."
    progress.announce("augmentation: can a probe tell the images from their mirror images?")
    accuracy, n_checked = mirror_probe(spec, [images[i] for i in index], preprocessing, random_state, codes=sample["codes"].get(PRE_LOGITS), cache_dir=cache_dir)
    if is_mirror_sensitive(accuracy, n_checked):
        return "text_signs", f"Augmentation: text_signs, no mirroring (a probe tells mirrored images from originals {accuracy:.0%} of the time)."
    return "objects", f"Augmentation: objects, with mirroring (mirrored images look like originals: probe {accuracy:.0%}, chance 50%)."


def _trial(
    spec, candidate, linear_tap, sample, images, overrides, random_state, preprocessing,
    more_time: Callable[[float], bool] = lambda _: False, seconds_left: Callable[[], float | None] = lambda: None,
) -> TrialResult:
    """Fine-tune ``candidate`` as the real run would, on four fifths of the sample, and score it (averaged
    with the linear head on ``linear_tap``, as the real run predicts, unless ``ensemble`` is off) and
    that linear head alone on the same held-out fifth; then the next fifth, while
    ``more_time(seconds of the last split)`` says another fits. Every image is held out at most once,
    so the splits' hits pool into one paired comparison. Each split fine-tunes for at most
    ``seconds_left()`` (None: no bound), its schedule shortened to the epochs that fit."""
    labels, groups = sample["labels"], sample.get("groups")
    ft_hits, linear_hits, bounds = [], [], []
    folds = stratified_folds(labels, TRIAL_FOLDS, groups=groups, random_state=random_state)
    for number, (fit_rows, held_rows) in enumerate(folds, 1):
        tick = time.perf_counter()
        split_overrides = {**overrides, "time_limit": seconds_left()}
        ft, linear, bound = _trial_split(spec, candidate, linear_tap, sample, images, split_overrides, random_state, preprocessing, fit_rows, held_rows)
        ft_hits.append(ft)
        linear_hits.append(linear)
        bounds += [bound] if bound is not None else []
        seconds = time.perf_counter() - tick
        if number == len(folds) or not more_time(seconds):
            break
        progress.announce(f"fine-tuning trial: split {number + 1} of up to {len(folds)} (about {format_seconds(seconds)}; more while advice stays within {ADVICE_SECONDS:.0f} s)")
    ft_correct, linear_correct = np.concatenate(ft_hits), np.concatenate(linear_hits)
    discordant = int((ft_correct != linear_correct).sum())
    noise = math.sqrt(discordant) / len(ft_correct)  # standard error of the paired difference
    return TrialResult(float(ft_correct.mean()), float(linear_correct.mean()), noise, len(ft_correct), len(ft_hits), min(bounds, default=None))


def _trial_split(spec, candidate, linear_tap, sample, images, overrides, random_state, preprocessing, fit_rows, held_rows) -> tuple[np.ndarray, np.ndarray, int | None]:
    """One split of the trial: which held-out images fine-tuning, and the linear head, get right,
    and the epochs its time limit left room for (None: all it asked for)."""
    from ..strategies.finetune import FineTuneConfig, finetune, network_scores

    labels, index, groups = sample["labels"], sample["index"], sample.get("groups")
    fit_groups = groups[fit_rows] if groups is not None else None
    fit_part, stop_part = (fit_rows[part] for part in grouped_hold_out(labels[fit_rows], 0.15, groups=fit_groups, random_state=random_state))
    codes = sample["codes"]
    if not all(part in codes for part in linear_tap.split("+")):
        linear_tap = PRE_LOGITS  # a user's tap the sweep did not read: compare with the top one
    linear_codes = _tap_codes(codes, linear_tap)
    head, _ = fit_linear_head(linear_codes[fit_rows], labels[fit_rows], random_state=random_state, groups=fit_groups)
    linear_correct = head.decision_function(linear_codes[held_rows]).argmax(1) == labels[held_rows]
    warm, _ = fit_linear_head(codes[PRE_LOGITS][fit_part], labels[fit_part], random_state=random_state, groups=groups[fit_part] if groups is not None else None)
    config = FineTuneConfig(**{**overrides, "strategy": candidate, "seed": random_state})
    result = finetune(
        spec,
        [images[index[r]] for r in fit_part],
        labels[fit_part],
        [images[index[r]] for r in stop_part],
        labels[stop_part],
        config,
        n_classes=int(labels.max()) + 1,
        head_init=warm,
        preprocessing=preprocessing,  # train at the size the held-out images are scored at
        name="trial",
    )
    scores, _ = network_scores(result.net, [images[index[r]] for r in held_rows], preprocessing)
    if config.ensemble:  # as the real run predicts: averaged with the linear head it is compared with, fitted on what the network saw
        scores = np.log(softmax(np.nan_to_num(scores)) + head.predict_proba(linear_codes[held_rows]))
    ft_correct = np.nan_to_num(scores, nan=-np.inf).argmax(1) == labels[held_rows]
    return ft_correct, linear_correct, result.history.time_bound


def describe_joined(backbone: str, tap: str) -> str:
    """A joined-backbone linear plan in words: one tap for all (the top one), or one tap each."""
    names, taps = backbone.split("+"), tap.split("+")
    if len(taps) != len(names):
        return f"linear classifier on the {'top-layer' if tap == PRE_LOGITS else tap} codes of " + " and ".join(names)
    return "linear classifier on " + " and ".join(f"{_tap_words(t)} of {n}" for n, t in zip(names, taps))


def _tap_words(tap: str) -> str:
    return "the top-layer codes" if tap == PRE_LOGITS else f"the {tap} codes"


def _with_partner(spec: BackboneSpec, linear: TapScore, m: Measurements, sample: dict, random_state: int) -> tuple[Alternative, str, str, str]:
    """The linear head's backbone and tap once the partner's codes are offered: both backbones
    where joining wins beyond the noise, else ``linear``'s; with the alternative and its line.
    The partner's codes join one tap of this backbone; where the sweep chose two of its taps
    joined, the best single one joins the partner's, and must beat those two."""
    own = linear if "+" not in linear.tap else max((t for t in m.sweep if "+" not in t.tap), key=lambda t: t.cv_accuracy)
    joined, wins, line = _partner_check(spec, own, sample, random_state, against=linear, scope=_sweep_scope(m))
    if not wins:
        return joined, spec.name, linear.tap, line
    partner, _, partner_tap = sample["partner"]
    return joined, f"{spec.name}+{partner}", own.tap if partner_tap == own.tap else f"{own.tap}+{partner_tap}", line  # one tap for both, or one each


def _partner_check(
    spec: BackboneSpec, linear: TapScore, sample: dict, random_state: int, against: TapScore | None = None, scope: str = ""
) -> tuple[Alternative, bool, str]:
    """Cross-validate a linear head on ``spec``'s codes at ``linear``'s tap and its partner's at
    ``sample["partner"]``'s tap joined (as ConcatExtractor joins them), against ``spec``'s head
    ``against`` (default: ``linear``'s) alone; ``scope`` says which classes, as the sweep's line does.
    Returns the joined alternative (its ``tap`` reads "A+B pre_logits", or "A+B features.13+blocks.5"
    where each has its own), whether it wins beyond the noise, and the line that says so."""
    from ..features.extract import join_parts

    against = against or linear
    partner, partner_codes, partner_tap = sample["partner"]
    joined = join_parts([_tap_codes(sample["codes"], linear.tap), partner_codes])
    _, report = fit_linear_head(joined, sample["labels"], random_state=random_state, groups=sample.get("groups"))
    accuracy, std = report.cv_score or 0.0, report.cv_score_std or 0.0
    noise = max(std, against.cv_std) / math.sqrt(max(report.cv_folds, 1))
    gain = accuracy - against.cv_accuracy
    taps = linear.tap if partner_tap == linear.tap else f"{linear.tap}+{partner_tap}"
    alternative = Alternative("linear", f"{spec.name}+{partner} {taps}", accuracy, noise, "cross-validated on the sample")
    margin = max(noise, MIN_GAIN / 2)  # the noise, or half a point where the folds agree closely
    wins = gain > margin
    over = f" over its {against.tap} codes" if against is not linear else ""  # the sweep's two taps joined
    if wins:
        verdict = f"+{gain * 100:.1f} points{over}, beyond the noise ({margin * 100:.1f}): the head reads both"
    else:
        verdict = f"{gain * 100:+.1f} points{over}, within the noise ({margin * 100:.1f}): {spec.name} alone"
    what = f"{spec.name} and {partner} codes" if partner_tap == linear.tap else f"{spec.name} {linear.tap} and {partner} {partner_tap} codes"
    line = f"Second embedded backbone: {what} joined score {accuracy:.1%} +- {std * 100:.1f} ({report.cv_folds}-fold CV{scope}): {verdict}."
    return alternative, wins, line


def _tap_codes(codes: dict[str, np.ndarray], tap: str) -> np.ndarray:
    return np.hstack([codes[part] for part in tap.split("+")])


def _size_line(m: Measurements, small: bool) -> str:
    s = m.size
    skew = f", imbalance {s.imbalance_ratio:.1f}:1" if s.imbalance_ratio > 1.5 else ""
    largest = round(s.min_per_class * s.imbalance_ratio)  # the range, not the minimum alone: of 2 classes the median is the smaller
    spread = f"median; {s.min_per_class} to {largest}, " if largest > s.min_per_class else "each, "
    return (
        f"{s.n_classes} classes, {s.median_per_class:g} images per class ({spread}{s.n_images} in all{skew}): "
        f"{'small' if small else 'large'} (threshold {SMALL_PER_CLASS} per class)."
    )


def _similarity_line(m: Measurements, similar: bool) -> str:
    s = m.similarity
    parts = []
    if s.bn_distance is not None:
        parts.append(f"BN-statistics distance {s.bn_distance:.2f} (similar <= {SIMILAR_BN_DISTANCE})")
    if s.head_confidence is not None:  # it decides only without the distance
        parts.append(f"ImageNet head confidence {s.head_confidence:.2f}" + (" (recorded)" if s.bn_distance is not None else f" (similar >= {SIMILAR_CONFIDENCE})"))
    if not parts:
        return "Similarity to ImageNet: not measurable with this backbone (no ImageNet head, no BatchNorm statistics); assumed high, as for photos."
    return f"Similarity to ImageNet: {'high' if similar else 'low'} ({'; '.join(parts)})."


def _sweep_scope(m: Measurements) -> str:
    """Which classes the sweep (and the second backbone, on the same sample) was scored on. Said, since
    fewer classes score higher than the final head's cross-validation on all of them (300 classes:
    53.2% on 100 of them in the plan, 34.0% on all in the classifier line)."""
    return f" on {m.sweep_classes} of the {m.size.n_classes} classes, chosen at random" if 0 < m.sweep_classes < m.size.n_classes else ""


def _sweep_line(m: Measurements) -> str:
    top = next(s for s in m.sweep if s.tap == PRE_LOGITS)
    others = ", ".join(f"{s.tap}: {s.cv_accuracy:.1%}" for s in m.sweep if s.tap != PRE_LOGITS)
    return f"Layer sweep ({top.folds}-fold CV{_sweep_scope(m)}): top tap {top.cv_accuracy:.1%} +- {top.cv_std * 100:.1f}" + (f", {others}." if others else ".")


def _plan_line(
    strategy: str, linear: TapScore, top: TapScore, sweep_best: TapScore | None, rule_strategy: str, small: bool, similar: bool, budget_bound: bool, ensemble: bool,
) -> str:
    if strategy != "linear":
        verdict = "as the rule says" if strategy == rule_strategy else "the trial overturned the rule"
        averaged = f"; it predicts averaged with the linear classifier on {_tap_words(linear.tap)}" if ensemble else ""
        return f"Plan: {strategy}, head warm-started from the linear classifier ({verdict}){averaged}."
    if linear.tap == PRE_LOGITS:
        where = "top-layer codes"
        if small and not similar:
            where += " (the sweep overturned the rule: no earlier tap beat the top one beyond the noise)"
        elif sweep_best is not None and sweep_best.cv_accuracy > top.cv_accuracy:  # say why the sweep's best tap is not the plan's
            where += f" ({sweep_best.tap}'s {sweep_best.cv_accuracy:.1%} in the sweep is within the noise of the top tap's {top.cv_accuracy:.1%})"
    elif math.isnan(linear.cv_accuracy):
        where = f"{linear.tap} codes (as asked)"
    else:
        where = f"{linear.tap} codes ({linear.cv_accuracy:.1%} in the sweep against the top tap's {top.cv_accuracy:.1%})"
    if rule_strategy != "linear" and budget_bound:
        return f"Plan: linear classifier on {where}; the time budget rules out the rule's {rule_strategy}."
    if rule_strategy != "linear":
        return f"Plan: linear classifier on {where}; measured, overturning the rule's {rule_strategy}."
    return f"Plan: linear classifier on {where}."
