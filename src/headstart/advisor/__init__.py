"""The strategy advisor: measure a dataset against a backbone, choose how to transfer, say why.

    plan = advise(get_backbone("mobilenet_v2"), paths, labels)
    print("\n".join(plan.explanation))
"""

from __future__ import annotations

import time

import numpy as np

from ..backbones import PRE_LOGITS, BackboneSpec, get_backbone
from ..errors import DataError, HeadstartError
from ..features.cache import default_cache_dir
from .cache import load_plan, plan_key, store_plan
from .measure import MAX_IMAGES, Measurements, Similarity, SizeStats, TapScore, measure, sweep_taps
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
    same images, labels and settings is reused (``plan.from_cache``) instead of measuring again.
    """
    start = time.perf_counter()
    for part in (tap or "").split("+"):
        if part:
            spec.require_tap(part)  # a wrong tap fails now, before any image is read
    classes, y = np.unique(np.asarray(labels), return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"need images of at least 2 classes to advise, got {list(classes)}.")
    if np.bincount(y).min() < 2:
        raise DataError("every class needs at least 2 images for the advisor's cross-validation; add images.")
    preprocessing = spec.preprocessing.with_size(input_size) if input_size else spec.preprocessing
    settings = {"time_budget": time_budget, "tap": tap, "finetune": finetune, "device": device, "max_images": max_images, "random_state": random_state}
    key = plan_key(spec, list(images), y, preprocessing, settings) if cache else None
    cached = load_plan(cache_dir or default_cache_dir(), key) if key else None
    if cached is not None:
        cached.from_cache, cached.seconds = True, time.perf_counter() - start
        return cached
    measurements, sample = measure(
        spec, list(images), y, preprocessing=preprocessing, device=device, batch_size=batch_size,
        cache=cache, cache_dir=cache_dir, max_images=max_images, random_state=random_state,
    )
    small, similar = classify(measurements)
    partner = PARTNERS.get(spec.name)
    # The partner's codes cost about one more pass over the sample (and are cached for the fit).
    affordable = time_budget is None or measurements.seconds + 2 * measurements.n_measured * measurements.seconds_per_image <= time_budget
    # Only a head on the top codes is offered the partner's (see decide()); ask before paying for them.
    top_chosen = best_linear(measurements.sweep, prefer_earlier=small and not similar).tap == PRE_LOGITS
    if small and similar and tap is None and top_chosen and partner and affordable:
        codes = _partner_codes(partner, [images[i] for i in sample["index"]], input_size, device, batch_size, cache, cache_dir)
        if codes is not None:
            sample["partner"] = (partner, codes)
    plan = decide(
        spec, measurements, sample, list(images), time_budget=time_budget, tap=tap, finetune_overrides=finetune,
        random_state=random_state, preprocessing=preprocessing,
    )
    plan.seconds = time.perf_counter() - start
    if key:
        store_plan(cache_dir or default_cache_dir(), key, plan)
    return plan


def _partner_codes(name, images, input_size, device, batch_size, cache, cache_dir) -> np.ndarray | None:
    """Top codes of the sample from the partner backbone; None if it cannot give them all."""
    from ..features import CodeExtractor

    try:
        extractor = CodeExtractor(get_backbone(name), PRE_LOGITS, input_size=input_size, device=device, batch_size=batch_size, cache=cache, cache_dir=cache_dir)
        codes = extractor(images, desc=f"features [{name}]")
    except HeadstartError:
        return None  # e.g. its weights package is missing: the plan stays on one backbone
    return None if codes.failures else codes.codes


__all__ = ["Alternative", "Measurements", "Plan", "Similarity", "SizeStats", "TapScore", "advise", "sweep_taps"]
