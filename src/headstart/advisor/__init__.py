"""The strategy advisor: measure a dataset against a backbone, choose how to transfer, say why.

    plan = advise(get_backbone("mobilenet_v2"), paths, labels)
    print("\n".join(plan.explanation))
"""

from __future__ import annotations

import time

import numpy as np

from .. import progress
from .._text import shortened
from ..backbones import PRE_LOGITS, BackboneSpec, get_backbone
from ..data.images import as_sources, hash_memo
from ..errors import DataError, HeadstartError
from ..features.cache import default_cache_dir
from .cache import load_plan, plan_key, store_plan
from .measure import MAX_IMAGES, Measurements, Similarity, SizeStats, TapScore, measure, mirror_probe, sample_index, sweep_taps
from .plan import PARTNERS, Alternative, Plan, best_linear, classify, decide


def advise(
    spec: BackboneSpec,
    images: list,
    labels,
    *,
    time_budget: float | None = None,
    tap: str | None = None,
    finetune: dict | None = None,
    input_size: int | None = None,
    device: str = "auto",
    batch_size: int = 32,
    cache: bool = True,
    cache_dir=None,
    max_images: int = MAX_IMAGES,
    random_state: int = 0,
) -> Plan:
    """Measure ``images`` with ``labels`` against ``spec`` and return the :class:`Plan`.

    ``time_budget`` (seconds) bounds measuring, the optional fine-tuning trial and the fit that
    follows; without one, the trial runs whenever the rule of thumb is in doubt. ``finetune`` holds
    fine-tuning settings to keep (as in ``TransferClassifier(finetune=...)``); ``tap`` fixes the
    linear head's tap instead of taking the sweep's best. With ``cache``, a plan made before from the
    same images, labels and settings is reused (``plan.from_cache``) instead of measuring again;
    where the images' hashes are not known yet, the measuring pass (one read per image) gives them.
    """
    start = time.perf_counter()
    y = _checked_labels(spec, labels, tap)
    images = as_sources(images)
    preprocessing = spec.preprocessing.with_size(input_size) if input_size else spec.preprocessing
    settings = {"time_budget": time_budget, "tap": tap, "finetune": finetune, "device": device, "max_images": max_images, "random_state": random_state}
    root = cache_dir or default_cache_dir()
    key_of = lambda hashes: plan_key(spec, hashes, y, preprocessing, settings) if cache and None not in hashes else None  # noqa: E731
    memo = hash_memo(root) if cache else None
    key = key_of([images[i].known_hash(memo) for i in sample_index(y, max_images, random_state)])
    if (cached := _cached(root, key, start)) is not None:
        return cached
    measurements, sample = measure(
        spec, images, y, preprocessing=preprocessing, device=device, batch_size=batch_size,
        cache=cache, cache_dir=cache_dir, max_images=max_images, random_state=random_state,
    )
    key = key or key_of(sample["hashes"])
    if (cached := _cached(root, key, start)) is not None:  # the same content, seen under other names or dates
        return cached
    if _partner_worth_reading(spec, measurements, tap):
        # about one more measuring pass (its export and eager BatchNorm sample included, so an upper bound); the eager
        # per-image time doubled, as before, put hymenoptera's 4-5 s partner pass at 40 s
        partner_seconds = measurements.seconds
        if time_budget is None or measurements.seconds + partner_seconds <= time_budget:
            similar = classify(measurements)[1]
            _add_partner(sample, PARTNERS[spec.name], images, input_size, device, batch_size, cache, cache_dir, similar, random_state)
        else:  # said in the plan: a budget that quietly drops a step reads as if the step were never considered
            sample["partner_skipped"] = (PARTNERS[spec.name], partner_seconds)
    plan = decide(
        spec, measurements, sample, images, time_budget=time_budget, tap=tap, finetune_overrides=finetune,
        random_state=random_state, preprocessing=preprocessing, cache_dir=cache_dir,
    )
    plan.seconds, plan.input_size = time.perf_counter() - start, preprocessing.crop
    if key:
        store_plan(root, key, plan)
    return plan


