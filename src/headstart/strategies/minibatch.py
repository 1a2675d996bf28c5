"""A linear head for thousands of classes and millions of codes: multinomial logistic regression
trained by mini-batches in PyTorch.

scikit-learn's solver (linear.py; the choice for small problems) holds every code, probability and
gradient at once and cross-validates four values of C with five folds: at 500 classes and 10,700
codes it took 115 s here, growing faster than the data. This one streams the codes in batches (an
array or a memory-mapped file), runs on the CPU (bf16 matrix products where native) or CUDA, on
one process or several (DistributedDataParallel, each rank taking its share of every batch), and
chooses C on one stratified held-out split:

1. standardise with every code's mean and spread (labels unused, as the scikit-learn head does),
   computed in one chunked pass;
2. for each C, train from zero (as scikit-learn starts) on the codes outside the held-out split
   (at most SEARCH_CODES of them, every class kept up to one cap) and score the held-out split.
   (Warm-starting each C from the last, with Adam's rate restarting, scored 11 points lower at the
   same step count.) The nearest-class-mean classifier (w_k = mu_k, b_k = -|mu_k|^2 / 2 on
   standardised codes) is scored on the same split, as a check: a head that loses to class means
   is under-regularised or ignores the tail, and fit_linear_head warns. (Letting class means win
   the search chose them on 500 classes by 0.2 points of a noisy 1,041-code split: 2.6 points
   under the logistic head on the test set.)
3. train the chosen C on every code for the step budget, the rate decayed to zero on a cosine.
   (Early stopping on the held-out score stopped mid-descent and cost 4.5 points against
   scikit-learn on 500 classes; trained to the end, the same C gave the same accuracy.)

The objective is scikit-learn's, divided by C * n: the mean (class-weighted) log loss plus
|W|^2 / (2 C n). One value of C therefore means the same regularisation to both solvers (10,500
codes of 500 classes at C=0.01: Adam ended 0.1% above scikit-learn's optimum, test accuracy 41.70%
against 41.68%), and the result is the same LinearHead arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from .. import distributed
from ..data.sampling import inverse_frequency_weights
from ..data.subsample import capped_sample, held_out_split
from ..hardware import autocast, resolve_bf16, resolve_device

# Codes per optimisation step: the set's size over STEPS_PER_EPOCH, within [MIN_BATCH, BATCH]. Up
# to 4,096 keeps every core busy in one matrix product; at least 1,024 keeps the gradient's noise
# low enough for Adam to reach scikit-learn's optimum within its step budget (10,500 codes of 500
# classes at C=0.01: objective 0.1% above scikit-learn's with 1,024 a batch, 4.5% above with 256,
# and test accuracy 41.70% against its 41.68%, against 39.86%).
BATCH = 4096
MIN_BATCH = 1024
STEPS_PER_EPOCH = 256
# Rows per chunk when streaming codes for statistics and scoring.
CHUNK = 65536
HELD_OUT = 0.1  # share of each class's codes held out to choose C
SEARCH_CODES = 100_000  # codes each C is tried on (all of them outside the held-out split, below this)
# Adam steps of the final fit (small sets take more epochs to make them), decayed on a cosine; a set
# large enough for full batches stops after MAX_EPOCHS passes instead. Each C of the search gets
# SEARCH_STEPS on its (capped) sample. Together they bound 1,000,000 codes of 5,000 classes to about
# 9 million rows seen, some 800 s of bf16 matrix products on 2 cores.
STEPS = 2000
SEARCH_STEPS = 1000
MAX_EPOCHS = 5
# A step is shared out between processes only where each one's share of its products comes to at
# least this many multiply-adds; below, the gradient's all-reduce costs more than the share saves,
# and every process takes the whole batch itself, alike. (Two gloo processes on 2 cores: an
# all-reduce of 64 to 128,000 numbers took 1.6-2.4 ms; a bf16 step on 40 codes of 16 numbers and 4
# classes 0.28 ms, on 512 of 1,280 and 10 classes 17.8 ms. A forced mini-batch head on 40 codes ran
# 25 s on two processes, 4 s on one.) Where the solver is chosen by default, steps are shared out
# on a few processes: 1,024 codes or more a step, so half of 1,024 x 1,280 numbers x 2 classes is
# 1.3 million multiply-adds; on many processes with short codes and few classes, they may not be.
MIN_SHARED_STEP = 1_000_000
LEARNING_RATE = 1e-2  # Adam's at most (3e-3 trained too slowly: 8 points lower on 16,000 codes of 100 classes)...
STEP_SHARE = 0.1  # ...and at most this share of the weights' expected size (see _learning_rate)


@dataclass
class MinibatchFit:
    """What the mini-batch solver chose and saw."""

    C: float
    held_out: int  # codes scored to choose C
    score: float  # held-out score of the chosen C (balanced accuracy when classes are weighted)
    nearest_mean_score: float  # the same score of the nearest-class-mean classifier (a check)
    epochs: int  # of the final fit
    searched: dict[float, float]  # C -> held-out score


def fit_minibatch(
    codes: np.ndarray,
    y: np.ndarray,
    *,
    Cs: tuple[float, ...],
    balanced: bool,
    random_state: int | None = 0,
    device: str = "auto",
    precision: str = "auto",
    progress: bool = False,
):
    """Fit on ``codes`` (n, d), an array or memory map, for integer labels ``y`` in 0..k-1.
    Returns (mean, scale, coef, intercept) as float64 arrays and a :class:`MinibatchFit`."""
    rng = np.random.default_rng(random_state or 0)
    torch_device = resolve_device(device)
    y = np.asarray(y, dtype=np.int64)
    n_classes = int(y.max()) + 1
    everything = np.arange(len(y))
    mean, scale = code_statistics(codes, everything)
    data = _Data(codes, y, mean, scale, torch_device, resolve_bf16(precision, torch_device))
    C, searched, means_score, held = _choose_C(data, tuple(sorted(Cs)), balanced, n_classes, rng, progress)
    model = _Model.zeros(data, n_classes)
    epochs = _train(model, data, everything, balanced, C, STEPS, rng, progress, "linear head")
    coef, intercept = model.arrays()
    report = MinibatchFit(C, held, searched.get(C, float("nan")), means_score, epochs, searched)
    return (mean, scale, coef, intercept), report


def _choose_C(data, Cs, balanced, n_classes, rng, progress) -> tuple[float, dict, float, int]:
    """(C, held-out score per C, class means' score, held-out codes): the best C on a held-out
    split (ties go to stronger regularisation), and the nearest-class-mean classifier's score."""
    train, held = held_out_split(data.y, HELD_OUT, rng)
    if len(Cs) == 1 or not len(held):  # nothing to choose, or nothing to choose on
        return (Cs[0] if len(Cs) == 1 else 1.0), {}, float("nan"), 0  # 1.0: scikit-learn's default
    sample = capped_sample(data.y, train, SEARCH_CODES, rng)
    means_score = data.score(_Model.nearest_means(data, sample, n_classes), held, balanced)
    searched = {}
    for C in Cs:
        model = _Model.zeros(data, n_classes)
        _train(model, data, sample, balanced, C, SEARCH_STEPS, rng, progress, f"choosing C: {C:g}")
        searched[C] = data.score(model, held, balanced)
    best = max(Cs, key=lambda c: (searched[c], -c))
    return best, searched, means_score, len(held)


def code_statistics(codes: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation per code of ``codes[rows]``, one chunk at a time: scikit-learn's
    StandardScaler, as the scikit-learn head standardises (a constant code gets scale 1)."""
    scaler = StandardScaler()
    for start in range(0, len(rows), CHUNK):
        scaler.partial_fit(np.asarray(codes[rows[start : start + CHUNK]]))
    return scaler.mean_, scaler.scale_


class _Data:
    """The codes, standardised batch by batch on the device (never all at once)."""

    def __init__(self, codes, y, mean, scale, device, bf16):
        self.codes, self.y, self.device, self.bf16 = codes, y, device, bf16
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=device)
        self.scale = torch.as_tensor(scale, dtype=torch.float32, device=device)

    def batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        rows = np.sort(rows)  # in file order: memory-mapped codes read sequentially
        x = torch.as_tensor(np.asarray(self.codes[rows], dtype=np.float32), device=self.device)
        return (x - self.mean) / self.scale, torch.as_tensor(self.y[rows], device=self.device)

    @torch.no_grad()
    def predictions(self, model: "_Model", rows: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(rows), CHUNK):
            x, _ = self.batch(rows[start : start + CHUNK])
            out.append(model.logits(x, self.bf16).argmax(1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def score(self, model: "_Model", rows: np.ndarray, balanced: bool) -> float:
        """Held-out accuracy, or balanced accuracy (mean recall over the classes present; by counts,
        not scikit-learn's balanced_accuracy_score, whose confusion matrix is K x K)."""
        if len(rows) == 0:
            return float("nan")
        predicted, truth = self.predictions(model, rows), self.y[np.sort(rows)]
        correct = predicted == truth
        if not balanced:
            return float(correct.mean())
        hits = np.bincount(truth, weights=correct, minlength=int(self.y.max()) + 1)
        totals = np.bincount(truth, minlength=len(hits))
        present = totals > 0
        return float((hits[present] / totals[present]).mean())


class _Model(torch.nn.Module):
    """Logits W x + b on standardised codes."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.weight = torch.nn.Parameter(weight)
        self.bias = torch.nn.Parameter(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.weight.T).float() + self.bias

    def logits(self, x: torch.Tensor, bf16: bool) -> torch.Tensor:
        with autocast(x.device, bf16):
            return self(x)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return self.weight.detach().double().cpu().numpy(), self.bias.detach().double().cpu().numpy()

    @classmethod
    def zeros(cls, data: _Data, n_classes: int) -> "_Model":
        """scikit-learn's start. (Starting from class means was slower to converge: their logits
        are far larger than a regularised head's, and Adam took thousands of steps to shrink them.)"""
        return cls(torch.zeros(n_classes, data.codes.shape[1], device=data.device), torch.zeros(n_classes, device=data.device))

    @classmethod
    @torch.no_grad()
    def nearest_means(cls, data: _Data, rows: np.ndarray, n_classes: int) -> "_Model":
        """The nearest-class-mean classifier as logits, at the temperature that fits a sample best."""
        d = data.codes.shape[1]
        sums = torch.zeros(n_classes, d, dtype=torch.float64, device=data.device)
        counts = torch.zeros(n_classes, dtype=torch.float64, device=data.device)
        for start in range(0, len(rows), CHUNK):
            x, labels = data.batch(rows[start : start + CHUNK])
            sums.index_add_(0, labels, x.double())
            counts.index_add_(0, labels, torch.ones_like(labels, dtype=torch.float64))
        means = (sums / counts.clamp_min(1)[:, None]).float()
        weight, bias = means, -0.5 * (means * means).sum(1)
        bias[counts == 0] = -1e4  # a class with no training code is never predicted
        x, labels = data.batch(rows[: min(len(rows), BATCH)])
        base = x @ weight.T + bias
        loss = lambda t: float(torch.nn.functional.cross_entropy(base * t, labels))  # noqa: E731
        temperature = min((10.0**e for e in np.arange(-4, 1.01, 0.25)), key=loss)
        return cls(weight * temperature, bias * temperature)


@torch.no_grad()
def _learning_rate(data, rows, class_weights, C, n_classes, rng) -> float:
    """Adam moves every weight by about its learning rate per step, whatever the gradient's size, so
    the rate must stay well below the size of the weights sought. Strongly regularised (small C),
    those are W = -C n grad(0), the loss's gradient at zero times C n (where the objective's gradient
    vanishes, to first order); weaker regularisation only shrinks that estimate's relevance, so the
    rate is capped at LEARNING_RATE. (At C=0.001 on 3,000 codes of 100 classes the weights came to
    0.006 on average: a rate of 0.01 kept them oscillating, 14 points under scikit-learn's head.)"""
    x, labels = data.batch(rng.choice(rows, min(len(rows), CHUNK), replace=False))
    residual = torch.full((len(labels), n_classes), 1.0 / n_classes, device=x.device)  # softmax(0) - one-hot
    residual[torch.arange(len(labels)), labels] -= 1.0
    if class_weights is not None:
        residual *= class_weights[labels][:, None]
    expected = C * len(rows) * float((residual.T @ x).abs().mean()) / len(labels)
    return min(LEARNING_RATE, STEP_SHARE * expected)


def _train(model, data, rows, balanced, C, steps, rng, progress, desc) -> int:
    """Adam on the mean weighted log loss + |W|^2 / (2 C n) over ``rows``, for about ``steps``
    steps (at most MAX_EPOCHS passes), the rate decayed to zero on a cosine. Returns the epochs run.
    (No stop on a stalling loss: Adam's early overshoots stalled it for an epoch while the rate was
    still high, and stopping there cost 7 points on 10,500 codes of 500 classes.)"""
    penalty = 1.0 / (2.0 * C * len(rows))
    batch = int(np.clip(len(rows) // STEPS_PER_EPOCH, MIN_BATCH, BATCH))
    per_epoch = math.ceil(len(rows) / batch)
    epochs = math.ceil(steps / per_epoch)
    if batch == BATCH:  # a large set: its passes, not the step count, bound the time
        epochs = min(epochs, MAX_EPOCHS)
    n_classes = model.bias.shape[0]
    class_weights = torch.as_tensor(inverse_frequency_weights(data.y[rows], n_classes), dtype=torch.float32, device=data.device) if balanced else None
    optimizer = torch.optim.Adam([model.weight, model.bias], lr=_learning_rate(data, rows, class_weights, C, n_classes, rng))
    total = per_epoch * epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
    world = distributed.current()
    if min(batch, len(rows)) // world.size * data.codes.shape[1] * n_classes < MIN_SHARED_STEP:
        world = distributed.World()  # too little to share: each process takes every batch whole
    net = world.wrap(model, data.device)  # several processes: each takes its share of every batch
    with tqdm(total=total, disable=not progress, desc=desc, leave=False, unit="step") as bar:
        for _ in range(epochs):
            order = rng.permutation(rows)  # the same on every rank: one seed
            for start in range(0, len(order), batch):
                step_rows = order[start : start + batch]
                x, labels = data.batch(step_rows[world.rank :: world.size])
                with autocast(x.device, data.bf16):
                    losses = torch.nn.functional.cross_entropy(net(x), labels, reduction="none")
                if class_weights is not None:
                    losses = losses * class_weights[labels]
                # DDP averages the ranks' gradients: each rank's share of the batch's mean, times
                # the number of ranks, averages to the whole batch's mean.
                loss = losses.sum() * (world.size / len(step_rows)) + penalty * (model.weight * model.weight).sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                bar.update()
    return epochs
