"""'None of these': every novelty score and the maximum-softmax baseline, on far and near novelties.

    python benchmarks/bench_novelty.py [--only hymenoptera/flowers ...] [--model-only [--strategy finetune_top]] [--oracle] [--examples 40]

A pair is a known set (a linear head and the detectors fitted on its training codes) and novel
images: another dataset's held-out images (far) or the held-out images of classes left out of the
known set's training (near: 12 of oxford17flowers' 17 classes trained, the other 5 novel; 7 of the
10 digits). Known test images are the known classes' held-out images. MobileNetV2 pre_logits codes,
at the input size a fit chooses (photos 288 px, MRI 224, digits 96). For each method: AUROC of
novel against known test images; then at the threshold calibrated on the training images'
out-of-fold scores (keep 95%), the share of known test images rejected, the share of novel images caught, and accuracy on the
known test images accepted. Then the shipped default end to end ("model (knn+msp)": a linear
TransferClassifier's own ``novelty_score`` and ``novelty_threshold_``; ``--strategy auto``: the model a
default fit makes, joined backbones and earlier taps included), beside that model's own maximum
softmax probability, and what scoring adds to ``predict``'s time on flowers' test images.

``--oracle``: an upper bound for any fusion of the scores a head and its codes give (MSP, margin,
entropy, largest logit, energy, logit margin, kNN, nearest class mean, code norm): a logistic
regression over all nine, fitted on the pair's own test labels (known against novel) and scored by
5-fold cross-validation there, on MobileNetV2's top codes and on both backbones' joined codes.

``--examples N``: a model (``--strategy``, linear by default; ``--only`` names known sets) taught by N images of one novel set (``fit(..., none_of_these=...)``)
against the same model untaught: AUROC and the share caught at its threshold on that set's other
images (up to 300) and on the other novel sets, and the known test images rejected.

Candidates beyond the shipped ones: kNN on other codes (``knn1-eff``, ``knn1-both``, ``knn1-f13``,
``knn1-imagenet``; OTHER_CODES) and fusion rules other than the maximum (``mean:``, ``fisher:``,
``tail:``; see ``fuse``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).parent))
import _datasets  # noqa: E402
from _common import SHARED, dev_set, machine  # noqa: E402

from headstart import TransferClassifier  # noqa: E402
from headstart.backbones import get_backbone  # noqa: E402
from headstart.data import near_duplicate_groups  # noqa: E402
from headstart.data.duplicates import stratified_folds  # noqa: E402
from headstart.data.images import as_sources  # noqa: E402
from headstart.recipe import input_size as input_size_for  # noqa: E402
from headstart.strategies import fit_linear_head  # noqa: E402
from headstart.strategies.linear import softmax  # noqa: E402
from headstart.strategies.novelty import KNOWN_SHARE, fit_detector, out_of_fold_scores, percentile  # noqa: E402

SETS = {  # name: (folder, input size, training images per class, held-out images per class)
    "hymenoptera": (lambda: SHARED / "hymenoptera", None, None, None),
    "flowers": (lambda: SHARED / "oxford17flowers", None, None, 20),
    "mri": (lambda: SHARED / "alzheimer_mri4", None, 50, 100),
    "digits": (lambda: _datasets.digits(50), 96, None, None),
}
NOVEL_CAP = 300  # novel images per pair
PAIRS = [  # (known set, novel set or None for held-out classes, classes held out)
    ("hymenoptera", "flowers", 0), ("hymenoptera", "mri", 0), ("hymenoptera", "digits", 0),
    ("flowers", "hymenoptera", 0), ("flowers", "mri", 0), ("flowers", "digits", 0),
    ("mri", "hymenoptera", 0), ("mri", "flowers", 0), ("mri", "digits", 0),
    ("digits", "flowers", 0), ("digits", "mri", 0),
    ("flowers", None, 5), ("digits", None, 3),
]
VARIANTS = {  # name: (method, k, kNN calibrated by leaving out whole folds)
    "msp": ("msp", 1, False), "energy": ("energy", 1, False), "mahalanobis": ("mahalanobis", 1, False),
    "relative_mahalanobis": ("relative_mahalanobis", 1, False), "knn1": ("knn", 1, False), "knn5": ("knn", 5, False),
    "knn1-folds": ("knn", 1, True), "knn1-std": ("knn", 1, False), "ncm": ("ncm", 1, False),
    "knn1-eff": ("knn", 1, False), "knn1-both": ("knn", 1, False), "knn1-f13": ("knn", 1, False), "knn1-imagenet": ("knn", 1, False),
}
STANDARDISED = {"knn1-std"}  # codes standardised by the training codes' mean and spread first (as the head sees them)
# Other codes for kNN (the head still reads MobileNetV2's pre_logits): EfficientNet-Lite0's top codes;
# both backbones' joined as a fit joins them; MobileNetV2's features.13 pooled; the square root of
# MobileNetV2's own ImageNet class probabilities (what ImageNet's 1,000 classes make of the image).
OTHER_CODES = {"knn1-eff": "efficientnet_lite0", "knn1-both": "both", "knn1-f13": "features.13", "knn1-imagenet": "imagenet"}
# Fusions: each part's score as its percentile among the training images' out-of-fold scores; the
# image is as novel as its most novel part (novel if either part says so), calibrated the same way.
VIM_SHARES = (0.9, 0.99)
FUSIONS = {"knn1+msp": ("knn1", "msp"), "knn1+energy": ("knn1", "energy"), "ncm+msp": ("ncm", "msp"), "knn1+ncm+msp": ("knn1", "ncm", "msp"),
           "knn1-both+msp": ("knn1-both", "msp"), "knn1-imagenet+msp": ("knn1-imagenet", "msp"),
           "mean:knn1+msp": ("knn1", "msp"), "fisher:knn1+msp": ("knn1", "msp"), "tail:knn1+msp": ("knn1", "msp")}
# Fusion rules other than the default maximum of percentiles: "mean" of the percentiles; "fisher",
# the sum of -log(share of training scores at or above), Fisher's combination of p-values; "tail",
# the confidence's percentile unless kNN is beyond every training image's out-of-fold score.


def load(name):
    """A known set's images at the input size a fit chooses for them (288 px for the photos)."""
    locate, input_size, train_per_class, test_per_class = SETS[name]
    _, X, y, X_test, y_test = dev_set(locate, train_per_class, test_per_class)
    chosen = input_size_for(TransferClassifier("mobilenet_v2", input_size=input_size).get_params(), as_sources(X))
    return X, y, X_test, y_test, chosen


