import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from headstart import TransferClassifier
from headstart.advisor import Measurements, Similarity, SizeStats, TapScore, advise, sweep_taps
from headstart.advisor import plan as planning
from headstart.backbones import PRE_LOGITS, get_backbone
from headstart.cli import main
from headstart.errors import BackboneError, DataError
from headstart.features import CodeExtractor, code_extractor
from headstart.strategies.linear import fit_linear_head
from tests.test_estimator import colour_data

TINY = get_backbone("tiny")


def measurements(median=20, confidence=0.6, bn=0.2, sweep=None) -> Measurements:
    return Measurements(
        size=SizeStats(int(median * 3), 3, int(median), float(median), 1.0),
        similarity=Similarity(confidence, 0.3, bn, 10),
        sweep=sweep or [TapScore(PRE_LOGITS, 1.0, 32, 0.9, 0.02), TapScore("features.1", 0.5, 16, 0.8, 0.02)],
        seconds_per_image=0.001,
    )


def test_sweep_taps_end_stages_from_the_top_down():
    assert sweep_taps(get_backbone("mobilenet_v2")) == [PRE_LOGITS, "features.17", "features.16", "features.13", "features.10"]
    # tiny's last block is as wide as its codes (pooled, it is them), so the sweep skips it
    assert sweep_taps(TINY) == [PRE_LOGITS, "features.1", "features.0"]


@pytest.mark.parametrize(
    "median, confidence, bn, case, rule",
    [
        (20, 0.6, 0.2, (True, True), "linear"),
        (20, 0.1, 1.0, (True, False), "linear"),
        (500, 0.6, 0.2, (False, True), "finetune_top"),
        (500, 0.6, 1.0, (False, False), "finetune_all"),
        (20, 0.3, 0.3, (True, True), "linear"),  # the BN distance decides (the confidence moves with the input size)
        (20, 0.3, None, (True, False), "linear"),  # without BatchNorm statistics, the confidence
    ],
)
def test_the_four_cases_and_their_rule_of_thumb(median, confidence, bn, case, rule):
    assert planning.classify(measurements(median, confidence, bn)) == case
    assert planning.rule_of_thumb(*case)[0] == rule


def test_without_any_similarity_signal_the_plan_says_it_assumed_photos():
    blind = replace(measurements(), similarity=Similarity(None, None, None, 0))  # e.g. vgg19: no head, no BatchNorm
    assert planning.classify(blind) == (True, True)
    assert "not measurable with this backbone" in planning._similarity_line(blind, True)


def test_a_tap_within_the_noise_of_the_top_one_loses_to_it():
    close = [TapScore(PRE_LOGITS, 1.0, 32, 0.900, 0.02), TapScore("features.1", 0.5, 16, 0.905, 0.02)]
    assert planning.best_linear(close, prefer_earlier=False).tap == PRE_LOGITS
    assert planning.best_linear(close, prefer_earlier=True).tap == "features.1"
    clear = [TapScore(PRE_LOGITS, 1.0, 32, 0.80, 0.02), TapScore("features.1", 0.5, 16, 0.90, 0.02)]
    assert planning.best_linear(clear, prefer_earlier=False).tap == "features.1"


def noise_images(n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    # 36 px: tiny's resize is then a no-op, which would otherwise smooth the noise
    return [Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)) for _ in range(n)]


def test_batchnorm_distance_is_small_for_data_like_the_statistics_and_large_for_unlike(private_cache):
    # tiny's BatchNorm statistics come from uniform noise over the normalised input range, which is
    # what uniformly random pixels become; flat-ish colour images are far from it.
    labels = np.repeat([0, 1, 2], 6)
    like = advise(TINY, noise_images(18, 0), labels, time_budget=0)
    unlike = advise(TINY, colour_data()[0], labels, time_budget=0)
    assert like.measurements.similarity.bn_distance < 0.2 < 0.5 < unlike.measurements.similarity.bn_distance
    assert like.measurements.similarity.head_confidence is None  # tiny has no ImageNet head
    assert unlike.measurements.similarity.bn_layers == 3


