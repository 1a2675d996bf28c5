import multiprocessing
import os

import numpy as np
import pytest
from PIL import Image

from headstart.backbones import get_backbone
from headstart.features import CodeExtractor, FeatureCache
from tests.conftest import colour_image


@pytest.fixture
def image_paths(tmp_path):
    paths = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        colour_image((50 * i, 100, 200 - 40 * i), seed=i).save(path)
        paths.append(path)
    return paths


def extractor(**kwargs):
    return CodeExtractor(get_backbone("tiny"), engine=kwargs.pop("engine", "torch"), batch_size=kwargs.pop("batch_size", 2), **kwargs)


def test_second_pass_reads_everything_from_the_cache(image_paths):
    first = extractor()(image_paths)
    assert first.computed == 5 and first.ok.all()
    second = extractor()(image_paths)
    assert second.computed == 0 and second.engine == "cache"
    np.testing.assert_array_equal(first.codes, second.codes)
    np.testing.assert_array_equal(first.phashes, second.phashes)


def test_cache_entries_follow_content_not_name(image_paths, tmp_path):
    extractor()(image_paths)
    renamed = tmp_path / "renamed.png"
    renamed.write_bytes(image_paths[0].read_bytes())
    assert extractor()([renamed]).computed == 0
    Image.open(image_paths[1]).rotate(90).save(image_paths[1])
    assert extractor()([image_paths[1]]).computed == 1


def test_without_cache_nothing_is_written(image_paths, private_cache):
    extractor(cache=False)(image_paths)
    assert not (private_cache / "features").exists() or not any((private_cache / "features").rglob("*.pack"))


