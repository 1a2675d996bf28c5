import numpy as np
import pytest
import torch
from PIL import Image

from headstart.backbones import get_backbone
from headstart.data.augment import augmentation_transform, check_mirroring, mirror_sensitivity, policy_steps
from headstart.errors import DataError
from headstart.features import CodeExtractor

PREPROCESSING = get_backbone("tiny").preprocessing  # 32 px crop


def scene(seed: int, size: int = 48) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size, size + 16, 3), dtype=np.uint8))


@pytest.mark.parametrize("policy", ["objects", "text_signs", "overhead", "none", ["rot90", "jitter"]])
def test_every_policy_yields_the_backbones_input(policy):
    tensor = augmentation_transform(policy, PREPROCESSING)(scene(0))
    assert tensor.shape == (3, 32, 32) and tensor.dtype == torch.float32


def test_none_is_the_evaluation_transform():
    image = scene(1)
    np.testing.assert_array_equal(augmentation_transform("none", PREPROCESSING)(image), PREPROCESSING.transform()(image))


def test_text_signs_never_mirror_and_objects_do():
    assert "hflip" not in policy_steps("text_signs") and "hflip" in policy_steps("objects")
    assert {"hflip", "vflip", "rot90"} <= set(policy_steps("overhead"))


def test_policies_are_random_and_seedable():
    transform = augmentation_transform("objects", PREPROCESSING)
    torch.manual_seed(0)
    a = transform(scene(2))
    torch.manual_seed(0)
    b = transform(scene(2))
    c = transform(scene(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_explicit_steps_keep_a_fixed_order():
    assert policy_steps(["jitter", "hflip", "crop"]) == ("crop", "hflip", "jitter")


@pytest.mark.parametrize("policy, message", [("cats", "unknown augmentation policy"), (["hflip", "shear"], "unknown augmentation step")])
def test_unknown_names(policy, message):
    with pytest.raises(DataError, match=message):
        policy_steps(policy)


def gradient(seed: int) -> Image.Image:
    # Dark on the left, bright on the right: its mirror image is plainly different.
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, 40)[None, :, None] * rng.uniform(0.5, 1.0, (1, 1, 3))
    pixels = np.clip(ramp + rng.normal(0, 10, (40, 40, 3)), 0, 255)
    return Image.fromarray(pixels.astype(np.uint8))


def symmetric(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    half = rng.integers(0, 255, (40, 20, 3), dtype=np.uint8)
    return Image.fromarray(np.concatenate([half, half[:, ::-1]], axis=1))


def test_mirror_check_tells_chiral_from_symmetric_images():
    extractor = CodeExtractor(get_backbone("tiny"), engine="torch", cache=False)
    chiral = [gradient(i) for i in range(40)]
    assert mirror_sensitivity(extractor, chiral) > 0.9
    assert "consider augmentation 'text_signs'" in check_mirroring("objects", extractor, chiral)
    assert check_mirroring("text_signs", extractor, chiral) is None  # no flips, nothing to check
    assert check_mirroring("objects", extractor, [symmetric(i) for i in range(40)]) is None


def test_mirror_check_needs_enough_images():
    extractor = CodeExtractor(get_backbone("tiny"), engine="torch", cache=False)
    with pytest.raises(DataError, match="at least 10 images"):
        mirror_sensitivity(extractor, [gradient(0)] * 3)