def _checked_labels(spec: BackboneSpec, labels, tap: str | None) -> np.ndarray:
    """Labels as 0..k-1, once the tap and the classes are known to be usable (before any image is read)."""
    for part in (tap or "").split("+"):
        if part:
            spec.require_tap(part)
    classes, y = np.unique(np.asarray(labels), return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"need images of at least 2 classes to advise, got {list(classes)}.")
    counts = np.bincount(y)
    if counts.min() < 2:
        raise DataError(
            f"class(es) {shortened(classes[counts < 2])} have 1 training image; the advisor cross-validates, so every class needs 2 "
            "(a folder of class folders keeps a fifth of each class for testing): add images, or fit with strategy='linear' (--strategy linear)."
        )
    return y


def _cached(root, key: str | None, start: float) -> Plan | None:
    cached = load_plan(root, key) if key else None
    if cached is not None:
        cached.from_cache, cached.seconds = True, time.perf_counter() - start
    return cached


def _partner_worth_reading(spec: BackboneSpec, measurements: Measurements, tap: str | None) -> bool:
    """Whether decide() may offer the partner backbone's codes: small data, the tap left to the
    advisor (ask before paying for them), the top tap for data like ImageNet's (they are cached
    for the fit); on data unlike it, any tap, two joined included (the best single one then joins
    the partner's)."""
    small, similar = classify(measurements)
    chosen = best_linear(measurements.sweep, prefer_earlier=small and not similar).tap
    return small and tap is None and spec.name in PARTNERS and (chosen == PRE_LOGITS or not similar)


def _add_partner(sample: dict, name: str, images, input_size, device, batch_size, cache, cache_dir, similar: bool, random_state: int) -> None:
    """The partner's codes of the sample, as ``sample["partner"] = (name, codes, tap)``, when it can
    give them all: its top codes for data like ImageNet's (where the top tap is chosen), else those
    of its own sweep's best single tap, from one measuring pass of the partner."""
    sources = [images[i] for i in sample["index"]]
    try:
        if similar:
            codes, tap = _partner_codes(name, sources, input_size, device, batch_size, cache, cache_dir), PRE_LOGITS
        else:
            codes, tap = _partner_sweep_codes(name, sources, sample["labels"], input_size, device, batch_size, cache, cache_dir, random_state)
    except HeadstartError:
        return  # e.g. its weights package is missing: the plan stays on one backbone
    if codes is not None and len(codes) == len(sources):
        sample["partner"] = (name, codes, tap)


def _partner_codes(name, images, input_size, device, batch_size, cache, cache_dir) -> np.ndarray | None:
    """Top codes of the sample from the partner backbone; None if it cannot give them all."""
    from ..features import CodeExtractor

    extractor = CodeExtractor(get_backbone(name), PRE_LOGITS, input_size=input_size, device=device, batch_size=batch_size, cache=cache, cache_dir=cache_dir)
    progress.announce(f"second backbone: {name}'s codes of the {len(images)} measured images, to try beside the first's")
    codes = extractor(images, progress=progress.enabled(), desc=f"codes [{name}]")
    return None if codes.failures else codes.codes


def _partner_sweep_codes(name, images, labels, input_size, device, batch_size, cache, cache_dir, random_state) -> tuple[np.ndarray, str]:
    """The partner's codes of the sample at its sweep's best single tap (data unlike ImageNet: which
    depth transfers best differs between networks), and that tap."""
    spec = get_backbone(name)
    progress.announce(f"second backbone: {name} measured on the same images, to try its best depth beside the first's")
    preprocessing = spec.preprocessing.with_size(input_size) if input_size else spec.preprocessing
    measurements, sample = measure(
        spec, images, labels, preprocessing=preprocessing, device=device, batch_size=batch_size, cache=cache, cache_dir=cache_dir,
        max_images=len(images), random_state=random_state,  # the images the first backbone's codes are of, all of them
        moments=False,  # only its codes and its sweep are used
    )
    best = max((s for s in measurements.sweep if "+" not in s.tap), key=lambda s: s.cv_accuracy)
    return sample["codes"][best.tap], best.tap


__all__ = ["Alternative", "Measurements", "Plan", "Similarity", "SizeStats", "TapScore", "advise", "mirror_probe", "sweep_taps"]