def test_the_measuring_pass_fills_the_feature_cache():
    X, y = colour_data()
    plan = advise(TINY, X, y, time_budget=0)
    assert plan.measurements.n_measured == 18 and plan.measurements.size.n_classes == 3
    assert {s.tap for s in plan.measurements.sweep} >= {PRE_LOGITS, "features.1", "features.0"}
    for tap in (PRE_LOGITS, "features.1"):
        codes = CodeExtractor(TINY, tap, engine="torch")(X)
        assert codes.computed == 0  # every code came from the advisor's pass
    fresh = CodeExtractor(TINY, PRE_LOGITS, engine="torch", cache=False)(X)
    np.testing.assert_allclose(CodeExtractor(TINY, PRE_LOGITS, engine="torch")(X).codes, fresh.codes, rtol=1e-5, atol=1e-6)


def test_the_measuring_pass_in_onnx_runtime_gives_the_eager_pass_figures(monkeypatch, private_cache):
    import importlib

    measuring = importlib.import_module("headstart.advisor.measure")
    images, labels = noise_images(30, 0) + colour_data(per_class=10)[0], np.repeat([0, 1, 2, 3, 4, 5], 10)
    order = np.random.default_rng(0).permutation(60)  # every batch a mixture, as in a folder of photos
    images, labels = [images[i] for i in order], labels[order]
    eager, eager_sample = measuring.measure(TINY, images, labels, batch_size=6, cache=False, cache_dir=private_cache)
    monkeypatch.setattr(measuring, "export_pays_from", lambda size: 0)  # 60 images pay for an export here
    monkeypatch.setattr(measuring, "BN_SAMPLE", 12)  # two of the ten batches run eagerly, for the BatchNorm inputs
    graph, graph_sample = measuring.measure(TINY, images, labels, batch_size=6, cache=False, cache_dir=str(private_cache))  # a str too
    assert len(list((private_cache / "onnx").glob("*-taps-32.onnx"))) == 1
    for tap, codes in eager_sample["codes"].items():
        np.testing.assert_allclose(graph_sample["codes"][tap], codes, rtol=1e-4, atol=1e-5)
    assert [s.cv_accuracy for s in graph.sweep] == pytest.approx([s.cv_accuracy for s in eager.sweep])
    # the moments of 12 images spread over the pass against all 60
    assert abs(graph.similarity.bn_distance - eager.similarity.bn_distance) < 0.1 * eager.similarity.bn_distance
    assert graph.similarity.bn_distance != eager.similarity.bn_distance  # the sample is not the whole
    assert graph.seconds_per_image > 0  # timed on the eager batches: what fine-tuning estimates rest on
    # A second backbone's pass reads no BatchNorm moments: every batch runs in the graph, same codes.
    codes_only, codes_only_sample = measuring.measure(TINY, images, labels, batch_size=6, cache=False, cache_dir=private_cache, moments=False)
    assert codes_only.similarity.bn_distance is None and codes_only.seconds_per_image == 0  # no eager batch
    for tap, codes in eager_sample["codes"].items():
        np.testing.assert_allclose(codes_only_sample["codes"][tap], codes, rtol=1e-4, atol=1e-5)
    assert [s.cv_accuracy for s in codes_only.sweep] == pytest.approx([s.cv_accuracy for s in eager.sweep])
    saved = next((private_cache / "onnx").glob("*-taps-32.onnx"))
    saved.write_bytes(b"damaged")  # a damaged graph in the cache is exported again, as the codes' graphs are
    _, again = measuring.measure(TINY, images, labels, batch_size=6, cache=False, cache_dir=private_cache)
    np.testing.assert_allclose(again["codes"][PRE_LOGITS], graph_sample["codes"][PRE_LOGITS])
    assert saved.stat().st_size > 1000
    # A later pass too small to pay for an export of its own (held-out images, a prediction) runs in
    # the measuring graph at any of its taps, joined ones too, instead of eagerly.
    few = images[:5]
    for tap in (PRE_LOGITS, "features.1", "features.1+pre_logits"):
        eager_codes = code_extractor(TINY.name, tap, engine="torch", cache=False)(few)
        codes = code_extractor(TINY.name, tap, cache=False, cache_dir=private_cache)(few)
        assert set(codes.engine.split("+")) == {"onnx"}, tap
        np.testing.assert_allclose(codes.codes, eager_codes.codes, rtol=1e-4, atol=1e-5)
    assert len(list((private_cache / "onnx").glob("*.onnx"))) == 1  # and exports nothing
    # So do the advisor's mirror probe's images, without the network ever being built eagerly.
    from headstart.features import engine

    eager_probe = measuring.mirror_probe(TINY, images, TINY.preprocessing, cache_dir=private_cache / "no-graph-here")
    monkeypatch.setattr(engine, "build_tap_model", lambda *args: pytest.fail("built the network eagerly"))
    assert measuring.mirror_probe(TINY, images, TINY.preprocessing, cache_dir=private_cache) == pytest.approx(eager_probe, abs=0.05)
    assert len(list((private_cache / "onnx").glob("*.onnx"))) == 1

