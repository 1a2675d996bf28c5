"""The fitting pipeline: each training image read and hashed once, warm fits read nothing, the
hash memo trusts only what it can vouch for."""

from collections import Counter

import numpy as np
import pytest

import headstart.data.images as images_module
from headstart import TransferClassifier
from headstart.data.images import HashMemo, ImageSource
from tests.test_estimator import colour_data


@pytest.fixture
def image_files(tmp_path):
    X, y = colour_data()
    paths = []
    for i, image in enumerate(X):
        paths.append(tmp_path / "images" / f"{i:02d}.png")
        paths[-1].parent.mkdir(exist_ok=True)
        image.save(paths[-1])
    return paths, y


@pytest.fixture
def counted(monkeypatch):
    """Counts of file reads (per path) and of content hashes computed by the one image opener."""
    reads, hashes = Counter(), Counter()
    real_read, real_hash = images_module._read_file, images_module._content_hash

    def read(path):
        reads[str(path)] += 1
        return real_read(path)

    def content_hash(data):
        digest = real_hash(data)
        hashes[digest] += 1
        return digest

    monkeypatch.setattr(images_module, "_read_file", read)
    monkeypatch.setattr(images_module, "_content_hash", content_hash)
    return reads, hashes


def auto(**kwargs):
    # time_budget=0: no fine-tuning trial, whose epochs read the images again by nature
    return TransferClassifier("tiny", engine="torch", time_budget=0, **kwargs)


def test_a_cold_auto_fit_reads_and_hashes_each_training_image_once(image_files, counted):
    paths, y = image_files
    reads, hashes = counted
    model = auto().fit(paths, y)
    assert model.plan_ is not None and not model.plan_.from_cache and model.strategy_ == "linear"
    assert reads == Counter({str(p): 1 for p in paths})
    assert len(hashes) == len(paths) and set(hashes.values()) == {1}


def test_a_warm_fit_reads_no_image(image_files, counted, monkeypatch):
    monkeypatch.setattr(images_module, "RACY_SECONDS", 0.0)  # the files were written a moment ago
    paths, y = image_files
    reads, _ = counted
    first = auto().fit(paths, y)
    reads.clear()
    again = auto().fit(paths, y)
    assert again.plan_.from_cache and not reads
    np.testing.assert_array_equal(again.predict_proba(paths), first.predict_proba(paths))


def test_the_hash_memo_vouches_only_for_unchanged_files_hashed_well_after_their_last_change(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    path.write_bytes(b"\x89PNG first version")
    memo = HashMemo(tmp_path / "cache")
    digest = ImageSource(path).open(memo).content_hash
    assert memo.get(path) is None  # written just now: its times cannot vouch for its content
    monkeypatch.setattr(images_module, "RACY_SECONDS", 0.0)
    assert memo.get(path) == digest
    memo.flush()
    assert HashMemo(tmp_path / "cache").get(path) == digest  # another process reads it back
    path.write_bytes(b"\x89PNG other version")  # same size, new content
    assert memo.get(path) is None and HashMemo(tmp_path / "cache").get(path) is None
    for stored in (tmp_path / "cache" / "hashes").rglob("*.json"):
        stored.write_text("{ damaged")
    assert HashMemo(tmp_path / "cache").get(path) is None


def test_in_memory_images_are_hashed_once_however_many_passes(counted):
    X, y = colour_data()
    reads, hashes = counted
    auto().fit(X, y)  # the plan key, the measuring pass and extraction all need every hash
    assert not reads and len(hashes) == len(X) and set(hashes.values()) == {1}
