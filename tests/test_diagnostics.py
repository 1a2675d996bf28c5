"""Diagnostics: verdicts against chance, errors, label suspects, learning curve, weights, TensorBoard."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from headstart import TransferClassifier, fit_folder
from headstart.backbones import get_backbone
from headstart.diagnostics import (
    Evidence,
    diagnose,
    error_analysis,
    judge,
    label_suspects,
    learning_curve,
    out_of_fold_probabilities,
    weight_report,
)
from tests.conftest import write_class_folders
from tests.test_estimator import colour_data


def evidence(train, held, n=150, k=15, **kwargs) -> Evidence:
    from headstart.diagnostics import wilson_interval

    return Evidence(k, 1 / k, 1 / k, "test", held, wilson_interval(round(held * n), n), train_accuracy=train, **kwargs)


@pytest.mark.parametrize(
    "train, held, label",
    [
        (1.00, 0.05, "not learning"),  # the real case: 100% train, 5% test, chance 6.7%
        (1.00, 0.31, "overfitting"),
        (0.55, 0.50, "underfitting"),
        (1.00, 0.93, "healthy"),
    ],
)
def test_verdicts_from_the_numbers(train, held, label):
    verdict = judge(evidence(train, held))
    assert verdict.label == label
    assert 2 <= len(verdict.next_steps) <= 3 and verdict.evidence
    if label == "not learning":
        assert "not above chance (6.7%)" in verdict.headline and "memorised the training set" in verdict.headline


def test_a_small_test_set_cannot_pass_noise_off_as_learning():
    # 4 of 10 right with 3 classes is above chance, but its confidence interval reaches it
    assert judge(evidence(1.0, 0.4, n=10, k=3)).label != "healthy"
    assert judge(evidence(1.0, 0.97, n=300, k=3)).label == "healthy"


def test_a_wide_interval_says_too_few_to_tell_not_not_learning():
    # 6 of 7 right, chance 4/7: the interval (49%-97%) holds both chance and clear learning
    from headstart.diagnostics import wilson_interval
    from headstart.diagnostics.verdict import images_to_tell

    wide = judge(Evidence(2, 0.5, 4 / 7, "test", 6 / 7, wilson_interval(6, 7), train_accuracy=1.0, validation_accuracy=0.9, cv_accuracy=0.9, heldout_images=7))
    assert wide.label == "too few to tell"
    assert "7 test images are too few" in wide.headline and "interval 49%-97% includes chance (57.1%)" in wide.headline
    needed = images_to_tell(6 / 7, 4 / 7)
    assert wilson_interval(round(6 / 7 * needed), needed)[0] > 4 / 7 > wilson_interval(round(6 / 7 * (needed - 1)), needed - 1)[0]
    assert f"about {needed} held-out images" in wide.next_steps[0] and "cross-validated accuracy" in wide.next_steps[1]
    # 2 of 4 right is at chance, yet its interval (15%-85%) reaches clear learning too: no evidence either way
    at_chance = judge(Evidence(2, 0.5, 0.5, "test", 0.5, wilson_interval(2, 4), train_accuracy=1.0, validation_accuracy=0.77, cv_accuracy=0.77, heldout_images=4))
    assert at_chance.label == "too few to tell", at_chance.headline
    assert "4 test images are too few: accuracy 50.0% is not above chance (50.0%), but its 95% interval 15%-85%" in at_chance.headline
    assert at_chance.next_steps[0] == "Hold out more images for testing." and "77.0%" in at_chance.next_steps[1]
    # fine-tuned: the early-stopping split's 100% is not the classifier line's cross-validated 70%, which the step names
    tuned = judge(Evidence(2, 0.5, 0.5, "test", 0.5, wilson_interval(1, 2), train_accuracy=1.0, validation_accuracy=1.0, cv_accuracy=0.7, strategy="finetune_top", heldout_images=2))
    assert "(70.0%, in the classifier line)" in tuned.next_steps[1] and "Validation (early-stopping split): 100.0%." in tuned.evidence
    # A narrow interval that reaches chance is evidence of no learning: 52% of 400 with chance 50%
    narrow = judge(Evidence(2, 0.5, 0.5, "test", 0.52, wilson_interval(208, 400), train_accuracy=1.0, heldout_images=400))
    assert narrow.label == "not learning"


def test_a_held_out_split_of_one_class_cannot_show_learning():
    from headstart.diagnostics import wilson_interval

    # val holds only class a: its share is 100%, so even a perfect score is "not above chance"; say why instead
    one = judge(Evidence(2, 0.5, 1.0, "val", 1.0, wilson_interval(3, 3), train_accuracy=1.0, validation_accuracy=0.75, cv_accuracy=0.75, heldout_images=3, heldout_missing=("b",)))
    assert one.label == "too few to tell" and "every val image is of one class" in one.headline
    assert one.next_steps[0] == "Add val images of every class (b has none)." and "75.0%" in one.next_steps[1]
    assert "no images of 1 of the 2 classes (b)" in one.evidence[-1]
    # two of three classes present: the split can still show learning, and the evidence names the missing one
    some = judge(Evidence(3, 1 / 3, 0.5, "test", 0.95, wilson_interval(95, 100), train_accuracy=1.0, heldout_images=100, heldout_missing=("c",)))
    assert some.label == "healthy" and any("no images of 1 of the 3 classes (c)" in line for line in some.evidence)


def test_counts_and_cv_are_described_as_they_are_on_a_class_of_one_image():
    from headstart.summary import _how_C_was_chosen
    from headstart.diagnostics import wilson_interval

    lopsided = judge(Evidence(2, 0.5, 6 / 7, "test", 6 / 7, wilson_interval(6, 7), heldout_images=7, images_per_class=1, class_range=(1, 24)))
    assert lopsided.next_steps[-1].endswith("(now 1 to 24 per class).")  # the lower median of 1 and 24 is not "1 per class"
    assert _how_C_was_chosen({"C": 1.0, "cv_folds": 1, "cv_score": None}) == "C=1, not cross-validated (a class has one training image)"
    assert _how_C_was_chosen({"C": 0.1, "cv_folds": 5, "cv_score": None}) == "C=0.1, the one value given"
    assert _how_C_was_chosen({"C": 0.1, "cv_folds": 5, "cv_score": 0.9}).startswith("C=0.1 chosen by 5-fold CV")


def test_next_steps_follow_the_evidence():
    tuned = judge(evidence(1.0, 0.4, strategy="finetune_all", best_epoch=3, epochs_run=8, more_data="about 90 images per class."))
    assert any("Stop at epoch 3" in step for step in tuned.next_steps)
    linear = judge(evidence(0.6, 0.55, strategy="linear", better_tap="features.13"))
    assert any("--tap features.13" in step for step in linear.next_steps)


def test_more_data_advice_never_contradicts_what_was_measured():
    # 20 hymenoptera photos: cross-validation and 4 test images perfect, while the learning curve, fitted
    # on noisy thirds of the training images, put twice the images at ~91.8%
    curve = "about 18 images per class (now 10) for 2 more points, by the learning curve; doubling them (20): ~91.8%."
    perfect = judge(evidence(1.0, 1.0, n=4, k=2, cv_accuracy=1.0, heldout_images=4, images_per_class=10, more_data=curve, curve_doubled=0.918))
    assert perfect.label == "healthy"
    assert not any("91.8%" in step or "Fine-tuning may add" in step for step in perfect.next_steps), perfect.next_steps
    assert "show no mistakes" in perfect.next_steps[0] and "4 test images leave the 95% interval at 51.0%-100.0%" in perfect.next_steps[1]
    # mistakes left, but the curve still lands below the accuracy measured on all the images: not quoted
    below = judge(evidence(1.0, 0.9, cv_accuracy=0.95, images_per_class=10, more_data=curve, curve_doubled=0.918))
    assert "91.8%" not in below.next_steps[0] and "stays below the 95.0% cross-validated on all of them" in below.next_steps[0]
    assert "(now 10 per class)" in below.next_steps[0]
    # a curve that rises past the measured accuracy is quoted as it is
    above = judge(evidence(1.0, 0.9, cv_accuracy=0.9, images_per_class=10, more_data=curve, curve_doubled=0.918))
    assert above.next_steps[0] == f"To gain more: {curve}"
    # a flat curve says so at any level: hymenoptera's (96.0% now, 96.3% doubled) below its 96.7% CV
    flat = "the learning curve is flat at 121 images per class: doubling them would gain under half a point."
    hymenoptera = judge(evidence(1.0, 0.967, cv_accuracy=0.967, images_per_class=121, more_data=flat, curve_doubled=0.963, curve_flat=True))
    assert hymenoptera.next_steps[0] == f"To gain more: {flat}"


def test_imbalanced_classes_are_told_to_grow_the_smallest_first():
    # 122 ants and 5 bees, the head weighted by inverse frequency: "more images per class" was the advice
    weighted = judge(evidence(1.0, 0.81, n=153, k=2, images_per_class=5, class_range=(5, 122), imbalanced=True))
    assert "collect more images, of the smallest classes first (now 5 to 122 per class)" in weighted.next_steps[0]
    assert "collect more images per class (now 5 to 122 per class)" in judge(evidence(1.0, 0.81, n=153, k=2, images_per_class=5, class_range=(5, 122))).next_steps[0]
    # the learning curve grows every class alike: on alzheimer_mri4 (52 to 2,560 scans a class) it
    # spoke of "images per class (now 717)", the median, as if the classes were equal
    curve = "about 977 images per class (now 717) for 2 more points, by the learning curve; doubling them (1434) would add about 4.3."
    mri = judge(evidence(0.87, 0.63, k=4, images_per_class=717, class_range=(52, 2560), imbalanced=True, more_data=curve))
    assert mri.next_steps[0] == f"More data: {curve} Grow the smallest classes first (now 52 to 2560 per class)."


def test_fine_tuning_is_suggested_as_the_advisor_measured_it():
    # 50 brain MRI scans per class (unlike ImageNet), a linear head overfitting: "finetune_top" was
    # suggested, though the advisor's rule and its trial fine-tune the whole network on such data
    trial = "finetune_all 56.1% against the linear head's 53.7%, within the noise"
    mri = judge(evidence(0.99, 0.48, k=4, finetune_strategy="finetune_all", finetune_trial=trial))
    assert mri.label == "overfitting"
    assert f"Fine-tune with augmentation (--strategy finetune_all): it trains on varied copies of each image (the advisor's trial: {trial})." in mri.next_steps
    # a trial that fine-tuning lost beyond its noise is not followed by the advice to fine-tune
    lost = judge(evidence(0.99, 0.48, k=4, finetune_strategy="finetune_all", finetune_trial="finetune_all 40.0% against the linear head's 55.0%", finetune_lost=True))
    assert not any("Fine-tune" in step for step in lost.next_steps), lost.next_steps
    underfit = judge(evidence(0.6, 0.55, finetune_strategy="finetune_top"))
    assert "Fine-tune the network (--strategy finetune_top)." in underfit.next_steps
    # no plan (a strategy given): nothing measured says which
    assert "Fine-tune the network (--strategy finetune_top, or finetune_all for data unlike ImageNet)." in judge(evidence(0.6, 0.55)).next_steps


def test_an_overfitting_fine_tuned_network_is_not_told_to_do_what_it_did():
    # 50 MRI scans per class fine-tuned with the default 'objects' policy, the mirror probe warning
    # against it: "Augment (--augmentation objects, ...)" was the advice
    def tuned(**kwargs):
        return judge(evidence(0.985, 0.49, k=4, strategy="finetune_all", **kwargs)).next_steps

    warned = tuned(augmentation="objects", dropout=0.5, mirror_warned=True)
    assert warned[0] == "Augment without mirroring (--augmentation text_signs: the probe told mirrored images from their originals) and regularise more (--set dropout=0.6)."
    assert tuned(augmentation="objects", dropout=0.5)[0] == "Regularise more (--set dropout=0.6, --set mixup=0.2): it already trains on augmented copies ('objects')."
    assert tuned(augmentation="none", dropout=0.7)[0].startswith("Augment (--augmentation objects, or text_signs where mirroring changes the meaning) and regularise more (--set dropout=0.8)")
    assert not any("--augmentation objects" in step for step in tuned(augmentation="objects", dropout=0.5))


def test_an_underfitting_network_is_not_told_to_do_what_it_did():
    # a finetune_all run of 30 epochs that underfits was told "--epochs 24" and "--strategy finetune_all"
    whole = judge(evidence(0.6, 0.55, strategy="finetune_all", epochs_run=30, dropout=0.5)).next_steps
    assert whole[0] == "Train longer or with a higher learning rate (--epochs 60, --set head_lr=0.003)."
    assert whole[1] == "Regularise less (--set dropout=0.2, --set label_smoothing=0)." and not any("--strategy finetune_all" in step for step in whole)
    top = judge(evidence(0.6, 0.55, strategy="finetune_top", epochs_run=8, dropout=0.7)).next_steps
    assert top[:2] == [
        "Train longer or with a higher learning rate (--epochs 24, --set head_lr=0.003).",
        "Fine-tune more of the network (--strategy finetune_all) and regularise less (--set dropout=0.4).",
    ]


def test_the_verdict_reads_the_strategy_and_trial_from_the_plan():
    from headstart.advisor import Alternative, Plan
    from headstart.diagnostics import run
    from tests.test_advisor import measurements

    unlike = measurements(median=50, confidence=0.5, bn=0.61)
    trial = [
        Alternative("finetune_all", "pre_logits", 0.561, 0.055, "trial: 6 of 12 epochs, scored on 41 held-out images"),
        Alternative("linear", "features.16", 0.537, 0.055, "trial: same splits, scored on 41 held-out images"),
    ]
    plan = Plan("linear", "features.16", "mobilenet_v2", "small, different", "linear (earlier tap)", {}, "", unlike, trial)
    record = SimpleNamespace(plan=plan)  # the one field of a FittedModel these read
    assert run._finetune_strategy(record) == "finetune_all"
    assert run._finetune_trial(record) == ("finetune_all 56.1% against the linear head's 53.7%, within the noise", False)
    plan.alternatives[0] = Alternative("finetune_all", "pre_logits", 0.40, 0.055, "trial: 12 epochs, scored on 41 held-out images")
    assert run._finetune_trial(record) == ("finetune_all 40.0% against the linear head's 53.7%", True)
    assert run._finetune_strategy(SimpleNamespace(plan=None)) is None and run._finetune_trial(SimpleNamespace(plan=None)) == (None, False)


def test_a_held_out_split_unlike_the_training_images_is_named():
    from headstart.diagnostics import run

    def per_class(recalls, supports):
        return {"per_class": [{"recall": r, "support": n} for r, n in zip(recalls, supports)]}

    def head(cv):
        return SimpleNamespace(strategy="linear", head_report=SimpleNamespace(cv_folds=5, cv_score=cv, class_counts=None))

    # alzheimer_mri4: 5,121 training scans, cross-validated at 73.9% balanced, its test split's new
    # subjects at 54.3%: the fit said "overfitting, collect more data" and nothing of the gap
    train = np.array([717, 52, 2560, 1792])
    mri_test = per_class([0.30, 0.50, 0.80, 0.57], [179, 12, 640, 448])
    assert run.cv_overstated(head(0.739), mri_test, train) == (0.739, pytest.approx(0.5425))
    # 50 scans per class: 61.6% against 54.6% on 102 test images is within the noise of both
    assert run.cv_overstated(head(0.616), per_class([0.17, 0.92, 0.60, 0.50], [30, 12, 30, 30]), np.array([50] * 4)) is None
    # a plain-accuracy gap from another class mix is not a shift: balanced, the split scores as CV did
    assert run.cv_overstated(head(0.90), per_class([0.90, 0.90], [10, 300]), np.array([100, 100])) is None
    # 100% cross-validated, 98% on 1,000 test images: beyond the noise, but not worth an alarm
    assert run.cv_overstated(head(1.0), per_class([0.98] * 10, [100] * 10), np.array([100] * 10)) is None
    # held-out above cross-validation, or a fine-tuned model (not the head cross-validated): nothing
    assert run.cv_overstated(head(0.80), per_class([0.95, 0.95], [100, 100]), np.array([100, 100])) is None
    tuned = SimpleNamespace(strategy="finetune_all", head_report=SimpleNamespace(cv_folds=5, cv_score=0.95, class_counts=None))
    assert run.cv_overstated(tuned, per_class([0.5, 0.5], [100, 100]), np.array([100, 100])) is None

    # evaluate has no training labels: the head's recorded counts size the noise (older files: none, no line)
    recorded = SimpleNamespace(strategy="linear", head_report=SimpleNamespace(cv_folds=5, cv_score=0.739, class_counts=train.tolist()))
    assert run.cv_overstated(recorded, mri_test) == (0.739, pytest.approx(0.5425))
    assert run.cv_overstated(head(0.739), mri_test) is None
    from headstart.summary import format_evaluation
    from headstart.workflow import Evaluation

    evaluated = Evaluation("pool", 1279, 0.629, 0.543, 0.25, 0.5, {"NonDemented": 0.69}, (0.602, 0.655), cv_overstated=(0.739, 0.543))
    assert "unlike      cross-validation said 73.9% on the training images; these score 54.3% balanced, lower beyond the noise of both" in format_evaluation(evaluated)
    assert "unlike" not in format_evaluation(Evaluation("pool", 10, 0.9, 0.9, 0.5, 0.5, {"a": 0.9}, (0.6, 0.98)))

    shifted = judge(evidence(0.99, 0.63, n=1279, k=4, cv_accuracy=0.739, cv_overstated=(0.739, 0.543), more_data="about 3000 images per class."))
    assert shifted.label == "overfitting"
    assert shifted.next_steps[0].startswith("Trust the test figure (54.3% balanced), not cross-validation's 73.9%: the test images differ")
    assert "'group' column" in shifted.next_steps[0] and len(shifted.next_steps) == 3
    assert shifted.next_steps[1].endswith("The curve is measured on the training images: it holds for new ones like them.")
    assert any("said 73.9%" in line for line in shifted.evidence)
    # subjects already grouped: the advice to group them is not repeated
    grouped = judge(evidence(0.99, 0.63, n=1279, k=4, cv_accuracy=0.739, cv_overstated=(0.739, 0.543), groups_given=True))
    assert "(another source or scanner? Cross-validation already kept the groups given apart)." in grouped.next_steps[0] and "'group' column" not in grouped.next_steps[0]
    # where the model is not learning at all, the verdict's own first step already asks about the source
    assert not judge(evidence(1.0, 0.05, cv_overstated=(0.6, 0.05))).next_steps[0].startswith("Trust")


def test_the_learning_curve_is_quoted_as_a_gain_not_a_level():
    from headstart.diagnostics.probe import extrapolate

    points = [{"per_class": m, "accuracy": 1 - (0.5 * m**-0.5 + 0.02)} for m in (3, 6, 10, 15)]  # error = 0.5 m^-0.5 + 2%
    curve = extrapolate(points, 15)
    assert curve["accuracy_doubled"] == pytest.approx(1 - (0.5 * 30**-0.5 + 0.02), abs=1e-6)
    # a level ("~88.9%") read as a loss beside a held-out accuracy above the cross-validated one
    assert curve["words"] == "about 21 images per class (now 15) for 2 more points, by the learning curve; doubling them (30) would add about 3.8."
    # nearer its ceiling: 2 more points are out of reach, and the half point doubling adds is still a gain, not a level
    points = [{"per_class": m, "accuracy": 1 - (0.075 * m**-0.5 + 0.02)} for m in (3, 6, 10, 15)]
    assert extrapolate(points, 15)["words"] == "doubling the images per class (now 15) would add about 0.6 points, by the learning curve."
    assert not curve["flat"] and not extrapolate(points, 15)["flat"]
    # flat: the verdict quotes it whatever its level
    points = [{"per_class": m, "accuracy": 1 - (0.01 * m**-0.5 + 0.04)} for m in (3, 6, 10, 15)]
    assert extrapolate(points, 15)["flat"] and "is flat at 15" in extrapolate(points, 15)["words"]


def test_error_analysis_confusion_pairs_and_calibration():
    names = ["cat", "dog", "fox"]
    y = np.array([0] * 10 + [1] * 10 + [2] * 10)
    predicted = y.copy()
    predicted[[0, 1, 2, 10, 11, 20]] = [1, 1, 1, 0, 0, 1]  # cats and dogs swap; one fox looks like a dog
    scores = np.eye(3)[predicted] * 4.0
    errors = error_analysis(y, scores, names)
    assert errors["errors"] == 6 and errors["confusion"][0][1] == 3 and errors["confusion"][2][1] == 1
    assert errors["confused_pairs"] == [
        {"a": "cat", "b": "dog", "count": 5, "a_as_b": 3, "b_as_a": 2},
        {"a": "dog", "b": "fox", "count": 1, "a_as_b": 0, "b_as_a": 1},
    ]
    assert "cat and dog" in errors["merge_suggestion"]
    assert errors["per_class"][2] == {"class": "fox", "precision": 1.0, "recall": 0.9, "f1": pytest.approx(2 * 0.9 / 1.9), "support": 10}
    # every prediction has the same confidence, and 24 of 30 are right
    confidence = np.exp(4) / (np.exp(4) + 2)
    assert errors["calibration"]["ece"] == pytest.approx(abs(confidence - 24 / 30), abs=1e-9)
    many = error_analysis(np.arange(300) % 150, np.eye(150)[np.arange(300) % 150], [str(i) for i in range(150)])
    assert many["confusion"] is None and many["accuracy"] == 1.0  # no 150 x 150 matrix in metrics.json


def clustered_codes(per_class=40, k=4, dim=32, seed=0, spread=3.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, spread, (k, dim))
    y = np.repeat(np.arange(k), per_class)
    return centres[y] + rng.normal(0, 1, (len(y), dim)), y


def test_flipped_labels_top_the_suspect_list():
    codes, y = clustered_codes()
    rng = np.random.default_rng(1)
    flipped = rng.choice(len(y), 8, replace=False)  # 5% of 160
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + 1) % 4
    probabilities = out_of_fold_probabilities(codes, noisy, C=1.0)
    suspects = label_suspects(probabilities, noisy)
    top = {s["index"] for s in suspects[: 2 * len(flipped)]}
    assert len(top & set(flipped)) >= len(flipped) // 2
    assert all(s["predicted"] != s["given"] for s in suspects)


def test_learning_curve_rises_and_extrapolates():
    codes, y = clustered_codes(per_class=60, dim=64, seed=3, spread=0.3)  # close classes: more data helps
    curve = learning_curve(codes, y, C=1.0)
    accuracies = [p["accuracy"] for p in curve["points"]]
    assert accuracies[-1] > accuracies[0] and curve["images_per_class"] == 60
    assert curve["fit"] is not None and curve["accuracy_doubled"] >= curve["accuracy_now"] and curve["words"]
    assert learning_curve(codes[:8], np.array([0, 0, 1, 1, 2, 2, 3, 3]), C=1.0) is None  # under 3 per class


def test_an_imbalanced_learning_curve_is_scored_in_balanced_accuracy():
    # 120 images of one clear class, 9 and 9 of two that cannot be told apart: plain accuracy follows
    # the large class (about 94% at any size); what the minority classes get is about 67%
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [120, 9, 9])
    codes = np.where((y == 0)[:, None], 6.0, 0.0) + rng.normal(0, 1, (len(y), 16))
    curve = learning_curve(codes, y, C=1.0, class_weight="balanced")
    assert all(p["accuracy"] < 0.8 for p in curve["points"]), curve["points"]
    assert learning_curve(codes, y, C=1.0)["points"][-1]["accuracy"] > 0.9  # unweighted, as the head scores it then
    # where no part of the images lifts the probe above chance, the curve says nothing about more data
    alike = learning_curve(np.ones((len(y), 16)), y, C=1.0, class_weight="balanced")  # nothing to tell them apart by
    assert alike["at_chance"] and alike["words"] is None and alike["fit"] is None


def test_weight_report_compares_pretrained_random_and_trained():
    spec = get_backbone("tiny")  # tiny's weights are PyTorch's random initialisation: it looks untrained
    report = weight_report(spec.build())
    first = report["layers"][0]
    assert first["layer"] == "features.0.0.weight" and first["pretrained"]["excess_kurtosis"] == pytest.approx(-1.2, abs=0.4)
    assert "looks untrained" in report["notes"][0]
    assert not any(note.startswith("Most heavy-tailed") for note in report["notes"])  # uniform weights have light tails
    assert report["first_conv"]["layer"] == first["layer"] and np.array(report["first_conv"]["filters"]).shape == (8, 3, 3, 3)
    X, y = colour_data(per_class=8)
    model = TransferClassifier("tiny", engine="torch", strategy="finetune_top", finetune={"epochs": 2, "batch_size": 4, "top_blocks": 1, "precision": "fp32"}).fit(X, y)
    from headstart.diagnostics import model_weight_report

    tuned = model_weight_report(model)
    drift = {row["layer"]: row["drift"] for row in tuned["layers"] if "drift" in row}
    assert drift["features.0.0.weight"] == 0.0 and drift["features.2.0.weight"] > 0  # frozen / trained
    assert any(note.startswith("Fine-tuning moved") for note in tuned["notes"])


def test_filters_are_drawn_each_to_its_own_range_in_one_image():
    from headstart.report.plots import filter_mosaic, filters_by_scheme_plot

    rng = np.random.default_rng(0)
    small, large, flat = rng.normal(0, 0.01, (3, 2, 2)), rng.normal(0, 10.0, (3, 2, 2)), np.full((3, 2, 2), 0.5)
    mosaic = filter_mosaic([np.stack([small, large]), np.stack([flat])], columns=2)
    assert mosaic.shape == (5, 5, 3)  # two rows of two 2x2 filters, one white pixel between them
    for top, left in ((0, 0), (0, 3)):  # each spans black to white, whatever its scale
        cell = mosaic[top : top + 2, left : left + 2]
        assert cell.min() == 0.0 and cell.max() == 1.0
    assert (mosaic[3:5, 0:2] == 0.0).all() and (mosaic[2, :] == 1.0).all() and (mosaic[3:5, 3:5] == 1.0).all()  # constant: black; gaps and the missing filter: white
    assert filters_by_scheme_plot({"pretrained": [small, large], "he_normal": [large, small]}).startswith("data:image/png;base64,")
    # the reliability diagram sizes its points by their images; a run written before bins had counts still draws
    from headstart.report.plots import reliability_plot

    for bins in ([{"confidence": 0.5, "accuracy": 0.0, "count": 1}, {"confidence": 0.9, "accuracy": 0.95, "count": 40}], [{"confidence": 0.5, "accuracy": 0.0}]):
        assert reliability_plot({"ece": 0.1, "bins": bins}).startswith("data:image/png;base64,")


def test_drawing_the_report_leaves_the_callers_matplotlib_alone():
    """The plots chose the Agg backend for the whole process: a notebook's inline plots stopped
    showing once a fit had written its report."""
    import subprocess
    import sys

    probe = (
        "import matplotlib\n"
        "matplotlib.use('svg')  # stands for a notebook's inline backend\n"
        "import matplotlib.pyplot as plt\n"
        "mine = plt.figure()\n"
        "from headstart.report.plots import reliability_plot\n"
        "assert reliability_plot({'ece': 0.1, 'bins': [{'confidence': 0.9, 'accuracy': 0.95, 'count': 40}]}).startswith('data:image/png;base64,')\n"
        "print(matplotlib.get_backend(), plt.get_fignums())\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["svg", "[1]"]  # the caller's backend, its one figure, none of ours


def random_label_folders(root, seed=0):
    """Colour classes written to disk, then every file moved to a random class folder."""
    write_class_folders(root / "train", per_class=12, seed=1)
    write_class_folders(root / "test", per_class=12, seed=2)
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        files = sorted((root / split).glob("*/*.png"))
        for i, path in enumerate(files):
            target = root / split / ["red", "green", "blue"][rng.integers(3)] / f"r{i:03d}.png"
            path.rename(target)
    return root


def test_random_labels_are_not_learning(tmp_path):
    _, summary = fit_folder(random_label_folders(tmp_path / "random"), backbone="tiny", engine="torch", strategy="linear")
    assert summary.diagnostics["verdict"]["label"] == "not learning", summary.verdict


def test_a_from_scratch_network_that_memorises_is_overfitting():
    # tiny's weights are random, so finetune_all trains a CNN from scratch; the classes differ by a
    # faint colour shift under heavy noise, which a network can memorise but barely generalise.
    def noisy(per_class, seed):
        rng = np.random.default_rng(seed)
        images, labels = [], []
        for c in range(2):
            for _ in range(per_class):
                pixels = rng.normal(128, 60, (36, 36, 3))
                pixels[..., c] += 4
                images.append(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)))
                labels.append("ab"[c])
        return images, np.array(labels)

    X, y = noisy(24, 0)
    X_test, y_test = noisy(60, 1)
    settings = dict(epochs=30, head_lr=0.01, lr_mult=1, dropout=0, augmentation="none", patience=100, weight_decay=0,
                    label_smoothing=0, batch_size=8, precision="fp32", batchnorm="batch")  # fmt: skip
    model = TransferClassifier("tiny", engine="torch", strategy="finetune_all", finetune=settings).fit(X, y)
    report = diagnose(model, model.transform(X), y, eval_scores=model.decision_function(X_test), eval_labels=y_test, weights=False)
    assert report["verdict"]["label"] == "overfitting", report["verdict"]["headline"]
    assert report["evidence"]["train_accuracy"] == 1.0 and report["history"]["records"]


def test_an_easy_fit_is_healthy_and_its_run_has_the_report(colour_splits, tmp_path):
    _, summary = fit_folder(colour_splits, tmp_path / "run", backbone="tiny", engine="torch", strategy="linear")
    assert summary.diagnostics["verdict"]["label"] == "healthy" and summary.verdict.startswith("Healthy")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["diagnostics"]["verdict"] == summary.diagnostics["verdict"]
    html = (tmp_path / "run" / "report.html").read_text()
    assert summary.verdict.split(":")[0] in html and "data:image/png;base64," in html
    assert "http://" not in html and "https://" not in html  # self-contained: nothing to fetch


def test_tensorboard_logs_scalars_every_epoch_and_weight_histograms(colour_splits, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    settings = {"epochs": 2, "batch_size": 4, "precision": "fp32", "patience": 10}
    fit_folder(colour_splits, tmp_path / "run", backbone="tiny", engine="torch", strategy="finetune_all", finetune=settings, tensorboard=True)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"histograms": 0, "scalars": 0})
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"loss/train", "loss/validation", "accuracy/train", "accuracy/validation"} <= set(scalars)
    assert [e.step for e in events.Scalars("loss/train")] == [1, 2]
    assert "weights/backbone.model.features.0.0.weight" in events.Tags()["histograms"]
    html = (tmp_path / "run" / "report.html").read_text()
    assert 'alt="training history"' in html and "<th>drift</th>" in html  # a fine-tuned run's report


def test_report_of_thousands_of_classes_has_no_matrix_but_renders():
    from headstart.report import render_report

    k = 150
    errors = error_analysis(np.arange(2 * k) % k, np.eye(k)[(np.arange(2 * k) + 1) % k], [f"class {i}" for i in range(k)])
    metrics = {"data": "big/", "backbone": "tiny", "classes": list(range(k)), "n_train": 3000, "seconds": 1.0, "seconds_features": 0.5,
               "diagnostics": {"errors": errors, "verdict": {"label": "not learning", "headline": "Not learning: test 0.0%.", "evidence": [], "next_steps": []}}}  # fmt: skip
    html = render_report(metrics)
    assert "Not learning: test 0.0%." in html and "too many for a confusion matrix" in html
    assert "Worst classes by recall" in html and "All 150 classes" in html
    every = html[html.index('id="all-classes"') :]
    assert all(f"<td>class {i}</td>" in every for i in range(k))  # the searchable table holds every class


def test_class_names_the_font_lacks_are_drawn_without_a_warning_per_character():
    import warnings

    from headstart.report import render_report

    names = ["fourmi 🐜", "蜜蜂", "wasp"]
    errors = error_analysis(np.arange(6) % 3, np.eye(3)[(np.arange(6) + 1) % 3], names)
    metrics = {"data": "photos/", "backbone": "tiny", "classes": names, "n_train": 30, "seconds": 1.0, "seconds_features": 0.5,
               "diagnostics": {"errors": errors, "verdict": {"label": "not learning", "headline": "Not learning.", "evidence": [], "next_steps": []}}}  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warned once per missing glyph, on the user's terminal
        html = render_report(metrics)
    assert 'alt="confusion matrix"' in html and "<td>蜜蜂</td>" in html


def test_the_probe_runs_on_a_stated_sample_of_many_classes(monkeypatch):
    from headstart.diagnostics import probe

    monkeypatch.setattr(probe, "PROBE_CLASSES", 3)
    monkeypatch.setattr(probe, "PROBE_CODES", 90)
    codes, y = clustered_codes(per_class=40, k=6)  # 240 codes of 6 classes
    chosen = np.unique(y[probe.probe_rows(y)])
    noisy = y.copy()
    flipped = np.flatnonzero(y == chosen[0])[:3]  # three codes of one probed class labelled as another
    noisy[flipped] = chosen[1]
    rows = probe.probe_rows(noisy)
    assert len(chosen) == 3 and len(rows) <= 90 and set(np.unique(noisy[rows])) == set(chosen)
    curve, suspects, probed = probe.probe_refits(codes, noisy, C=1.0)
    assert probed == {"images": len(rows), "classes": 3, "of_images": 240, "of_classes": 6}
    assert "probed on" in curve["words"] and curve["words"].endswith("3 of the 6 classes).")
    # indices and labels are the caller's, not the sample's
    assert all(s["index"] in set(rows) and s["given"] == noisy[s["index"]] for s in suspects)
    monkeypatch.setattr(probe, "PROBE_CODES", 10_000)  # the three classes whole: every flipped code is probed
    _, suspects, _ = probe.probe_refits(codes, noisy, C=1.0)
    assert set(flipped.tolist()) <= {s["index"] for s in suspects[:6]}


def test_a_fine_tuned_networks_train_accuracy_is_scored_as_it_predicts(colour_splits, tmp_path):
    # Heavy augmentation and dropout make the epoch's running accuracy a poor witness; the verdict
    # scores the training images the way predict does.
    settings = {"epochs": 2, "batch_size": 4, "top_blocks": 1, "precision": "fp32", "augmentation": "objects", "dropout": 0.5}
    model, summary = fit_folder(colour_splits, tmp_path / "run", backbone="tiny", engine="torch", strategy="finetune_top", finetune=settings)
    train = sorted((colour_splits / "train").rglob("*.png"))
    as_predicted = float(np.mean(model.predict(train) == np.array([p.parent.name for p in train])))
    assert summary.diagnostics["evidence"]["train_accuracy"] == pytest.approx(as_predicted)


def test_balanced_accuracy_of_a_one_class_split_warns_nothing():
    import warnings

    from headstart.diagnostics.error_analysis import balanced_accuracy

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert balanced_accuracy(np.array([0, 0, 0]), np.array([0, 0, 0])) == 1.0
        assert balanced_accuracy(np.array([0, 0]), np.array([0, 1])) == 0.5  # a class predicted but absent


def test_an_ensemble_scored_from_its_heads_codes_gives_its_own_output():
    """Where a fit has the linear head's codes at hand (its training and held-out images), only the
    fine-tuned network runs; the head's half comes from the codes, and the output is the ensemble
    module's: the held-out evaluation's scores and novelty, and the verdict's train accuracy."""
    import torch  # noqa: F401  (the networks below)

    from headstart.diagnostics import run as diagnostics_run
    from headstart.features import code_extractor
    from headstart.strategies.ensemble import averaged_logits
    from headstart.strategies.finetune import network_scores

    X, y = colour_data(per_class=8)
    model = TransferClassifier("tiny", engine="torch", strategy="finetune_top", finetune={"epochs": 2, "batch_size": 4, "precision": "fp32"}).fit(X, y)
    record = model.fitted_
    assert record.ensembled
    codes = code_extractor("tiny", record.tap, input_size=record.preprocessing.crop, engine="torch", cache=False)(X)
    module_scores, _ = network_scores(record.predictor(), X, record.preprocessing)
    network_logits, _ = network_scores(record.network, X, record.preprocessing)
    np.testing.assert_allclose(averaged_logits(network_logits, record.head.decision_function(codes.codes)), module_scores, atol=1e-4)
    alone, apart = model.predicted(X), model.predicted(X, head_codes=codes)
    np.testing.assert_allclose(apart.scores, alone.scores, atol=1e-4)
    assert alone.novelty is None and apart.novelty is None  # too few held-out images to calibrate one (bench: the real thing)
    labels = np.searchsorted(record.classes, y)
    through_codes = diagnostics_run._network_train_accuracy(record, X, labels, codes.codes)
    assert through_codes == np.mean(module_scores.argmax(1) == labels) and 0.5 < through_codes <= 1.0
