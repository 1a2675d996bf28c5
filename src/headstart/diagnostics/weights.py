"""What the weights look like: per-layer statistics of pretrained, randomly initialised and
trained weights, histograms, drift after fine-tuning, the first convolution's filters, and one
line of interpretation per notable layer."""

from __future__ import annotations

import copy

import numpy as np
import torch
from scipy import stats
from torch import nn

from ..weight_init import first_filters

NORMAL_P = 0.01  # a layer whose normality test gives p >= this is "close to normal"
NORMALITY_SAMPLE = 2000  # values per layer the test sees (with millions, any deviation is "significant")
HISTOGRAM_BINS = 40
UNIFORM_KURTOSIS = -1.2  # excess kurtosis of a uniform distribution: PyTorch's default initialisation
HEAVY_TAILED = 3.0  # excess kurtosis past which a layer is called heavy-tailed (a Laplace distribution has 3)
INIT_SCHEMES_SHOWN = ("pretrained", "uniform_fan_in", "glorot_uniform", "he_normal", "orthogonal")  # first-layer filters in the report


def weight_tensors(module: nn.Module) -> dict[str, np.ndarray]:
    """Every convolution and linear weight (parameters of 2 or more dimensions), in forward order."""
    return {name: p.detach().float().cpu().numpy() for name, p in module.named_parameters() if p.ndim >= 2}


def randomly_initialised(module: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``module`` with every layer reset to PyTorch's default initialisation (uniform
    within +-1/sqrt(fan_in) for convolutions and linear layers)."""
    fresh = copy.deepcopy(module)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for layer in fresh.modules():
            if hasattr(layer, "reset_parameters") and layer is not fresh:
                layer.reset_parameters()
    return fresh


def layer_stats(values: np.ndarray, seed: int = 0) -> dict:
    flat = values.ravel().astype(np.float64)
    sample = flat if flat.size <= NORMALITY_SAMPLE else np.random.default_rng(seed).choice(flat, NORMALITY_SAMPLE, replace=False)
    p = float(stats.normaltest(sample).pvalue) if sample.size >= 20 and sample.std() > 0 else float("nan")
    return {
        "mean": float(flat.mean()),
        "std": float(flat.std()),
        "min": float(flat.min()),
        "max": float(flat.max()),
        "skewness": float(stats.skew(flat)) if flat.std() > 0 else 0.0,
        "excess_kurtosis": float(stats.kurtosis(flat)) if flat.std() > 0 else 0.0,
        "normal_p": p,
        "normal": bool(p >= NORMAL_P) if p == p else False,
    }


def weight_report(pretrained: nn.Module, trained: nn.Module | None = None, head: np.ndarray | None = None, *, histogram_layers: int = 6) -> dict:
    """Statistics of every layer of ``pretrained`` next to a random initialisation of the same
    architecture and, when given, the ``trained`` (fine-tuned) network with the same layer names;
    ``head`` is the new classifier's weight matrix."""
    before = weight_tensors(pretrained)
    random = weight_tensors(randomly_initialised(pretrained))
    after = weight_tensors(trained) if trained is not None else {}
    layers = []
    for name, weights in before.items():
        row = {"layer": name, "shape": list(weights.shape), "n": int(weights.size), "pretrained": layer_stats(weights), "random": layer_stats(random[name])}
        if name in after:
            row["trained"] = layer_stats(after[name])
            row["drift"] = float(np.linalg.norm(after[name] - weights) / max(np.linalg.norm(weights), 1e-12))
        layers.append(row)
    if head is not None:
        layers.append({"layer": "head (new)", "shape": list(head.shape), "n": int(head.size), "trained": layer_stats(head)})
    names = list(before)
    chosen = sorted({names[round(i * (len(names) - 1) / max(histogram_layers - 2, 1))] for i in range(histogram_layers - 1)}, key=names.index)
    histograms = [_histogram(name, before[name], random[name], after.get(name)) for name in chosen]
    if head is not None:
        histograms.append(_histogram("head (new)", None, None, head))
    first = names[0]
    return {
        "layers": layers,
        "histograms": histograms,
        "first_conv": {"layer": first, "filters": np.round(after.get(first, before[first]), 5).tolist()} if before[first].ndim == 4 else None,
        "init_filters": first_filters(pretrained, INIT_SCHEMES_SHOWN),
        "notes": interpret(layers),
    }


