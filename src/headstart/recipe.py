"""From the estimator's parameters to what a fit runs: every check in one place, then one Recipe.

``check_params(params)`` validates every parameter at the start of a fit, before the advisor or any
image: each bad value is one :class:`~headstart.errors.DataError` line naming what was given, what
is allowed and the fix. ``resolve(params, plan)`` then turns the parameters (and, for
``strategy="auto"``, the advisor's plan) into a :class:`Recipe`: which strategy, backbone(s),
tap(s) and fine-tuning settings run. Nothing else in headstart compares strategy strings.
"""

from __future__ import annotations

import difflib
import numbers
from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np

from . import progress
from .advisor import Plan
from .backbones import backbone_taps, get_backbone
from .backbones.scratch import DEFAULT_INIT
from .data.images import ImageSource
from .errors import DataError, HeadstartError, check_choice
from .features import code_extractor
from .features.engine import ENGINES
from .hardware import resolve_device
from .strategies.finetune import STRATEGIES, FineTuneConfig
from .strategies.linear import check_solver

STRATEGY_CHOICES = ("auto", "linear", "scratch", *STRATEGIES)
CLASS_WEIGHTS = ("auto", "balanced", None)
# strategy="scratch": a randomly initialised network needs every layer learning at the full rate,
# BatchNorm statistics of its own, and more epochs than fine-tuning (finetune={...} overrides these);
# no ensemble with the linear head, which reads a random network's codes (from scratch means no transfer);
# early stopping's pick, since a random start's 30 epochs are not a schedule measured to end well.
SCRATCH_DEFAULTS = {"lr_mult": 1.0, "batchnorm": "batch", "epochs": 30, "patience": 8, "ensemble": False, "keep": "best"}
FINETUNE_SETTINGS = tuple(f.name for f in fields(FineTuneConfig))
FINETUNE_TYPES = {f.name: f.type for f in fields(FineTuneConfig)}  # annotations, as strings
# The largest side a fit reads images at (a 20,000 px crop would be refused by the decoder as a
# decompression bomb, after the advisor's work).
MAX_INPUT_SIZE = 2048
# The smallest: the backbones reduce their input 32-fold, so under 16 px their last maps are
# padding more than image (MobileNetV2 fitted and predicted at 8 px without a word); the style
# descriptors refuse the same.
MIN_INPUT_SIZE = 16
# Training images whose headers decide the input size, spread evenly over the list.
SIZE_SAMPLE = 32


@dataclass(frozen=True)
class Runtime:
    """How a model runs here, never what it means: the machine-side parameters."""

    engine: str = "auto"
    device: str = "auto"
    batch_size: int = 32
    cache: bool = True
    cache_dir: str | None = None
    progress: bool = False

    @classmethod
    def from_params(cls, params: dict) -> "Runtime":
        return cls(**{**{f.name: params[f.name] for f in fields(cls)}, "progress": progress.wanted(params["progress"])})

    def extractor(self, backbone: str, tap: str | None, input_size: int | None):
        """The code extractor for ``backbone`` at ``tap`` (see :func:`~headstart.features.code_extractor`)."""
        return code_extractor(
            backbone, tap, input_size=input_size, engine=self.engine, device=self.device, batch_size=self.batch_size, cache=self.cache, cache_dir=self.cache_dir
        )


@dataclass(frozen=True)
class Recipe:
    """What a fit runs, resolved once."""

    strategy: str  # "linear", "finetune_top", "finetune_all", "gradual" or "scratch"; never "auto"
    backbone: str  # the network (or networks joined by "+") the codes come from
    tap: str | None  # where the linear head reads the codes; None: the backbone's default
    finetune: FineTuneConfig | None  # the network's training; None for a linear head
    check_mirroring: bool = False  # warn after fine-tuning if the augmentation mirrors mirror-sensitive images

    @property
    def from_scratch(self) -> bool:
        return self.strategy == "scratch"


def needs_plan(params: dict) -> bool:
    """Whether the advisor decides (strategy="auto"); codes joined from several backbones can only
    feed a linear head, so they leave it nothing to choose."""
    return params["strategy"] == "auto" and "+" not in params["backbone"]