def test_unreadable_images_are_listed_not_fatal(image_paths, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff" + b"\x00" * 50)
    missing = tmp_path / "missing.png"
    codes = extractor()([image_paths[0], bad, image_paths[1], missing])
    assert sorted(codes.failures) == [1, 3]
    assert codes.failures[1].startswith("unreadable")
    assert np.isnan(codes.codes[1]).all() and not np.isnan(codes.codes[0]).any()


def test_pil_images_and_arrays_match_files(image_paths):
    from_files = extractor()(image_paths[:2]).codes
    images = [Image.open(p) for p in image_paths[:2]]
    arrays = [np.asarray(im.convert("RGB")) for im in images]
    np.testing.assert_allclose(extractor()(images).codes, from_files, atol=1e-6)
    np.testing.assert_allclose(extractor()(arrays).codes, from_files, atol=1e-6)


def test_damaged_cache_entry_is_recomputed(image_paths):
    first = extractor()(image_paths[:1])
    cache = FeatureCache(extractor().fingerprint, extractor().dim)
    pack = next(cache.packs.glob("*.pack"))
    damaged = bytearray(pack.read_bytes())
    damaged[20] ^= 0xFF  # one byte of the codes
    pack.write_bytes(bytes(damaged))
    again = extractor()(image_paths[:1])
    assert again.computed == 1
    np.testing.assert_array_equal(again.codes, first.codes)


def _write_codes(args):
    paths, cache_dir = args
    os.environ["HEADSTART_CACHE"] = cache_dir
    return extractor(cache_dir=cache_dir)(paths).codes


def test_concurrent_writers_leave_only_whole_entries(image_paths, tmp_path):
    cache_dir = str(tmp_path / "shared-cache")
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.map(_write_codes, [(image_paths, cache_dir)] * 2)
    np.testing.assert_array_equal(results[0], results[1])
    entries = list((tmp_path / "shared-cache").rglob("*"))
    assert not [e for e in entries if e.name.endswith(".tmp")]
    assert extractor(cache_dir=cache_dir)(image_paths).computed == 0


def test_onnx_engine_matches_eager_pytorch(image_paths, tmp_path):
    pytest.importorskip("onnxruntime")
    eager = extractor(cache=False)(image_paths)
    fast = extractor(cache=False, engine="onnx", cache_dir=tmp_path / "c")(image_paths)
    assert fast.engine == "onnx"
    np.testing.assert_allclose(fast.codes, eager.codes, rtol=1e-4, atol=1e-5)


def test_onnx_engine_works_where_the_cache_cannot_be_written(image_paths, tmp_path, caplog):
    # the graph is exported to a temporary folder and read from there: no fallback, no error
    pytest.importorskip("onnxruntime")
    (tmp_path / "a-file").write_text("in the way")
    fast = extractor(cache=False, engine="onnx", cache_dir=tmp_path / "a-file" / "cache")(image_paths)
    assert fast.engine == "onnx"
    np.testing.assert_allclose(fast.codes, extractor(cache=False)(image_paths).codes, rtol=1e-4, atol=1e-5)
    assert "cannot be written" in caplog.text


@pytest.mark.slow
def test_onnx_engine_matches_eager_on_mobilenet_at_small_size(tmp_path):
    pytest.importorskip("onnxruntime")
    skimage_data = pytest.importorskip("skimage.data")
    photos = [Image.fromarray(skimage_data.chelsea()), Image.fromarray(skimage_data.coffee()), Image.fromarray(skimage_data.astronaut())]
    spec = get_backbone("mobilenet_v2")
    kwargs = dict(input_size=96, cache=False, cache_dir=tmp_path)
    eager = CodeExtractor(spec, engine="torch", **kwargs)(photos).codes
    fast_extractor = CodeExtractor(spec, engine="onnx", **kwargs)
    fast = fast_extractor(photos).codes
    np.testing.assert_allclose(fast, eager, rtol=1e-4, atol=1e-4)
    # ...and a linear head on top predicts the same classes from either.
    weights = np.random.default_rng(0).normal(size=(eager.shape[1], 3))
    assert ((fast @ weights).argmax(1) == (eager @ weights).argmax(1)).all()


def test_failed_export_falls_back_to_pytorch(image_paths, monkeypatch, caplog):
    from headstart.features import engine

    def broken(*args, **kwargs):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(engine, "export_graph", broken)
    monkeypatch.setattr(engine, "EXPORT_PAYS_FROM", 0)  # as if the pass were large enough to export
    codes = extractor(cache=False, engine="auto")(image_paths)
    assert codes.engine == "torch"
    assert "using PyTorch" in caplog.text


def test_a_graph_tracing_cannot_export_comes_from_the_dynamo_exporter_and_agrees(monkeypatch, tmp_path, caplog):
    pytest.importorskip("onnxruntime")
    import logging

    import torch

    from headstart.backbones import PRE_LOGITS, build_tap_model
    from headstart.features import engine

    real, used = engine._export, []

    def tracing_fails(model, example, path, names, *, dynamo):
        used.append(dynamo)
        if not dynamo:
            raise RuntimeError("tracing cannot export this")
        real(model, example, path, names, dynamo=dynamo)

    monkeypatch.setattr(engine, "_export", tracing_fails)
    model = build_tap_model(get_backbone("tiny"), PRE_LOGITS)
    with caplog.at_level(logging.INFO, logger="headstart.features.engine"):
        engine.export_verified(model, tmp_path / "graph.onnx", 32)
    assert used == [False, True] and "using the dynamo exporter" in caplog.text
    # 19 images: ONNX Runtime takes them ONNX_BATCH at a time, and every row lands where it belongs.
    batch = torch.rand(19, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = model(batch).numpy()
    np.testing.assert_allclose(engine.OnnxEngine(tmp_path / "graph.onnx")(batch), expected, rtol=1e-4, atol=1e-5)


def test_what_pays_for_an_export_follows_the_pixels_an_image_saves_time_on():
    from headstart.features.engine import EXPORT_PAYS_FROM, export_pays_from

    assert export_pays_from(224) == EXPORT_PAYS_FROM
    # A quarter of the pixels saves a quarter of the time per image: four times the images to pay.
    assert export_pays_from(112) == pytest.approx(4 * EXPORT_PAYS_FROM)
    assert export_pays_from(288) < EXPORT_PAYS_FROM < export_pays_from(96)


def test_a_pass_too_small_to_pay_for_an_export_runs_eagerly_and_a_large_one_exports(image_paths, monkeypatch, tmp_path):
    pytest.importorskip("onnxruntime")
    from headstart.features import engine

    exports = []
    real = engine.export_graph
    monkeypatch.setattr(engine, "export_graph", lambda *args: (exports.append(args), real(*args)))
    small = extractor(cache=False, engine="auto", cache_dir=tmp_path)
    assert small(image_paths).engine == "torch" and not exports  # 5 images: far below what pays for an export
    monkeypatch.setattr(engine, "export_pays_from", lambda size: len(image_paths))
    large = extractor(cache=False, engine="auto", cache_dir=tmp_path)
    assert large(image_paths).engine == "onnx" and len(exports) == 1
    monkeypatch.setattr(engine, "EXPORT_PAYS_FROM", 10**9)  # an exported graph is used whatever the count
    assert extractor(cache=False, engine="auto", cache_dir=tmp_path)(image_paths).engine == "onnx" and len(exports) == 1


def test_leftovers_of_a_killed_run_are_never_read(image_paths):
    first = extractor()(image_paths[:2])
    cache = FeatureCache(extractor().fingerprint, extractor().dim)
    pack = next(cache.packs.glob("*.pack"))
    # A writer killed mid-record leaves half a record, and no key or half a key, after its whole ones.
    with open(pack, "ab") as f:
        f.write(b"half a record")
    with open(pack.with_suffix(".keys"), "ab") as f:
        f.write(b"half a key")
    again = extractor()(image_paths[:2])
    assert again.computed == 0
    np.testing.assert_array_equal(again.codes, first.codes)


def test_backbones_unknown_by_name_are_exported_in_process(image_paths, tmp_path):
    pytest.importorskip("onnxruntime")
    from dataclasses import replace

    spec = replace(get_backbone("tiny"), name="session-only-tiny")
    eager = CodeExtractor(spec, engine="torch", cache=False)(image_paths)
    fast = CodeExtractor(spec, engine="onnx", cache=False, cache_dir=tmp_path)(image_paths)
    assert fast.engine == "onnx"
    np.testing.assert_allclose(fast.codes, eager.codes, rtol=1e-4, atol=1e-5)


def test_the_cache_is_shared_by_writers_and_reads_the_layout_before_packs(tmp_path):
    from headstart.features import cache as cache_module

    rng = np.random.default_rng(0)
    codes = rng.random((6, 8), dtype=np.float32)
    keys = [f"{i:064x}" for i in range(6)]
    one, two = FeatureCache("fp", 8, tmp_path), FeatureCache("fp", 8, tmp_path)
    one.put(keys[0], codes[0], 10)
    two.put(keys[1], codes[1], 11)  # another writer: another pack, no locks
    assert len(list(one.packs.glob("*.pack"))) == 2
    reader = FeatureCache("fp", 8, tmp_path)
    assert reader.get(keys[0]).phash == 10 and np.array_equal(reader.get(keys[1]).codes, codes[1])
    assert one.get(keys[1]) is not None  # a writer sees what the other wrote since it last looked
    two.put(keys[2], codes[2], 12)
    cache_module.RESCAN_SECONDS, before = 0.0, cache_module.RESCAN_SECONDS
    try:
        assert np.array_equal(reader.get(keys[2]).codes, codes[2])  # written after the reader's scan
    finally:
        cache_module.RESCAN_SECONDS = before
    legacy = tmp_path / "features" / "fp" / keys[3][:2] / f"{keys[3]}.codes"
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(np.array([13], "<u8").tobytes() + codes[3].tobytes())
    assert reader.get(keys[3]).phash == 13 and reader.get(keys[4]) is None


def test_joined_backbones_name_an_engine_they_share_once(image_paths):
    from headstart.backbones import PRE_LOGITS
    from headstart.features import code_extractor

    joined = lambda: code_extractor("tiny+tiny@he_normal", PRE_LOGITS, engine="torch", cache_dir=image_paths[0].parent / "cache")  # noqa: E731
    assert joined()(image_paths).engine == "torch"  # the summary said "engine torch+torch"
    assert joined()(image_paths).engine == "cache"