def test_a_trial_decides_when_the_rule_is_in_doubt(monkeypatch):
    monkeypatch.setattr(planning, "SMALL_PER_CLASS", 4)  # 6 per class counts as large: fine-tuning is on the table
    monkeypatch.setattr(planning, "ADVICE_SECONDS", 1e9)  # time for every split, however busy the machine
    X, y = colour_data(per_class=10)
    plan = advise(TINY, X, y, finetune={"batch_size": 8, "precision": "fp32"})
    trials = [a for a in plan.alternatives if a.how.startswith("trial")]
    similar = planning.classify(plan.measurements)[1]
    assert {a.strategy for a in trials} == {"linear", "finetune_top" if similar else "finetune_all"}
    assert any(line.startswith("Trial on 30 held-out images (5 splits, each image scored once)") for line in plan.explanation)
    assert 3 <= len(plan.explanation) <= 8 and any(line.startswith("Plan:") for line in plan.explanation)
    budgeted = advise(TINY, X, y, time_budget=0)
    assert budgeted.strategy == "linear" and any("budget" in line for line in budgeted.explanation)


def test_the_trial_runs_one_split_when_advice_has_no_time_for_more(monkeypatch):
    monkeypatch.setattr(planning, "SMALL_PER_CLASS", 4)
    monkeypatch.setattr(planning, "ADVICE_SECONDS", 0.0)
    X, y = colour_data(per_class=10)
    plan = advise(TINY, X, y, finetune={"batch_size": 8, "precision": "fp32"}, cache=False)
    assert any(line.startswith("Trial on 6 held-out images: ") for line in plan.explanation)


def test_on_small_data_the_trial_fine_tunes_within_the_advice_bound_and_says_so(monkeypatch):
    monkeypatch.setattr(planning, "ADVICE_SECONDS", 0.0)  # no time left: one epoch, then the schedule ends
    monkeypatch.setattr(planning, "classify", lambda _: (True, False))  # small, unlike ImageNet: the rule is in doubt
    monkeypatch.setattr(planning, "linear_misses", lambda *args: 5)  # and the linear head leaves something to win
    X, y = colour_data(per_class=10)
    plan = advise(TINY, X, y, finetune={"batch_size": 8, "precision": "fp32", "epochs": 3}, cache=False)
    line = next(line for line in plan.explanation if line.startswith("Trial on 6 held-out images: "))
    assert line.endswith("Its fine-tuning had time for 1 of 3 epochs within the 0 s advice bound, so it may understate fine-tuning.")
    assert any(a.how.startswith("trial: 1 of 3 epochs (the 0 s advice bound)") for a in plan.alternatives)


def test_no_trial_where_the_linear_head_leaves_fine_tuning_nothing_to_win(monkeypatch):
    # small data unlike ImageNet, which a linear head gets all right: a trial (40 s on 12 such
    # images) could not show fine-tuning better beyond its noise, so none is run
    monkeypatch.setattr(planning, "classify", lambda _: (True, False))
    monkeypatch.setattr(planning, "_trial", lambda *args: pytest.fail("ran a trial"))
    X, y = colour_data(per_class=10)
    plan = advise(TINY, X, y, cache=False)
    assert plan.strategy == "linear"
    assert "No fine-tuning trial: the linear head misses 0 of the 30 measured images in cross-validation, leaving fine-tuning nothing to win beyond a trial's noise." in plan.explanation