def codes_of(paths, input_size, kind="pre_logits"):
    """MobileNetV2's codes of the images (or, for OTHER_CODES, the other codes named there)."""
    if kind == "both":
        return np.hstack([_power_normalised(codes_of(paths, input_size, k)) for k in ("pre_logits", "efficientnet_lite0")])
    if kind == "imagenet":
        classifier = get_backbone("mobilenet_v2").build().classifier[-1]
        logits = codes_of(paths, input_size).codes @ classifier.weight.detach().numpy().T + classifier.bias.detach().numpy()
        return np.sqrt(softmax(logits))
    backbone, tap = ("efficientnet_lite0", None) if kind == "efficientnet_lite0" else ("mobilenet_v2", kind)
    codes = TransferClassifier(backbone, tap=tap, input_size=input_size).extract(paths)
    assert not codes.failures
    return codes if kind == "pre_logits" else codes.codes


def _power_normalised(codes):
    codes = getattr(codes, "codes", codes)
    codes = np.sign(codes) * np.sqrt(np.abs(codes))
    return codes / np.linalg.norm(codes, axis=1, keepdims=True)


def out_of_fold_logits(codes, labels, C, groups):
    logits = np.empty((len(labels), labels.max() + 1))
    for train, held in stratified_folds(labels, 5, groups=groups):
        head, _ = fit_linear_head(codes[train], labels[train], Cs=(C,))
        logits[held] = head.decision_function(codes[held])
    return logits


