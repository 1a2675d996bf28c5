"""The report's figures, drawn with matplotlib from metrics.json's numbers and embedded as PNG
data URIs (the page must work offline, as one file)."""

from __future__ import annotations

import base64
import io
import os
import warnings
from pathlib import Path

import numpy as np

DPI = 80
THUMBNAIL = 96  # pixels, longer side


def _subplots(*grid: int, figsize: tuple[float, float], **options):
    """A figure and its axes, made without pyplot: pyplot's figures need a backend, and choosing
    one (``matplotlib.use("Agg")``) switched the caller's too, so a notebook's own plots stopped
    showing after a fit wrote its report. A bare Figure draws to PNG with Agg whatever the backend."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize)
    return figure, figure.subplots(*grid, **options)


def _data_uri(fig) -> str:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # A class named in a script the font lacks (an emoji, Chinese) is drawn as boxes, one
        # warning per character otherwise; the report's tables spell every name out in the browser.
        warnings.filterwarnings("ignore", r"Glyph \d+ .* missing from font", UserWarning)
        fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def history_plot(history: dict) -> str | None:
    records = history.get("records") if history else None
    if not records:
        return None
    epochs = [r["epoch"] for r in records]
    fig, (loss_ax, acc_ax) = _subplots(1, 2, figsize=(9, 3.2))
    for ax, key, title in ((loss_ax, "loss", "loss"), (acc_ax, "accuracy", "accuracy")):
        ax.plot(epochs, [r[f"train_{key}"] for r in records], "o-", label="train")
        val = [r[f"val_{key}"] for r in records]
        if any(v is not None for v in val):
            ax.plot(epochs, [np.nan if v is None else v for v in val], "s-", label="held out (early stopping)")
        if history.get("best_epoch"):
            ax.axvline(history["best_epoch"], color="grey", linestyle="--", label=f"kept: epoch {history['best_epoch']}")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    acc_ax.legend(loc="lower right", fontsize=8)
    return _data_uri(fig)


def learning_curve_plot(curve: dict) -> str | None:
    if not curve or not curve.get("points"):
        return None
    fig, ax = _subplots(figsize=(5, 3.2))
    m = np.array([p["per_class"] for p in curve["points"]])
    ax.errorbar(m, [p["accuracy"] for p in curve["points"]], yerr=[p["std"] for p in curve["points"]], fmt="o", capsize=3, label="linear probe (CV)")
    fit = curve.get("fit")
    if fit:
        grid = np.geomspace(m.min(), 4 * curve["images_per_class"], 60)
        ax.plot(grid, 1 - (fit["a"] * grid ** -fit["b"] + fit["c"]), "-", color="C1", label="power-law fit")
        ax.axvline(curve["images_per_class"], color="grey", linestyle="--", label="images per class now")
    ax.set_xscale("log")
    ax.set_xlabel("training images per class")
    ax.set_ylabel(curve.get("metric", "accuracy"))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    return _data_uri(fig)


def confusion_plot(errors: dict) -> str | None:
    if not errors or errors.get("confusion") is None:  # too many classes to draw
        return None
    matrix = np.array(errors["confusion"], dtype=float)
    rows = matrix.sum(1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    k = len(matrix)
    size = min(9, 2.5 + 0.35 * k)
    fig, ax = _subplots(figsize=(size, size * 0.85))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    if k <= 30:
        names = [n[:14] for n in errors["classes"]]
        ax.set_xticks(range(k), names, rotation=90, fontsize=7)
        ax.set_yticks(range(k), names, fontsize=7)
        if k <= 12:
            for i in range(k):
                for j in range(k):
                    if matrix[i, j]:
                        ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7, color="white" if share[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return _data_uri(fig)


def reliability_plot(calibration: dict) -> str | None:
    if not calibration or not calibration["bins"]:
        return None
    fig, ax = _subplots(figsize=(3.6, 3.4))
    bins = calibration["bins"]
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    confidence, accuracy = [b["confidence"] for b in bins], [b["accuracy"] for b in bins]
    # each point's area by its images: a bin of one image at 0% is a dip, not a failure of the model
    counts = np.array([b.get("count", 1) for b in bins], dtype=float)
    ax.plot(confidence, accuracy, "-", color="C0", alpha=0.4)
    ax.scatter(confidence, accuracy, s=12 + 150 * counts / counts.max(), color="C0", zorder=3, label="model (area: images)")
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"ECE {calibration['ece']:.3f}")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)  # below: points sit anywhere
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    return _data_uri(fig)


def novelty_plot(rejection: dict | None) -> str | None:
    """The known-class test images' novelty scores, with the threshold above which an image is
    flagged as none of the classes."""
    histogram = (rejection or {}).get("histogram")
    if not histogram:
        return None
    edges, counts = np.array(histogram["edges"]), np.array(histogram["counts"])
    fig, ax = _subplots(figsize=(5.5, 2.8))
    kept = edges[:-1] < rejection["threshold"]
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color=np.where(kept, "#4c72b0", "#c44e52"))
    ax.axvline(rejection["threshold"], color="black", linestyle="--", label=f"threshold {rejection['threshold']:#.3g}")
    if histogram.get("beyond"):
        ax.set_title(f"{histogram['beyond']} image(s) beyond the last bar", fontsize=9)
    ax.set_xlabel("novelty score (higher: less like the training images)")
    ax.set_ylabel("known-class test images")
    ax.legend(fontsize=8)
    return _data_uri(fig)


def weight_histograms_plot(histograms: list[dict]) -> str | None:
    if not histograms:
        return None
    columns = 3
    rows = -(-len(histograms) // columns)
    fig, axes = _subplots(rows, columns, figsize=(10, 2.6 * rows), squeeze=False)
    for ax, h in zip(axes.flat, histograms):
        edges = np.array(h["edges"])
        centres = (edges[1:] + edges[:-1]) / 2
        for key, colour in (("random", "C7"), ("pretrained", "C0"), ("trained", "C3")):
            if h.get(key) is not None:
                counts = np.array(h[key], dtype=float)
                ax.step(centres, counts / max(counts.sum(), 1), where="mid", color=colour, label=key)
        ax.set_title(h["layer"], fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(histograms):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return _data_uri(fig)


def filters_plot(first_conv: dict | None) -> str | None:
    """The first convolution's filters as small RGB images, each scaled to its own range."""
    if not first_conv:
        return None
    weights = np.array(first_conv["filters"], dtype=float)  # (out, in, kh, kw)
    if weights.ndim != 4 or weights.shape[1] not in (1, 3):
        return None
    n = min(len(weights), 64)
    columns = min(16, n)
    rows = -(-n // columns)
    fig, ax = _subplots(figsize=(columns * 0.55, rows * 0.55))
    _show_mosaic(ax, [weights[r * columns : (r + 1) * columns] for r in range(rows)], columns)
    ax.set_title(f"{first_conv['layer']}: {len(weights)} filters of {weights.shape[2]}x{weights.shape[3]}", fontsize=9)
    return _data_uri(fig)


def thumbnail(path: str | os.PathLike | None) -> str | None:
    """A small JPEG of an image file as a data URI; None when the file is gone or unreadable."""
    if path is None or not Path(path).is_file():
        return None
    from ..data.decode import UnreadableImage, decode_image

    try:
        image = decode_image(Path(path).read_bytes(), draft_size=THUMBNAIL)
    except (UnreadableImage, OSError):
        return None
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def filters_by_scheme_plot(filters: dict[str, list], *, columns: int = 16) -> str | None:
    """One row of first-layer filters per initialisation scheme (and the pretrained ones), each
    filter scaled to its own range, so the schemes' structure (or lack of it) can be compared."""
    if not filters:
        return None
    fig, ax = _subplots(figsize=(columns * 0.5, len(filters) * 0.62))
    rows = [np.array(weights, dtype=float)[:columns] for weights in filters.values()]
    _show_mosaic(ax, rows, columns)
    height = rows[0].shape[2]
    ax.set_yticks([r * (height + 1) + (height - 1) / 2 for r in range(len(rows))], list(filters), fontsize=8)  # each row's middle pixel
    ax.tick_params(left=False)
    return _data_uri(fig)


def _show_mosaic(ax, rows: list[np.ndarray], columns: int) -> None:
    """Rows of filters drawn as one image: one axes for them all (an axes per filter took 3-4 s
    of a report)."""
    mosaic = filter_mosaic(rows, columns)
    grey = mosaic.shape[2] == 1
    ax.imshow(mosaic.squeeze(-1) if grey else mosaic, cmap="gray" if grey else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def filter_mosaic(rows: list[np.ndarray], columns: int) -> np.ndarray:
    """Rows of (channels, h, w) filters as one (height, width, channels) image in [0, 1], each
    filter scaled to its own range (a constant one black) and framed by one white pixel."""
    channels, height, width = rows[0].shape[1:]
    mosaic = np.ones((len(rows) * (height + 1) - 1, columns * (width + 1) - 1, channels))
    for r, row in enumerate(rows):
        for c, w in enumerate(row):
            w = w.transpose(1, 2, 0)
            span = w.max() - w.min()
            top, left = r * (height + 1), c * (width + 1)
            mosaic[top : top + height, left : left + width] = (w - w.min()) / span if span > 0 else 0.0
    return mosaic


def save_data_uri(uri: str, path) -> None:
    """Write a PNG data URI (as the plots return them) to a file."""
    from .._atomic import atomic_path

    with atomic_path(Path(path)) as tmp:
        tmp.write_bytes(base64.b64decode(uri.split(",", 1)[1]))