@pytest.mark.parametrize(
    "median, fine_tuned, chosen",
    [
        (20, 0.86, "linear"),  # small: the rule says linear; +1 point within 2 points of noise keeps it
        (20, 0.90, "finetune_all"),  # small: +5 points beyond the noise overturns the rule
        (500, 0.84, "finetune_all"),  # large: the rule says fine-tune; -1 point within the noise keeps it
        (500, 0.80, "linear"),  # large: -5 points beyond the noise overturns the rule
    ],
)
def test_the_trial_overturns_the_rule_only_beyond_the_noise(monkeypatch, median, fine_tuned, chosen):
    monkeypatch.setattr(planning, "_trial", lambda *args: (fine_tuned, 0.85, 0.02, 400, 1, None))
    labels = np.repeat(np.arange(3), 10)
    sample = {"labels": labels, "index": np.arange(30), "codes": {}}
    plan = planning.decide(TINY, measurements(median, 0.1, 1.0), sample, [None] * 30, finetune_overrides={"augmentation": "none"})
    assert plan.case.endswith("different") and plan.strategy == chosen
    assert any(line.startswith("Trial on 400 held-out images") for line in plan.explanation)


@pytest.mark.parametrize("ensemble", [True, False])
def test_a_fine_tuning_plan_keeps_the_tap_its_trial_averaged_it_with(monkeypatch, ensemble):
    """Data unlike ImageNet: the sweep's earlier tap is the linear head the trial scored fine-tuning
    with (averaged), so the plan keeps it for the fit to average the network with, and says so."""
    monkeypatch.setattr(planning, "_trial", lambda *args: (0.95, 0.85, 0.02, 400, 1, None))
    sweep = [TapScore(PRE_LOGITS, 1.0, 32, 0.70, 0.02), TapScore("features.1", 0.5, 16, 0.85, 0.02)]
    sample = {"labels": np.repeat(np.arange(3), 10), "index": np.arange(30), "codes": {}}
    overrides = {"augmentation": "none", "ensemble": ensemble}
    plan = planning.decide(TINY, measurements(20, 0.1, 1.0, sweep), sample, [None] * 30, finetune_overrides=overrides)
    assert plan.strategy == "finetune_all" and plan.tap == "features.1"
    assert ("it predicts averaged with the linear classifier on the features.1 codes" in plan.explanation[-1]) is ensemble


def test_the_trial_trains_at_the_input_size_it_scores_at(monkeypatch):
    from headstart.strategies import finetune as finetuning

    monkeypatch.setattr(planning, "SMALL_PER_CLASS", 4)
    sizes = []
    real = finetuning.finetune

    def recording(*args, **kwargs):
        sizes.append(kwargs["preprocessing"].crop)
        return real(*args, **kwargs)

    monkeypatch.setattr(finetuning, "finetune", recording)
    X, y = colour_data(per_class=10)
    advise(TINY, X, y, input_size=24, finetune={"batch_size": 8, "precision": "fp32", "epochs": 1})
    assert sizes and set(sizes) == {24}  # every split's


def test_auto_estimator_fits_the_plan_saves_it_and_reloads(tmp_path):
    X, y = colour_data()
    model = TransferClassifier("tiny", engine="torch").fit(X, y)  # strategy="auto" is the default
    assert model.plan_.strategy == model.strategy_ and model.tap_ == model.plan_.tap
    assert model.score(X, y) == 1.0
    model.save(tmp_path / "run")
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert plan["strategy"] == model.strategy_ and plan["explanation"] == model.plan_.explanation
    loaded = TransferClassifier.load(tmp_path / "run")
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X), atol=1e-6)


@pytest.mark.parametrize("partner_informative, chosen", [(True, "tiny+partner"), (False, "tiny")])
def test_the_partner_backbone_joins_only_beyond_the_noise(partner_informative, chosen):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    weak = np.abs(rng.normal(size=(60, 32)))
    weak[:, :3] += 0.7 * np.eye(3)[labels]  # codes that tell the classes apart, badly
    partner = np.abs(rng.normal(size=(60, 16)))
    if partner_informative:
        partner[:, :3] += 3.0 * np.eye(3)[labels]
    _, alone = fit_linear_head(weak, labels)
    sweep = [TapScore(PRE_LOGITS, 1.0, 32, alone.cv_score, alone.cv_score_std), TapScore("features.1", 0.5, 16, 0.3, 0.05)]
    sample = {"labels": labels, "index": np.arange(60), "codes": {PRE_LOGITS: weak, "features.1": weak[:, :16]}, "partner": ("partner", partner, PRE_LOGITS)}
    plan = planning.decide(TINY, measurements(20, sweep=sweep), sample, [None] * 60)
    assert plan.case == "small, similar" and plan.strategy == "linear" and plan.backbone == chosen
    line = next(line for line in plan.explanation if line.startswith("Second embedded backbone"))
    assert ("the head reads both" in line) == partner_informative
    assert any(a.tap == f"tiny+partner {PRE_LOGITS}" for a in plan.alternatives)
    assert ("top-layer codes of tiny and partner" in plan.describe()) == partner_informative
    # the sweep scored 3 of 300 classes (thousands are sampled): the partner's score is on those too, and says so
    few = replace(measurements(20, sweep=sweep), sweep_classes=3, size=SizeStats(6000, 300, 20, 20, 1.0))
    lines = planning.decide(TINY, few, sample, [None] * 60).explanation
    assert sum("-fold CV on 3 of the 300 classes, chosen at random)" in line for line in lines) == 2, lines  # the sweep's line and the partner's