def _histogram(name: str, pretrained, random, trained) -> dict:
    present = [v.ravel() for v in (pretrained, random, trained) if v is not None]
    low, high = np.percentile(np.concatenate(present), [0.5, 99.5])
    edges = np.linspace(low, high, HISTOGRAM_BINS + 1) if high > low else np.linspace(low - 1, high + 1, HISTOGRAM_BINS + 1)
    counts = lambda v: np.histogram(np.clip(v, edges[0], edges[-1]), edges)[0].tolist() if v is not None else None  # noqa: E731
    return {"layer": name, "edges": edges.tolist(), "pretrained": counts(pretrained), "random": counts(random), "trained": counts(trained)}


def interpret(layers: list[dict]) -> list[str]:
    """One line per notable layer: the first convolution, how many layers look normal, the most
    heavy-tailed one, the random initialisation, and (after fine-tuning) where the weights moved."""
    backbone = [row for row in layers if "pretrained" in row]
    if not backbone:
        return []
    notes = []
    first = backbone[0]
    s, r = first["pretrained"], first["random"]
    if abs(s["excess_kurtosis"] - UNIFORM_KURTOSIS) < 0.3 and abs(s["std"] - r["std"]) < 0.2 * r["std"]:
        notes.append(f"{first['layer']} (first convolution) is uniform, like a random initialisation: this backbone looks untrained.")
    else:
        shape = "non-normal" if not s["normal"] else "near normal"
        notes.append(
            f"{first['layer']} (first convolution): std {s['std']:.3f} against {r['std']:.3f} at random initialisation, excess kurtosis "
            f"{s['excess_kurtosis']:.1f}, {shape}: wide, distinct detectors (edges, colour blobs; see the filters)."
        )
    normal = [row for row in backbone if row["pretrained"]["normal"]]
    late = sum(1 for row in normal if backbone.index(row) >= len(backbone) / 2)
    notes.append(
        f"{len(normal)} of {len(backbone)} layers pass a normality test (p >= {NORMAL_P})"
        + (f", {late} of them in the second half of the network: many small, similar weights." if normal else ": learned weights are rarely Gaussian.")
    )
    heavy = max(backbone, key=lambda row: row["pretrained"]["excess_kurtosis"])
    if heavy["pretrained"]["excess_kurtosis"] > HEAVY_TAILED:
        notes.append(
            f"Most heavy-tailed: {heavy['layer']} (excess kurtosis {heavy['pretrained']['excess_kurtosis']:.1f}): a few strong connections carry most of its signal."
        )
    notes.append(
        f"Random initialisation (PyTorch's default, uniform within +-1/sqrt(fan-in)): excess kurtosis {UNIFORM_KURTOSIS} in every layer, "
        f"std from {min(row['random']['std'] for row in backbone):.3f} to {max(row['random']['std'] for row in backbone):.3f}."
    )
    drifted = [row for row in backbone if "drift" in row]
    if drifted:
        moved = [row for row in drifted if row["drift"] > 1e-6]
        most = max(drifted, key=lambda row: row["drift"])
        notes.append(
            f"Fine-tuning moved {len(moved)} of {len(drifted)} layers; most: {most['layer']} ({most['drift']:.1%} relative change)"
            + (f"; the layers before {moved[0]['layer']} stayed as pretrained (frozen)." if moved and moved[0] is not drifted[0] else ".")
        )
    return notes
