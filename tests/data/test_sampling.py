import numpy as np
import pytest
import torch

from headstart.data.sampling import ClassBalancedSampler, inverse_frequency_weights, plan_imbalance
from headstart.errors import DataError


def skewed_labels():
    # class 0: 200 images, class 1: 20, class 2: 5
    return np.repeat([0, 1, 2], [200, 20, 5])


def test_classes_come_out_equally_often():
    sampler = ClassBalancedSampler(skewed_labels(), num_samples=30_000, seed=1)
    drawn = skewed_labels()[sampler.draw()]
    shares = np.bincount(drawn) / drawn.size
    np.testing.assert_allclose(shares, [1 / 3] * 3, atol=0.015)


def test_every_image_of_a_class_is_reachable_and_indices_are_valid():
    labels = skewed_labels()
    indices = ClassBalancedSampler(labels, num_samples=20_000).draw()
    assert indices.min() >= 0 and indices.max() < labels.size
    assert set(np.flatnonzero(labels == 2)) <= set(indices.tolist())


def test_epochs_differ_but_replay_exactly():
    sampler = ClassBalancedSampler(skewed_labels(), seed=3)
    first = sampler.draw()
    sampler.set_epoch(1)
    second = sampler.draw()
    assert not np.array_equal(first, second)
    replay = ClassBalancedSampler(skewed_labels(), seed=3)
    replay.set_epoch(1)
    np.testing.assert_array_equal(replay.draw(), second)


def test_works_as_a_dataloader_sampler():
    labels = skewed_labels()
    dataset = torch.utils.data.TensorDataset(torch.arange(labels.size), torch.as_tensor(labels))
    loader = torch.utils.data.DataLoader(dataset, batch_size=60, sampler=ClassBalancedSampler(labels, num_samples=120))
    batches = list(loader)
    assert len(batches) == 2 and all(len(b[0]) == 60 for b in batches)
    assert all((labels[b[0].numpy()] == b[1].numpy()).all() for b in batches)


def test_missing_class_indices_are_skipped():
    labels = np.array([0, 0, 5, 5, 5])  # classes 1-4 have no images
    drawn = labels[ClassBalancedSampler(labels, num_samples=1000).draw()]
    assert set(drawn.tolist()) == {0, 5}


def test_memory_is_linear_in_images():
    labels = np.random.default_rng(0).integers(0, 5000, 100_000)
    assert ClassBalancedSampler(labels).nbytes < 100_000 * 4 + 5000 * 24


@pytest.mark.parametrize("labels", [[], ["a", "b"], [-1, 0]])
def test_bad_labels(labels):
    with pytest.raises(DataError):
        ClassBalancedSampler(np.asarray(labels))


def test_inverse_frequency_weights():
    weights = inverse_frequency_weights(skewed_labels())
    assert weights[2] / weights[0] == pytest.approx(40.0)
    assert (weights * np.bincount(skewed_labels())).sum() == pytest.approx(225)  # mean weight per image 1
    assert inverse_frequency_weights(np.array([0, 0, 2, 2]), n_classes=4).tolist() == [1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    "counts, mode",
    [([20, 20, 18], "none"), ([20, 3, 20], "weights"), ([200, 20, 5], "sampler")],
)
def test_auto_picks_by_imbalance_ratio(counts, mode):
    plan = plan_imbalance(np.repeat(np.arange(len(counts)), counts))
    assert plan.mode == mode and str(round(plan.ratio, 1))[:2] in plan.reason


def test_explicit_choices_and_unknown_ones():
    assert plan_imbalance(skewed_labels(), "both").mode == "both"
    with pytest.raises(DataError, match="must be one of"):
        plan_imbalance(skewed_labels(), "smote")