def resolve(params: dict, plan: Plan | None = None) -> Recipe:
    """The recipe of ``params`` (checked), following ``plan`` for strategy="auto"."""
    strategy = params["strategy"]
    if strategy == "auto":
        strategy = plan.strategy if plan is not None else "linear"
    options = dict(params["finetune"] or {})
    if strategy == "scratch":
        backbone = _scratch_backbone(params)
    else:
        backbone = (plan.backbone if plan is not None else None) or params["backbone"]
    tap = plan.tap if plan is not None else params["tap"]
    if strategy == "linear":
        return Recipe(strategy, backbone, tap, None)
    # The advisor chose the augmentation by the same mirror probe the warning would run.
    chosen_by_advisor = plan is not None and "augmentation" in plan.settings and "augmentation" not in options
    config = finetune_config(params, strategy, plan.settings if plan is not None else {})
    return Recipe(strategy, backbone, tap, config, check_mirroring=not chosen_by_advisor)


def input_size(params: dict, images: Sequence[ImageSource]) -> int | None:
    """The side at which a fit reads images: ``params["input_size"]`` when given; else the
    backbone's test size (``BackboneSpec.test_crop``, FixRes) where the images carry it, their
    median shorter side (of up to ``SIZE_SAMPLE``, read from the headers) being at least the crop
    the network learnt at; else that crop. None for a network trained from scratch (its own size).

    Measured (docs/benchmarks.md, "Input size"): at 288 px instead of 224 the linear head gained on
    11 of 12 photo rows (both backbones; the same photos shrunk to a 224 px shorter side included).
    On smaller images (photos shrunk to 160 px, grey digits, clothes, MRI slices) the gain was gone
    for MobileNetV2, at 1.65 times the cost."""
    if params["input_size"] is not None or params["strategy"] == "scratch":
        return params["input_size"]
    spec = get_backbone(params["backbone"].split("+")[0])
    trained = spec.preprocessing.crop
    if spec.test_crop is None or not images:
        return trained
    picked = np.unique(np.linspace(0, len(images) - 1, min(SIZE_SAMPLE, len(images))).round().astype(int))
    sides = [min(size) for size in (images[i].pixel_size() for i in picked) if size]
    if not sides or np.median(sides) < trained:
        return trained
    progress.announce(
        f"input: {spec.test_crop} px, {spec.name}'s test size, since the images carry it "
        f"(median shorter side {np.median(sides):.0f} px, at least the {trained} px it learnt at)"
    )
    return spec.test_crop


def _scratch_backbone(params: dict) -> str:
    """The small CNN of strategy="scratch", drawn by its ``init`` scheme (finetune={"init": ...})."""
    return f"scratch_cnn@{(params['finetune'] or {}).get('init', DEFAULT_INIT)}"


def finetune_config(params: dict, strategy: str, planned: dict | None = None) -> FineTuneConfig:
    """The network's training settings: the defaults for ``strategy``, then the plan's, then the user's."""
    defaults = {"seed": params["random_state"] or 0, "device": params["device"], "progress": params["progress"]}
    if strategy == "scratch":  # every layer learns, at one rate, with BatchNorm statistics of its own
        defaults |= SCRATCH_DEFAULTS
    options = {**(planned or {}), **(params["finetune"] or {})}
    return FineTuneConfig(**{**defaults, **options, "strategy": "finetune_all" if strategy == "scratch" else strategy})


# ------------------------------------------------------------------------------------ checks
def check_time_budget(seconds) -> None:
    if seconds is not None and not (_is_number(seconds) and seconds >= 0):
        raise DataError(f"time_budget={seconds!r} must be a number of seconds, 0 or more; None (on the command line: no --time-budget) for no limit.")


def check_params(params: dict) -> dict:
    """Raise one DataError line for the first bad parameter; return ``params`` when all are good."""
    check_choice("strategy", params["strategy"], STRATEGY_CHOICES)
    try:
        check_solver(params["solver"], params["classifier"])
    except HeadstartError as exc:
        raise DataError(str(exc)) from None
    check_choice("class_weight", params["class_weight"], CLASS_WEIGHTS)
    check_choice("engine", params["engine"], ENGINES)
    _whole("batch_size", params["batch_size"], minimum=1)
    for name, minimum in (("input_size", MIN_INPUT_SIZE), ("random_state", 0), ("n_jobs", None)):
        if params[name] is not None:
            _whole(name, params[name], minimum)
    if params["input_size"] is not None and params["input_size"] > MAX_INPUT_SIZE:
        raise DataError(
            f"input_size={params['input_size']} is past {MAX_INPUT_SIZE:,} px: the backbones learnt at 224-300 px, and time and "
            "memory grow with its square; give 224-512 (default: chosen from the images)."
        )
    check_time_budget(params["time_budget"])
    progress.wanted(params["progress"])  # True, False or "auto", else a DataError
    if params["Cs"] is not None and not (len(params["Cs"]) and all(_is_number(c) and c > 0 for c in params["Cs"])):
        raise DataError(f"Cs={params['Cs']!r} must be a non-empty list of positive inverse regularisation strengths, e.g. (0.01, 0.1, 1.0).")
    try:
        resolve_device(params["device"])
    except HeadstartError as exc:
        raise DataError(str(exc)) from None
    _check_finetune(params)
    _check_backbone_and_tap(params)
    if params["resume"] and not params["checkpoint_dir"]:
        raise DataError("resume=True continues from checkpoint_dir; give the checkpoint folder of the interrupted run.")
    if params["resume"] and params["strategy"] == "linear":
        raise DataError("resume continues a fine-tuning run; give the strategy it was started with.")
    return params