def pair_images(known, novel, held_out_classes, data):
    """(label, X, y, X_test, y_test, X_novel, input size) of one pair."""
    X, y, X_test, y_test, input_size = data[known]
    if novel is None:  # near: the last classes are novel
        classes = np.unique(y)
        trained = classes[: len(classes) - held_out_classes]
        X_novel = [p for p, label in zip(X_test, y_test) if label not in trained]
        keep, keep_test = np.isin(y, trained), np.isin(y_test, trained)
        X, y = [p for p, k in zip(X, keep) if k], y[keep]
        X_test, y_test = [p for p, k in zip(X_test, keep_test) if k], y_test[keep_test]
        label = f"{known}: {len(trained)} classes trained, {held_out_classes} novel"
    else:
        X_novel = data[novel][2]
        X_novel = [X_novel[i] for i in np.random.default_rng(0).permutation(len(X_novel))[:NOVEL_CAP]]
        label = f"{known} vs {novel}"
    return label, X, y, X_test, y_test, X_novel, input_size


_MODELS: dict = {}  # (known set, classes held out, strategy): the fitted model, shared by its pairs


def model_row(known, novel, held_out_classes, data, strategy="linear") -> dict:
    """The shipped default end to end, and the same model's maximum softmax probability beside it
    (the baseline): a TransferClassifier's own novelty_score and novelty_threshold_ (kNN + MSP, calibrated in fit: out of fold for a linear head, on early
    stopping's held-out images for a fine-tuned network, whose own penultimate codes it scores)."""
    label, X, y, X_test, y_test, X_novel, input_size = pair_images(known, novel, held_out_classes, data)
    key = (known, held_out_classes, strategy)
    if key not in _MODELS:
        _MODELS[key] = TransferClassifier("mobilenet_v2", strategy=strategy, input_size=input_size).fit(X, y)
    model = _MODELS[key]
    predicted, novel_predicted = model.predicted(X_test), model.predicted(X_novel)
    truth = np.searchsorted(model.classes_, y_test)
    name = "model (knn+msp)" if strategy == "linear" else f"{strategy} model (knn+msp)"
    default = _row(label, novel is None, name, None, predicted.novelty, novel_predicted.novelty, predicted.scores, truth, 0.0,
                   threshold=model.novelty_threshold_)
    # The same model's own confidence, the baseline the default is to beat (threshold: the default's share of known images kept).
    msp = [-softmax(p.scores).max(axis=1) for p in (predicted, novel_predicted)]
    baseline = _row(label, novel is None, name.replace("knn+msp", "its msp"), None, *msp, predicted.scores, truth, 0.0,
                    threshold=np.quantile(msp[0], 1 - default["rejected"]))
    return [default, baseline]


def scoring_overhead(data, name="flowers", repeats=3, model=None) -> None:
    """Seconds of predict on a known set's test images from the images (no code cache), with the
    detector and without it, in the same run: of a linear model fitted here, or of ``model``."""
    X, y, X_test, _, input_size = data[name]
    if model is None:
        model = TransferClassifier("mobilenet_v2", strategy="linear", input_size=input_size, cache=False).fit(X, y)
    model.set_params(cache=False)
    detector = model.fitted_.novelty
    timings = {"with": [], "without": []}
    for _ in range(repeats):
        for kind in ("with", "without"):
            model.fitted_.novelty = detector if kind == "with" else None
            tick = time.perf_counter()
            model.predicted(X_test)
            timings[kind].append(time.perf_counter() - tick)
    model.fitted_.novelty = detector
    with_, without = np.median(timings["with"]), np.median(timings["without"])
    print(f"\npredict on {len(X_test)} {name} test images with a {model.fitted_.strategy} model (median of {repeats}, no code cache): "
          f"with the detector {with_:.2f} s, without {without:.2f} s: {(with_ / without - 1):+.1%}", flush=True)
    if model.fitted_.network is None:
        codes, scores = model.transform(X_test), model.decision_function(X_test)
        tick = time.perf_counter()
        for _ in range(repeats):
            detector.score(codes, scores)
        alone = (time.perf_counter() - tick) / repeats
        print(f"the scoring alone {alone * 1000:.1f} ms ({alone / without:.2%} of predict)", flush=True)


