"""Augmentation policies: which random changes keep an image's label depends on the domain.

Mirroring a chair gives another chair; mirroring a road sign or a letter gives a different sign or
no letter at all. So augmentation is chosen per domain, by name, and the choice is checked: when a
policy mirrors images but a linear probe can tell mirrored images from originals, the data are
probably mirror-sensitive and the user is warned.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps
from torchvision.transforms import v2

from ..errors import SHOWN_IN_SUMMARY, DataError

log = logging.getLogger(__name__)

# Step names, in the order they are applied whatever order the user lists them in:
# geometry first (on the PIL image), then colour.
STEPS = ("crop", "hflip", "vflip", "rot90", "rotate", "translate", "jitter")
POLICIES = {
    # Photos of things: mirror-symmetric classes, any framing, varied light.
    "objects": ("crop", "hflip", "rotate", "jitter"),
    # Text, digits, road signs, logos: chiral, so never mirrored; small pose changes only.
    "text_signs": ("rotate", "translate"),
    # Aerial, satellite, microscopy: no "up", so every flip and quarter turn keeps the label.
    "overhead": ("crop", "hflip", "vflip", "rot90"),
    "none": (),
}
MIRRORING_STEPS = {"hflip"}
# A probe telling mirrored from original images this often (chance is 50%), and significantly so,
# means mirroring changes what the images show. Measured with mobilenet_v2 on 150-200 training
# images each: hymenoptera 0.48, oxford17flowers 0.55 (photos), the demo's digits 0.70.
MIRROR_SENSITIVE_ACCURACY = 0.6
MIRROR_SENSITIVE_Z = 3.0  # standard errors above chance
# Training images (a seeded sample) on which mirroring is checked: enough for a probe to tell
# mirrored images apart at 3 standard errors when it can, cheap next to any fine-tuning epoch.
MIRROR_CHECK_IMAGES = 100


def policy_steps(policy: str | Sequence[str]) -> tuple[str, ...]:
    """The steps of a named policy, or of an explicit list of step names, in application order."""
    if isinstance(policy, str):
        if policy not in POLICIES:
            raise DataError(f"unknown augmentation policy {policy!r}; use one of {', '.join(POLICIES)} or a list of steps from {', '.join(STEPS)}.")
        return POLICIES[policy]
    unknown = [step for step in policy if step not in STEPS]
    if unknown:
        raise DataError(f"unknown augmentation step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}.")
    return tuple(step for step in STEPS if step in policy)


def augmentation_transform(policy: str | Sequence[str], preprocessing) -> v2.Compose:
    """Training-time transform: PIL RGB image -> augmented, normalised tensor of the backbone's size.

    Without a "crop" step the image is resized and centre-cropped as at evaluation, then the other
    steps act on that view.
    """
    steps = policy_steps(policy)
    size = preprocessing.crop
    interpolation = v2.InterpolationMode(preprocessing.interpolation)
    if "crop" in steps:
        geometry = [v2.RandomResizedCrop(size, scale=(0.5, 1.0), interpolation=interpolation, antialias=True)]
    else:
        geometry = preprocessing.resize_and_crop()
    if "hflip" in steps:
        geometry.append(v2.RandomHorizontalFlip())
    if "vflip" in steps:
        geometry.append(v2.RandomVerticalFlip())
    if "rot90" in steps:
        geometry.append(v2.RandomChoice([v2.RandomRotation((angle, angle)) for angle in (0, 90, 180, 270)]))
    if "rotate" in steps:
        geometry.append(v2.RandomRotation(10, interpolation=interpolation))
    if "translate" in steps:
        geometry.append(v2.RandomAffine(degrees=0, translate=(0.08, 0.08), scale=(0.9, 1.1), interpolation=interpolation))
    colour = [v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02)] if "jitter" in steps else []
    return v2.Compose([*geometry, *colour, *preprocessing.tensor_steps()])


def mirror_sensitivity(extractor, images: Sequence[Image.Image], *, random_state: int = 0, codes: np.ndarray | None = None) -> float:
    """Cross-validated accuracy of a linear probe telling mirrored images from their originals
    (``codes``: the originals' codes, when already computed; only the mirrors then go through the network).

    About 0.5 when mirroring changes nothing a classifier could use (natural photos); near 1.0 for
    text, digits and other chiral content. An image and its mirror always share a fold, so the
    probe cannot just recognise the pair.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    images = list(images)
    if len(images) < 10:
        raise DataError(f"the mirror check needs at least 10 images, got {len(images)}.")
    codes = extractor(images).codes if codes is None else codes
    mirrored = extractor([ImageOps.mirror(image) for image in images]).codes
    X = np.vstack([codes, mirrored])
    y = np.repeat([0, 1], len(images))
    groups = np.tile(np.arange(len(images)), 2)
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000, random_state=random_state))
    return float(cross_val_score(probe, X, y, groups=groups, cv=GroupKFold(5)).mean())


def is_mirror_sensitive(accuracy: float, n_images: int) -> bool:
    """Whether a mirror probe's accuracy on ``n_images`` (and as many mirrors) is far enough above
    chance to say mirroring changes what the images show."""
    standard_error = 0.5 / np.sqrt(2 * n_images)
    return accuracy >= MIRROR_SENSITIVE_ACCURACY and (accuracy - 0.5) / standard_error >= MIRROR_SENSITIVE_Z


def mirror_check_sample(n_images: int, random_state: int | None = 0) -> np.ndarray:
    """Indices of the training images the mirror check looks at (the advisor's and the fit's alike)."""
    rng = np.random.default_rng(random_state)
    return rng.choice(n_images, min(MIRROR_CHECK_IMAGES, n_images), replace=False)


def mirror_warning(policy: str | Sequence[str], accuracy: float, n_images: int, *, in_summary: bool = False) -> str | None:
    """The warning (also logged; marked ``SHOWN_IN_SUMMARY`` when a fit's summary will carry it)
    when ``policy`` mirrors images that a mirror probe scored ``accuracy`` on (``n_images`` and
    their mirrors), else None."""
    if not MIRRORING_STEPS & set(policy_steps(policy)) or not is_mirror_sensitive(accuracy, n_images):
        return None
    message = (
        f"augmentation {policy!r} mirrors images, but a probe tells mirrored images from originals "
        f"{accuracy:.0%} of the time (chance 50%): mirroring may change their meaning; "
        "consider augmentation 'text_signs' (no flips)."
    )
    log.warning(message, extra={SHOWN_IN_SUMMARY: in_summary})
    return message


def check_mirroring(policy: str | Sequence[str], extractor, images: Sequence[Image.Image]) -> str | None:
    """A warning (also logged) when ``policy`` mirrors images that look mirror-sensitive, else None."""
    if not MIRRORING_STEPS & set(policy_steps(policy)):
        return None
    images = list(images)
    return mirror_warning(policy, mirror_sensitivity(extractor, images), len(images))
