"""Style descriptors, the style index and style evaluation: definitions checked against their
formulas, on tiny generated images with the test backbone (real VGG19 once, at small size)."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from headstart.backbones import get_backbone
from headstart.cli import main
from headstart.errors import BackboneError, DataError, HeadstartError, ModelFileError
from headstart.style import StyleExtractor, StyleIndex, StyleSettings, evaluate_style, gram, smooth, style_compare
from headstart.style.descriptors import (
    activation_entropy,
    channel_correlation,
    gram_vector,
    layer_weights,
    resolve_layers,
    unpack_gram_vector,
)
from headstart.style.evaluate import ALL_LAYERS, BALANCED_LAYERS, UNIT_LAYERS, pairwise_sq_distances, separation
from headstart.style.index import CountSketch

TINY = StyleSettings(backbone="tiny", input_size=32, sketch_dim=256)


def _styled(style: str, seed: int, size: int = 40) -> Image.Image:
    """Images whose 'style' is a texture family and whose content (phase, colour) varies by seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    if style == "stripes":
        base = 0.5 + 0.5 * np.sin(2 * np.pi * (6 * x + rng.uniform()))
    elif style == "noise":
        base = rng.uniform(size=(size, size))
    else:  # smooth gradient
        base = (x * rng.uniform(0.5, 1) + y * rng.uniform(0, 0.5)) / 1.5
    tint = rng.uniform(0.6, 1.0, size=3)
    return Image.fromarray((base[..., None] * tint * 255).astype(np.uint8))


@pytest.fixture
def style_folder(tmp_path):
    root = tmp_path / "styles"
    for style in ("stripes", "noise", "gradient"):
        (root / style).mkdir(parents=True)
        for i in range(4):
            _styled(style, i + 10 * len(style)).save(root / style / f"{i}.png")
    (root / "notes.txt").write_text("not an image")
    return root


# -- definitions ------------------------------------------------------------------------------


def test_gram_is_channel_correlations_over_channels_times_positions():
    fmap = torch.randn(2, 4, 3, 5)
    flat = fmap.reshape(2, 4, 15).double()
    expected = flat @ flat.transpose(1, 2) / (4 * 15)
    assert torch.allclose(gram(fmap).double(), expected, atol=1e-6)
    assert torch.allclose(gram(fmap), gram(fmap).transpose(1, 2))