def run_pair(known, novel, held_out_classes, data, methods) -> list[dict]:
    label, X, y, X_test, y_test, X_novel, input_size = pair_images(known, novel, held_out_classes, data)
    classes, y_index = np.unique(y, return_inverse=True)
    truth = np.searchsorted(classes, y_test)
    train = codes_of(X, input_size)
    test, other = codes_of(X_test, input_size).codes, codes_of(X_novel, input_size).codes
    groups = near_duplicate_groups(train.content_hashes, train.phashes)
    head, report = fit_linear_head(train.codes, y_index, groups=groups)
    oof_logits = out_of_fold_logits(train.codes, y_index, report.C, groups)
    test_logits, other_logits = head.decision_function(test), head.decision_function(other)
    rows, parts = [], {}
    for variant in methods:
        method, k, by_fold = VARIANTS[variant]
        tick = time.perf_counter()
        view = (lambda c: (c - head.mean) / head.scale) if variant in STANDARDISED else (lambda c: c)
        if variant in OTHER_CODES:
            fit_codes, test_codes, other_codes = (codes_of(images, input_size, OTHER_CODES[variant]) for images in (X, X_test, X_novel))
        else:
            fit_codes, test_codes, other_codes = view(train.codes), view(test), view(other)
        detector = fit_detector(fit_codes, y_index, method, k=k)
        oof = out_of_fold_scores(fit_codes, y_index, method, k=k, groups=groups, oof_logits=oof_logits, knn_by_fold=by_fold)
        parts[variant] = (oof, detector.score(test_codes, test_logits), detector.score(other_codes, other_logits))
        rows.append(_row(label, novel is None, variant, *parts[variant], test_logits, truth, time.perf_counter() - tick))
    for share in VIM_SHARES:
        score = vim_parts(train.codes, head, share)
        oof = np.empty(len(y_index))
        for fit_rows, held in stratified_folds(y_index, 5, groups=groups):
            fold_head, _ = fit_linear_head(train.codes[fit_rows], y_index[fit_rows], Cs=(report.C,))
            oof[held] = vim_parts(train.codes[fit_rows], fold_head, share)(train.codes[held], fold_head.decision_function(train.codes[held]))
        rows.append(_row(label, novel is None, f"vim{share:g}", oof, score(test, test_logits), score(other, other_logits), test_logits, truth, 0.0))
    for fusion, members in FUSIONS.items():
        if all(m in parts for m in members):
            rule = fusion.split(":")[0] if ":" in fusion else "max"
            fused = [fuse(rule, [parts[m][0] for m in members], [parts[m][i] for m in members]) for i in range(3)]
            rows.append(_row(label, novel is None, fusion, *fused, test_logits, truth, 0.0))
    return rows


def fuse(rule, references, scores):
    """One novelty score from several parts' scores, each read against its training images'
    out-of-fold ``references``; ``max`` of percentiles is the shipped default's rule."""
    if rule == "max":
        return np.max([percentile(r, s) for r, s in zip(references, scores)], axis=0)
    if rule == "mean":
        return np.mean([percentile(r, s) for r, s in zip(references, scores)], axis=0)
    if rule == "fisher":  # -log of each part's p-value (share of training scores at or above it), summed
        def surprise(reference, score):
            ordered = np.sort(reference)
            above = len(ordered) - np.searchsorted(ordered, score, side="left")
            return -np.log((above + 1) / (len(ordered) + 1)) + np.maximum(score - ordered[-1], 0) / max(ordered[-1] - ordered[0], 1e-12)
        return np.sum([surprise(r, s) for r, s in zip(references, scores)], axis=0)
    if rule == "tail":  # (kNN, confidence): kNN speaks only beyond every training image
        (knn_reference, confidence_reference), (knn, confidence) = references, scores
        return np.where(knn > knn_reference.max(), 1 + percentile(knn_reference, knn), percentile(confidence_reference, confidence))
    raise ValueError(rule)