def _check_finetune(params: dict) -> None:
    options = params["finetune"]
    if options is None:
        return
    if not isinstance(options, dict):
        raise DataError(f"finetune={options!r} must be a dict of fine-tuning settings, e.g. {{'epochs': 20}}.")
    for key in options:
        if key not in FINETUNE_SETTINGS:
            close = difflib.get_close_matches(str(key), FINETUNE_SETTINGS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known settings: {', '.join(sorted(FINETUNE_SETTINGS))}."
            raise DataError(f"unknown fine-tuning setting {key!r}{hint}")
    for key, value in options.items():
        wrong = _wrong_setting_type(key, value)
        if wrong:
            raise DataError(f"fine-tuning setting {key} must be {wrong}, got {value!r}.")
    strategy = params["strategy"] if params["strategy"] in (*STRATEGIES, "scratch") else "finetune_top"
    try:  # every value, whether this fit fine-tunes or the advisor's trial might
        finetune_config(params, strategy)
    except TypeError as exc:
        raise DataError(f"a fine-tuning setting has the wrong type ({exc}); see FineTuneConfig.") from None


# What each FineTuneConfig annotation accepts, in words ("--set dropout=abc" arrives as a string).
_TYPE_WORDS = {"bool": "true or false", "int": "a whole number", "float": "a number", "str": "a name", "None": "null", "tuple[str, ...]": "a list of names"}


def _wrong_setting_type(key: str, value) -> str | None:
    """What a fine-tuning setting must be, in words, when ``value`` is not that; else None."""
    kinds = [kind.strip() for kind in FINETUNE_TYPES[key].split("|")]
    if value is None:
        fits = "None" in kinds
    elif isinstance(value, bool):
        fits = "bool" in kinds
    elif isinstance(value, numbers.Integral):
        fits = "int" in kinds or "float" in kinds
    elif isinstance(value, numbers.Real):
        fits = "float" in kinds
    elif isinstance(value, str):
        fits = "str" in kinds
    else:
        fits = isinstance(value, (list, tuple)) and any(kind.startswith("tuple") for kind in kinds)
    return None if fits else " or ".join(_TYPE_WORDS.get(kind, kind) for kind in kinds)


def _check_backbone_and_tap(params: dict) -> None:
    backbone, tap, strategy = params["backbone"], params["tap"], params["strategy"]
    if not isinstance(backbone, str) or not backbone:
        raise DataError(f"backbone={backbone!r} must name a backbone, e.g. 'mobilenet_v2' (see headstart.list_backbones()).")
    names = backbone.split("+")
    taps = (tap or "").split("+")
    if len(names) > 1 and len(taps) not in (1, len(names)):
        raise DataError(f"tap={tap!r} does not fit the joined backbone {backbone!r}: give one tap for all, or one per backbone joined by '+', in order.")
    if len(names) > 1 and strategy not in ("auto", "linear"):
        raise DataError(f"strategy {strategy!r} trains one network, but backbone={backbone!r} joins several; give one backbone, or strategy='linear' (--strategy linear).")
    if strategy == "scratch":
        names = [_scratch_backbone(params)]
    try:
        for name, part in backbone_taps("+".join(names), tap):
            spec = get_backbone(name)
            if part:
                spec.require_tap(part)
    except HeadstartError as exc:
        raise DataError(str(exc)) from None


def _whole(name: str, value, minimum: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or (minimum is not None and value < minimum):
        least = f" of at least {minimum}" if minimum is not None else ""
        raise DataError(f"{name}={value!r} must be a whole number{least}.")


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
