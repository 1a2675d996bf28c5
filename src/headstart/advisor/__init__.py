"""The strategy advisor: measure a dataset against a backbone, choose how to transfer, say why.

    plan = advise(get_backbone("mobilenet_v2"), paths, labels)
    print("\n".join(plan.explanation))
"""

from __future__ import annotations

import numpy as np

from ..backbones import BackboneSpec
from ..errors import DataError
from .measure import MAX_IMAGES, Measurements, Similarity, SizeStats, TapScore, measure, sweep_taps
from .plan import Alternative, Plan, decide


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
    linear head's tap instead of taking the sweep's best.
    """
    for part in (tap or "").split("+"):
        if part:
            spec.require_tap(part)  # a wrong tap fails now, before any image is read
    classes, y = np.unique(np.asarray(labels), return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"need images of at least 2 classes to advise, got {list(classes)}.")
    if np.bincount(y).min() < 2:
        raise DataError("every class needs at least 2 images for the advisor's cross-validation; add images.")
    preprocessing = spec.preprocessing.with_size(input_size) if input_size else spec.preprocessing
    measurements, sample = measure(
        spec, list(images), y, preprocessing=preprocessing, device=device, batch_size=batch_size,
        cache=cache, cache_dir=cache_dir, max_images=max_images, random_state=random_state,
    )
    return decide(
        spec, measurements, sample, list(images), time_budget=time_budget, tap=tap, finetune_overrides=finetune,
        random_state=random_state, preprocessing=preprocessing,
    )


__all__ = ["Alternative", "Measurements", "Plan", "Similarity", "SizeStats", "TapScore", "advise", "sweep_taps"]