@pytest.mark.parametrize("two_taps", [False, True])
def test_unlike_imagenet_the_partner_joins_at_its_own_best_tap(two_taps):
    # two_taps: the sweep's best is two taps of this backbone joined (digits-130 on a slower CPU:
    # features.16+pre_logits, 96.0% on the test split, and the partner was neither measured nor
    # offered); the best single tap joins the partner's (there: features.16 + blocks.4, 98.25%)
    from headstart.advisor import _partner_worth_reading

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    weak = np.abs(rng.normal(size=(60, 16)))
    weak[:, :3] += 0.7 * np.eye(3)[labels]
    partner = np.abs(rng.normal(size=(60, 24)))
    partner[:, :3] += 3.0 * np.eye(3)[labels]
    _, alone = fit_linear_head(weak, labels)
    sweep = [TapScore(PRE_LOGITS, 1.0, 32, 0.3, 0.05), TapScore("features.1", 0.5, 16, alone.cv_score, alone.cv_score_std)]
    sweep += [TapScore("features.1+pre_logits", 1.0, 48, alone.cv_score + 0.01, alone.cv_score_std)] if two_taps else []
    unlike = measurements(20, confidence=0.1, bn=0.9, sweep=sweep)
    assert _partner_worth_reading(get_backbone("mobilenet_v2"), unlike, None)  # the partner is measured
    codes = {PRE_LOGITS: np.abs(rng.normal(size=(60, 32))), "features.1": weak}
    sample = {"labels": labels, "index": np.arange(60), "codes": codes, "partner": ("partner", partner, "blocks.5")}
    # no time for a fine-tuning trial: the rule's linear head on an earlier tap
    plan = planning.decide(TINY, unlike, sample, [None] * 60, time_budget=1e-6)
    assert plan.case == "small, different" and plan.strategy == "linear"
    assert (plan.backbone, plan.tap) == ("tiny+partner", "features.1+blocks.5")
    assert "the features.1 codes of tiny and the blocks.5 codes of partner" in plan.describe()
    line = next(line for line in plan.explanation if line.startswith("Second embedded backbone: tiny features.1 and partner blocks.5 codes joined"))
    assert ("points over its features.1+pre_logits codes, beyond the noise" in line) == two_taps


@pytest.mark.parametrize("tap, width", [(PRE_LOGITS, 64), ("features.1+pre_logits", 48)])
def test_a_plan_that_joins_two_backbones_fits_saves_and_reloads(tap, width, monkeypatch, tmp_path):
    import headstart.advisor as advisor

    real = advisor.advise
    monkeypatch.setattr(advisor, "advise", lambda *a, **k: replace(real(*a, **k), strategy="linear", backbone="tiny+tiny@he_normal", tap=tap))
    X, y = colour_data()
    model = TransferClassifier("tiny", engine="torch").fit(X, y)
    assert model.backbone_ == model.fitted_.backbone == "tiny+tiny@he_normal"
    assert model.head_.coef.shape == (3, width) and model.tap_ == tap  # one tap for both, or one each
    codes = model.transform(X)
    first = width - 32
    np.testing.assert_allclose(np.linalg.norm(codes[:, :first], axis=1), 1.0, rtol=1e-5)  # each backbone's part has unit rows
    np.testing.assert_allclose(np.linalg.norm(codes[:, first:], axis=1), 1.0, rtol=1e-5)
    model.save(tmp_path / "run")
    loaded = TransferClassifier.load(tmp_path / "run")
    assert loaded.backbone_ == "tiny+tiny@he_normal"
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X), atol=1e-6)