def test_gram_vector_distance_is_the_squared_frobenius_distance():
    a, b = gram(torch.randn(1, 6, 4, 4)), gram(torch.randn(1, 6, 4, 4))
    va, vb = gram_vector(a)[0], gram_vector(b)[0]
    assert va.shape == (6 * 7 // 2,)
    assert np.sum((va - vb) ** 2) == pytest.approx(float(((a - b) ** 2).sum()), rel=1e-5)
    assert np.allclose(unpack_gram_vector(va), a[0].numpy(), atol=1e-6)


def test_smoothing_is_a_softmax_over_channels_in_units_of_the_layers_scale():
    fmap = torch.rand(2, 8, 3, 3) * 5
    smoothed = smooth(fmap, 1.0)
    assert torch.allclose(smoothed.sum(dim=1), torch.ones(2, 3, 3), atol=1e-6)
    assert torch.allclose(smooth(fmap * 100, 1.0), smoothed, atol=1e-6)  # same on a 0-255 or a 0-6 network
    assert torch.allclose(smooth(fmap, 1e6), torch.full_like(fmap, 1 / 8), atol=1e-5)  # hot: uniform
    cold = smooth(fmap, 0.01)  # cold: towards the strongest channel alone at each position
    assert torch.equal(cold.argmax(dim=1), fmap.argmax(dim=1)) and cold.amax(dim=1).mean() > 0.9


def test_entropy_and_correlation_statistics():
    one_hot = torch.zeros(1, 4, 2, 2)
    one_hot[0, 1] = 1.0
    assert activation_entropy(one_hot)[0] == pytest.approx(0.0, abs=1e-6)
    assert activation_entropy(torch.ones(1, 4, 2, 2))[0] == pytest.approx(1.0)
    same = torch.rand(1, 1, 8, 8).repeat(1, 3, 1, 1)
    assert channel_correlation(same)[0] == pytest.approx(1.0)
    independent = torch.randn(1, 3, 100, 100, generator=torch.Generator().manual_seed(0))
    assert channel_correlation(independent)[0] < 0.05


def test_count_sketch_estimates_the_weighted_style_distance():
    """Unbiased over hash draws, with a relative spread near sqrt(2 / dim) = 4.4% at 1,024 buckets."""
    rng = np.random.default_rng(0)
    sizes, weights = (300, 2000), np.array([0.7, 0.3])
    vectors = [rng.normal(size=(20, s)) * scale for s, scale in zip(sizes, (3.0, 1.0))]
    exact = sum(w * ((v[:, None] - v[None]) ** 2).sum(-1) for w, v in zip(weights, vectors))
    pairs = np.triu_indices(20, 1)
    errors = []
    for seed in range(8):
        sketch = CountSketch(sizes, weights, dim=1024, seed=seed)(vectors).astype(np.float64)
        estimate = ((sketch[:, None] - sketch[None]) ** 2).sum(-1)
        assert np.allclose(np.diag(estimate), 0)
        errors.append(estimate[pairs] / exact[pairs] - 1)
    errors = np.concatenate(errors)
    assert abs(errors.mean()) < 0.01
    assert 0.02 < errors.std() < 0.07 and np.abs(errors).max() < 0.3


def test_layer_names_aliases_and_errors():
    vgg = get_backbone("vgg19")
    assert resolve_layers(vgg, ["relu3_1", "features.3"]) == ("features.11", "features.3")
    assert len(resolve_layers(vgg, None)) == 5
    with pytest.raises(HeadstartError, match="one non-negative weight per style layer"):
        layer_weights(("a", "b"), [1.0])
    extractor = StyleExtractor("tiny", ["features.9"], input_size=32)
    with pytest.raises(BackboneError, match="has no layer 'features.9'"):
        extractor([np.zeros((32, 32, 3), np.uint8)])


def test_extractor_describes_images_and_marks_unreadable_ones(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really")
    images = [_styled("stripes", 1), str(bad), _styled("noise", 2)]
    described = StyleExtractor("tiny", input_size=32)(images)
    assert described.layers == ("features.0", "features.1", "features.2")
    assert [v.shape for v in described.vectors] == [(3, 36), (3, 136), (3, 528)]
    assert list(described.failures) == [1] and np.isnan(described.vectors[0][1]).all()
    total, per_layer = style_compare(_styled("stripes", 1), _styled("stripes", 1), TINY)
    assert total == 0.0 and per_layer == [(layer, 0.0) for layer in ("features.0", "features.1", "features.2")]
    assert style_compare(_styled("stripes", 1), _styled("noise", 2), TINY)[0] > 0


def test_bf16_descriptors_track_fp32_ones_and_keep_the_neighbours(style_folder):
    images = sorted(str(f) for f in style_folder.rglob("*.png"))
    described = {p: StyleExtractor("tiny", input_size=32, precision=p)(images) for p in ("fp32", "bf16")}
    weights = layer_weights(described["fp32"].layers, None)
    distances = {p: sum(w * pairwise_sq_distances(v) for w, v in zip(weights, d.vectors)) for p, d in described.items()}
    off = ~np.eye(len(images), dtype=bool)
    assert not np.array_equal(distances["bf16"], distances["fp32"])  # the arithmetic really changed
    assert np.abs(distances["bf16"][off] / distances["fp32"][off] - 1).max() < 0.05
    np.fill_diagonal(distances["fp32"], np.inf), np.fill_diagonal(distances["bf16"], np.inf)
    assert np.array_equal(distances["bf16"].argmin(1), distances["fp32"].argmin(1))
    with pytest.raises(HeadstartError, match="precision must be"):
        StyleSettings(precision="half")


def test_the_command_lines_constants_agree_with_the_library():
    from headstart.cli import PRECISION_CHOICES
    from headstart.hardware import PRECISIONS, resolve_bf16

    assert PRECISION_CHOICES == PRECISIONS
    from headstart.cli import INPUT_SIZES
    from headstart.recipe import MAX_INPUT_SIZE, MIN_INPUT_SIZE

    assert INPUT_SIZES == (MIN_INPUT_SIZE, MAX_INPUT_SIZE)
    cpu = torch.device("cpu")
    assert resolve_bf16("bf16", cpu) and not resolve_bf16("fp32", cpu)
    assert isinstance(resolve_bf16("auto", cpu), bool)


# -- the index ----------------------------------------------------------------------------------


def test_index_search_finds_the_image_itself_then_its_style(style_folder, tmp_path):
    index, report = StyleIndex.build(style_folder, TINY)
    assert (report.added, len(index)) == (12, 12)
    assert report.skipped == [("notes.txt", "not an image")]
    matches = index.search(str(style_folder / "stripes" / "0.png"), k=3)
    assert matches[0].path == style_folder / "stripes" / "0.png" and matches[0].distance == pytest.approx(0, abs=1e-9)
    assert all(m.exact for m in matches)
    assert [m.distance for m in matches] == sorted(m.distance for m in matches)
    estimates = index.search(str(style_folder / "stripes" / "0.png"), k=3, rerank=0)
    assert not any(m.exact for m in estimates)
    with pytest.raises(DataError, match="cannot read .*; give a JPEG, PNG, WebP, BMP, GIF, TIFF, HEIC, AVIF, JPEG 2000 or PGM/PPM image"):
        index.search(str(style_folder / "notes.txt"))


def test_index_saves_loads_and_updates_only_what_changed(style_folder, tmp_path):
    index, _ = StyleIndex.build(style_folder, TINY)
    index.save(tmp_path / "index")
    loaded = StyleIndex.load(tmp_path / "index")
    assert np.array_equal(loaded.sketches, index.sketches) and loaded.settings == TINY
    assert not list((tmp_path / "index").glob("*.pkl"))

    _styled("noise", 99).save(style_folder / "noise" / "new.png")  # added
    _styled("gradient", 98).save(style_folder / "stripes" / "1.png")  # changed content
    os.utime(style_folder / "stripes" / "2.png", ns=(time.time_ns(), time.time_ns() + 10**9))  # touched only
    (style_folder / "gradient" / "3.png").unlink()  # removed
    report = loaded.update()
    assert (report.added, report.changed, report.removed, report.unchanged) == (1, 1, 1, 10)
    assert len(loaded) == 12
    rebuilt, _ = StyleIndex.build(style_folder, TINY)
    by_path = dict(zip((e.path for e in rebuilt.entries), rebuilt.sketches))
    for entry, sketch in zip(loaded.entries, loaded.sketches):
        assert np.allclose(by_path[entry.path], sketch, atol=1e-5), entry.path


def test_interrupted_indexing_resumes_from_its_last_checkpoint(style_folder, tmp_path, monkeypatch):
    import headstart.style.index as index_module

    monkeypatch.setattr(index_module, "UPDATE_CHUNK", 4)
    saves = []

    def checkpoint(partial):
        partial.save(tmp_path / "index")
        saves.append(len(partial))
        if len(saves) == 2:
            raise KeyboardInterrupt  # the user pressed Ctrl-C after 8 of 12 images

    with pytest.raises(KeyboardInterrupt):
        StyleIndex.build(style_folder, TINY, checkpoint=checkpoint, checkpoint_every=0)
    resumed = StyleIndex.load(tmp_path / "index")
    assert saves == [4, 8] and len(resumed) == 8
    report = resumed.update()
    assert (report.added, report.unchanged, len(resumed)) == (4, 8, 12)


def test_index_load_refuses_missing_and_damaged_files(style_folder, tmp_path):
    with pytest.raises(ModelFileError, match="is not a style index"):
        StyleIndex.load(tmp_path / "nothing")
    index, _ = StyleIndex.build(style_folder, TINY)
    index.save(tmp_path / "index")
    meta = (tmp_path / "index" / "index.json").read_text()
    (tmp_path / "index" / "index.json").write_text(meta.replace('"entries"', '"entrees"'))
    with pytest.raises(ModelFileError, match="damaged style index"):
        StyleIndex.load(tmp_path / "index")
    (tmp_path / "index" / "index.json").write_text(meta)
    (tmp_path / "index" / "sketches.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="damaged style index"):
        StyleIndex.load(tmp_path / "index")


# -- evaluation ----------------------------------------------------------------------------------


def test_separation_figures():
    labels = np.array([0, 0, 1, 1])
    points = np.array([0.0, 1.0, 10.0, 11.0])
    d = (points[:, None] - points[None]) ** 2
    ratio, retrieval = separation(d, labels)
    assert retrieval == 1.0
    assert ratio == pytest.approx(np.mean([100, 121, 81, 100]) / 1.0)


def test_evaluate_style_scores_every_layer_and_the_combinations(style_folder, monkeypatch):
    images = sorted(style_folder.rglob("*.png"))
    labels = [p.parent.name for p in images]
    rows = evaluate_style([str(p) for p in images], labels, backbones=("tiny",), temperatures=(None, 1.0), input_size=32)
    assert len(rows) == 2 * (3 + 3)
    assert {r.layer for r in rows} == {"features.0", "features.1", "features.2", ALL_LAYERS, BALANCED_LAYERS, UNIT_LAYERS}
    assert all(0 <= r.retrieval <= 1 and r.ratio > 0 and 0 <= r.entropy <= 1 for r in rows)
    raw_all = next(r for r in rows if r.layer == ALL_LAYERS and r.smoothing is None)
    assert raw_all.ratio > 1.5 and raw_all.retrieval >= 0.75  # three very different textures
    with pytest.raises(DataError, match="at least 2 styles"):
        evaluate_style([str(p) for p in images[:3]], ["a"] * 3, backbones=("tiny",), input_size=32)
    import headstart.style.evaluate as evaluate_module

    with monkeypatch.context() as patch:
        patch.setattr(evaluate_module, "physical_memory", lambda: 10_000)  # bytes: a machine far too small
        with pytest.raises(DataError, match="needs ~0.0 GB for its Gram matrices, over half of this machine's 0.0 GB"):
            evaluate_style([str(p) for p in images], labels, backbones=("tiny",), input_size=32)
    truncated = style_folder / "noise" / "0.png"
    truncated.write_bytes(truncated.read_bytes()[:60])
    with pytest.raises(DataError, match="cannot read .*0.png .*remove or replace it"):
        evaluate_style([str(p) for p in images], labels, backbones=("tiny",), input_size=32)


# -- command line ----------------------------------------------------------------------------------


def test_style_cli(style_folder, tmp_path, capsys):
    out = tmp_path / "index"
    assert main(["-q", "style", "index", str(style_folder), "-o", str(out), "--backbone", "tiny", "--size", "32"]) == 0
    assert "12 images (12 added" in capsys.readouterr().out
    assert main(["-q", "style", "index", str(style_folder), "-o", str(out)]) == 0
    assert "12 unchanged" in capsys.readouterr().out
    assert main(["-q", "style", "index", str(style_folder), "-o", str(out), "--size", "48"]) == 2
    assert main(["-q", "style", "compare", *map(str, sorted(style_folder.rglob("*.png"))[:2]), "--backbone", "tiny", "--size", "0"]) == 2  # was a traceback
    assert "indexed with other input_size; add --rebuild" in capsys.readouterr().err
    assert main(["-q", "style", "search", str(out), str(style_folder / "noise" / "1.png"), "-k", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("style distance: the mean over layers") and lines[1].split()[:3] == ["rank", "x", "nearest"]
    assert lines[2].endswith("noise/1.png") and lines[2].split()[1] == "0.00" and lines[3].split()[1] == "1.00"  # itself, then the nearest other
    assert main(["-q", "style", "compare", str(style_folder / "noise" / "1.png"), str(style_folder / "stripes" / "1.png"), "--backbone", "tiny", "--size", "32"]) == 0
    compared = capsys.readouterr().out.splitlines()
    assert compared[0].startswith("style distance: the mean over layers") and compared[1].split() == ["layer", "term", "share"]
    shares = [float(line.split()[-1].rstrip("%")) for line in compared[2:] if line.strip().endswith("%")]
    assert len(shares) >= 2 and abs(sum(shares) - 100) < 0.5
    assert main(["-q", "style", "evaluate", str(style_folder), "--backbones", "tiny", "--size", "32"]) == 0
    assert "12 images in 3 styles" in capsys.readouterr().out
    from headstart.style.index import writing_lock

    with writing_lock(out):  # another run is writing the same index
        assert main(["-q", "style", "index", str(style_folder), "-o", str(out)]) == 2
    assert "another headstart is writing" in capsys.readouterr().err
    keep = tmp_path / "not-an-index"
    keep.mkdir()
    (keep / "precious.txt").write_text("mine")
    assert main(["-q", "style", "index", str(style_folder), "-o", str(keep), "--rebuild"]) == 2
    assert "holds precious.txt, which writing a style index there would delete; give a new or empty folder" in capsys.readouterr().err
    assert (keep / "precious.txt").read_text() == "mine"
    assert main(["-q", "style", "search", str(tmp_path / "nope"), str(style_folder / "noise" / "1.png")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


# -- the real VGG19 ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_vgg19_weights_load_and_tell_textures_apart():
    """The quantised Oxford weights load strictly (build() would raise otherwise), and at 64 px their
    Grams put every patch of a texture nearest another patch of that texture."""
    import skimage.data

    spec = get_backbone("vgg19")
    model = spec.build()
    first = model.features[0].weight
    assert first.shape == (64, 3, 3, 3) and len(torch.unique(first)) <= 256  # 8-bit codebook
    rng = np.random.default_rng(0)
    images, labels = [], []
    for name in ("brick", "grass", "gravel"):
        texture = np.stack([getattr(skimage.data, name)()] * 3, axis=-1)
        for _ in range(4):
            y, x = rng.integers(0, 512 - 160, size=2)
            images.append(texture[y : y + 160, x : x + 160])
            labels.append(name)
    rows = evaluate_style(images, labels, backbones=("vgg19",), temperatures=(None,), input_size=64)
    combined = next(r for r in rows if r.layer == ALL_LAYERS)
    assert combined.retrieval == 1.0 and combined.ratio > 2