def _row(label, near, variant, oof, known_scores, novel_scores, test_logits, truth, seconds, threshold=None) -> dict:
    threshold = np.quantile(oof, KNOWN_SHARE) if threshold is None else threshold
    auroc = roc_auc_score(np.r_[np.zeros(len(known_scores)), np.ones(len(novel_scores))], np.r_[known_scores, novel_scores])
    accepted = known_scores <= threshold
    r = {
        "pair": label, "near": near, "method": variant, "auroc": auroc, "rejected": 1 - accepted.mean(), "caught": (novel_scores > threshold).mean(),
        "accuracy": (test_logits.argmax(1) == truth).mean(), "accepted_accuracy": (test_logits[accepted].argmax(1) == truth[accepted]).mean(),
    }
    print(f"  {label:42s} {variant:22s} AUROC {auroc:.4f}  known rejected {r['rejected']:6.1%}  novel caught {r['caught']:6.1%}  "
          f"accuracy {r['accuracy']:.1%} -> {r['accepted_accuracy']:.1%} on accepted  ({seconds:.2f} s)", flush=True)
    return r


def vim_parts(train_codes, head, share):
    """ViM (Wang et al. 2022): the code's norm outside the training codes' principal subspace (the
    components explaining ``share`` of the variance, about the head's origin), scaled so that on the
    training images it matches the mean largest logit; its score is that virtual logit's softmax share."""
    origin = -np.linalg.pinv(head.coef / head.scale) @ head.intercept  # the point where every logit is 0
    centred = train_codes - origin
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    d = int(np.searchsorted(np.cumsum(s**2) / np.sum(s**2), share) + 1)
    basis = vt[:d]
    residual = lambda c: np.linalg.norm((c - origin) - ((c - origin) @ basis.T) @ basis, axis=1)  # noqa: E731
    alpha = head.decision_function(train_codes).max(axis=1).mean() / max(residual(train_codes).mean(), 1e-12)
    return lambda codes, logits: np.logaddexp.reduce(np.c_[logits, alpha * residual(codes)], axis=1) - np.logaddexp.reduce(logits, axis=1)


ORACLE_SCORES = ("msp", "margin", "entropy", "max logit", "energy", "logit margin", "knn1", "ncm", "norm")


def oracle_scores(head, train_codes, labels, codes) -> np.ndarray:
    """The nine scores (higher: more novel) of ``codes``, one column each (ORACLE_SCORES)."""
    logits = head.decision_function(codes)
    p, ordered = softmax(logits), np.sort(logits, axis=1)
    top = np.sort(p, axis=1)
    unit = lambda c: c / np.linalg.norm(c, axis=1, keepdims=True)  # noqa: E731
    means = unit(np.stack([unit(train_codes[labels == c]).mean(0) for c in np.unique(labels)]))
    return np.column_stack([
        -top[:, -1], top[:, -2] - top[:, -1], -(p * np.log(p + 1e-12)).sum(1), -ordered[:, -1], -np.logaddexp.reduce(logits, axis=1),
        ordered[:, -2] - ordered[:, -1], 1 - (unit(codes) @ unit(train_codes).T).max(1), 1 - (unit(codes) @ means.T).max(1),
        -np.linalg.norm(codes, axis=1),
    ])