def test_a_plan_is_reused_for_the_same_images_labels_and_settings_only(private_cache, monkeypatch):
    import headstart.advisor as advisor

    X, y = colour_data()
    first = advise(TINY, X, y)
    passes = []
    real = advisor.measure
    monkeypatch.setattr(advisor, "measure", lambda *a, **k: passes.append(1) or real(*a, **k))
    again = advise(TINY, X, y)
    assert again.from_cache and not first.from_cache and passes == []
    assert (again.strategy, again.tap, again.backbone, again.explanation) == (first.strategy, first.tap, first.backbone, first.explanation)
    assert again.measurements == first.measurements and again.alternatives == first.alternatives
    assert not advise(TINY, X, y[::-1]).from_cache  # other labels
    assert not advise(TINY, X, y, time_budget=1e6).from_cache  # another setting
    assert not advise(TINY, X, y, cache=False).from_cache
    import headstart.advisor.cache as plans

    this_code = plans.code_fingerprint
    monkeypatch.setattr(plans, "code_fingerprint", lambda: "other code")  # a newer commit, the version unchanged
    assert not advise(TINY, X, y).from_cache
    monkeypatch.setattr(plans, "code_fingerprint", this_code)
    assert len(passes) == 4
    for stored in (private_cache / "plans").glob("*.json"):
        stored.write_text("{ damaged")
    assert not advise(TINY, X, y).from_cache  # a damaged entry is measured afresh...
    assert advise(TINY, X, y).from_cache  # ...and replaced


def test_a_given_tap_is_kept_and_a_wrong_one_fails_before_any_work():
    X, y = colour_data()
    model = TransferClassifier("tiny", engine="torch", tap="features.2", time_budget=0).fit(X, y)
    assert model.tap_ == "features.2" and "features.2 codes (as asked)" in model.plan_.explanation[-1]
    with pytest.raises(BackboneError, match="has no tap 'nope'"):
        advise(TINY, X, y, tap="nope")
    with pytest.raises(DataError, match=r"class\(es\) green have 1 training image; .*every class needs 2"):
        advise(TINY, X[:7], y[:7])


def test_with_fewer_than_five_images_a_class_the_sweep_says_how_many_folds():
    X, y = colour_data(per_class=3)
    plan = advise(TINY, X, y, time_budget=0)
    assert all(s.folds == 3 for s in plan.measurements.sweep)
    assert any(line.startswith("Layer sweep (3-fold CV)") for line in plan.explanation)


def test_tap_concatenations_fit_and_export(tmp_path):
    pytest.importorskip("onnxruntime")
    from headstart.export import export_onnx
    from tests.test_export import onnx_probabilities

    X, y = colour_data()
    model = TransferClassifier("tiny", engine="torch", strategy="linear", tap="features.1+pre_logits").fit(X, y)
    assert model.head_.coef.shape == (3, 48)
    path = export_onnx(model, tmp_path / "model.onnx")
    np.testing.assert_allclose(onnx_probabilities(path, X, model.preprocessing_), model.predict_proba(X), atol=1e-4)


def test_cli_advise_prints_the_plan_and_json(colour_splits, capsys):
    assert main(["advise", str(colour_splits), "--backbone", "tiny", "--time-budget", "0"]) == 0
    out = capsys.readouterr().out
    assert "case" in out and "Plan:" in out and "Layer sweep" in out
    # the 9 test images are left out as fit leaves them out, and said (10 in class folders read "4 per class")
    assert "18 images measured in" in out and "(training images only: the 9 test images are held out, as fit holds them out)" in out
    assert main(["advise", str(colour_splits), "--backbone", "tiny", "--time-budget", "0", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["measurements"]["size"]["n_images"] == 18 and plan["strategy"] == "linear"
    assert main(["advise", str(colour_splits), "--backbone", "nope"]) == 2


def test_plan_lines_cover_size_similarity_sweep_and_decision():
    plan = planning.decide(TINY, measurements(), {"labels": np.repeat([0, 1, 2], 20)}, [], time_budget=0)
    text = "\n".join(plan.explanation)
    assert plan.case == "small, similar" and plan.strategy == "linear" and plan.tap == PRE_LOGITS
    assert "3 classes, 20 images per class" in text and "head confidence 0.60" in text and "top tap 90.0%" in text
    assert "not tried at this size" in text and "may add a point or two" in text
    flawless = [TapScore(PRE_LOGITS, 1.0, 32, 1.0, 0.0), TapScore("features.1", 0.5, 16, 0.8, 0.02)]
    text = "\n".join(planning.decide(TINY, measurements(sweep=flawless), {"labels": np.repeat([0, 1, 2], 20)}, [], time_budget=0).explanation)
    assert "makes no mistake in cross-validation" in text and "may add" not in text  # beside the verdict's "nothing measured is left"
    large = planning.decide(TINY, replace(measurements(500)), {"labels": np.repeat([0, 1, 2], 500)}, [], time_budget=0)
    assert large.strategy == "linear" and "budget" in large.explanation[-1]


def test_what_the_time_budget_left_out_is_said():
    # measuring took longer than the whole budget, and the partner backbone's pass did not fit in it
    spent = replace(measurements(), seconds=30.0)
    sample = {"labels": np.repeat([0, 1, 2], 20), "partner_skipped": ("efficientnet_lite0", 25.0)}
    text = "\n".join(planning.decide(TINY, spent, sample, [], time_budget=10).explanation)
    assert "Time budget 10 s: measuring alone took 30.0 s (it is never cut short)" in text
    assert "Second embedded backbone: efficientnet_lite0 not tried: its codes would take about 25 s, more than the time budget leaves." in text


def test_the_plan_says_why_a_better_tap_within_the_noise_lost_to_the_top_one():
    close = [TapScore(PRE_LOGITS, 1.0, 32, 0.900, 0.02), TapScore("features.1", 0.5, 16, 0.904, 0.02)]
    labels = {"labels": np.repeat([0, 1, 2], 20)}
    plan = planning.decide(TINY, measurements(sweep=close), labels, [], time_budget=0)
    assert plan.tap == PRE_LOGITS
    assert "features.1's 90.4% in the sweep is within the noise of the top tap's 90.0%" in plan.explanation[-2]
    asked = planning.decide(TINY, measurements(sweep=close), labels, [], time_budget=0, tap=PRE_LOGITS)
    assert asked.tap == PRE_LOGITS and "within the noise" not in asked.explanation[-2]


def test_the_measuring_sample_covers_every_class_of_thousands_within_its_bound():
    from headstart.advisor.measure import MAX_COVERING, MIN_PER_CLASS, sample_index, sweep_classes

    rng = np.random.default_rng(0)
    counts = rng.integers(1, 40, 3000)  # 3,000 classes, some with a single image
    labels = rng.permutation(np.repeat(np.arange(3000), counts))
    index = sample_index(labels, max_images=2000)
    taken = np.bincount(labels[index], minlength=3000)
    np.testing.assert_array_equal(taken >= np.minimum(counts, MIN_PER_CLASS), True)
    assert len(index) <= max(2000, MAX_COVERING) and len(np.unique(index)) == len(index)
    np.testing.assert_array_equal(index, sample_index(labels, max_images=2000))  # the plan cache's key depends on it
    # The images beyond the covering two go to the sweep's classes, in proportion to their sizes.
    chosen = sweep_classes(3000)
    assert len(chosen) == 100 and taken[chosen].sum() > taken.sum() - MIN_PER_CLASS * 3000


def test_a_small_dataset_is_measured_whole_and_a_larger_one_in_proportion():
    from headstart.advisor.measure import sample_index

    labels = np.repeat(np.arange(4), [3000, 600, 300, 100])
    np.testing.assert_array_equal(sample_index(labels[:500], max_images=2000), np.arange(500))
    taken = np.bincount(labels[sample_index(labels, max_images=2000)])
    assert taken.sum() == 2000 and abs(taken[0] / taken[1] - 5) < 0.2 and taken[3] >= 2


def test_the_size_line_gives_the_range_of_images_per_class():
    from types import SimpleNamespace

    from headstart.advisor.measure import size_stats

    labels = np.repeat(["ants", "bees"], [98, 10])  # of two classes the (lower) median is the smaller: 10 alone read as every class's
    line = planning._size_line(SimpleNamespace(size=size_stats(labels)), small=True)
    assert line.startswith("2 classes, 10 images per class (median; 10 to 98, 108 in all, imbalance 9.8:1): small")
    line = planning._size_line(SimpleNamespace(size=size_stats(np.repeat(["ants", "bees"], 4))), small=True)
    assert line.startswith("2 classes, 4 images per class (each, 8 in all): small")