def oracle_row(known, novel, held_out_classes, data, kind) -> None:
    """Each score's AUROC and the oracle fusion's (a logistic regression fitted on the test labels, 5-fold)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    label, X, y, X_test, _, X_novel, input_size = pair_images(known, novel, held_out_classes, data)
    labels = np.unique(y, return_inverse=True)[1]
    train, test, other = (getattr(c, "codes", c) for c in (codes_of(images, input_size, kind) for images in (X, X_test, X_novel)))
    head, _ = fit_linear_head(train, labels)
    scores = np.r_[oracle_scores(head, train, labels, test), oracle_scores(head, train, labels, other)]
    truth = np.r_[np.zeros(len(test)), np.ones(len(other))]
    fused = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)), scores, truth, cv=5, method="decision_function")
    singles = "  ".join(f"{name} {roc_auc_score(truth, column):.3f}" for name, column in zip(ORACLE_SCORES, scores.T))
    print(f"  {label:42s} {kind:10s} oracle fusion {roc_auc_score(truth, fused):.3f}   {singles}", flush=True)


TAUGHT = [("hymenoptera", "flowers"), ("flowers", "hymenoptera"), ("mri", "hymenoptera"), ("digits", "flowers")]  # (known set, the examples' set)


def taught_rows(data, n_examples: int, strategy: str = "linear", only=None) -> None:
    """Each known set's model (``strategy``) untaught and taught by ``n_examples`` images of one novel set."""
    for known, shown_set in TAUGHT:
        if only and known not in only:
            continue
        X, y, X_test, _, input_size = data[known]
        pool = data[shown_set][2]
        order = np.random.default_rng(0).permutation(len(pool))
        shown, rest = [pool[i] for i in order[:n_examples]], [pool[i] for i in order[n_examples : n_examples + NOVEL_CAP]]
        novel = {f"{shown_set} (other images)": rest} | {name: data[name][2][:NOVEL_CAP] for name in SETS if name not in (known, shown_set)}
        for examples in ((), shown):
            model = TransferClassifier("mobilenet_v2", strategy=strategy, input_size=input_size).fit(X, y, none_of_these=examples)
            known_scores = model.novelty_score(X_test)
            cells = []
            for name, images in novel.items():
                scores = model.novelty_score(images)
                auroc = roc_auc_score(np.r_[np.zeros(len(known_scores)), np.ones(len(scores))], np.r_[known_scores, scores])
                cells.append(f"{name} {auroc:.3f} ({(scores > model.novelty_threshold_).mean():.0%} caught)")
            print(f"  {known:12s} {strategy:12s} {'taught by ' + str(len(examples)) + ' ' + shown_set if examples else 'untaught':26s} known rejected "
                  f"{(known_scores > model.novelty_threshold_).mean():5.1%}   " + "   ".join(cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*", help="pairs as known/novel (or known/near)")
    parser.add_argument("--methods", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--model-only", action="store_true", help="only the shipped default, end to end (a TransferClassifier), and its predict overhead")
    parser.add_argument("--strategy", default="linear", help="the end-to-end model's strategy (finetune_top: a fine-tuned network's detector; auto: what a fit chooses)")
    parser.add_argument("--examples", type=int, default=0, metavar="N", help="models (--strategy; linear by default) untaught and taught by N images of a novel set")
    parser.add_argument("--oracle", action="store_true", help="each score and an upper bound for fusing them (fitted on the test labels), on two kinds of codes")
    args = parser.parse_args()
    print(machine(), flush=True)
    data = {name: load(name) for name in SETS}
    if args.examples:
        return taught_rows(data, args.examples, args.strategy, args.only)
    rows = []
    for known, novel, held in PAIRS:
        if args.only and f"{known}/{novel or 'near'}" not in args.only:
            continue
        if args.oracle:
            for kind in ("pre_logits", "both"):
                oracle_row(known, novel, held, data, kind)
            continue
        rows += [] if args.model_only else run_pair(known, novel, held, data, args.methods)
        rows += model_row(known, novel, held, data, args.strategy)
    if args.oracle:
        return
    print("\n| method | far AUROC (min, mean) | near AUROC (each) | known rejected (max) | novel caught far (min) |\n|---|---|---|---|---|")
    for variant in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == variant]
        far, near = [r for r in mine if not r["near"]], [r for r in mine if r["near"]]
        print(
            f"| {variant} | " + (f"{min(r['auroc'] for r in far):.4f}, {np.mean([r['auroc'] for r in far]):.4f}" if far else "-") + " | "
            + ", ".join(f"{r['auroc']:.4f}" for r in near)
            + f" | {max(r['rejected'] for r in mine):.1%} | " + (f"{min(r['caught'] for r in far):.1%}" if far else "-") + " |"
        )
    fitted = [(key, model) for key, model in _MODELS.items() if key[2] != "linear"]
    if fitted:  # a fine-tuned model: on its own known set's test images
        (known, _, _), model = fitted[0]
        scoring_overhead(data, known, model=model)
    else:
        scoring_overhead(data)


if __name__ == "__main__":
    main()
