"""Export a fitted classifier as one ONNX graph: image tensor in, class probabilities out (and the
model's novelty score as a second output).

Works for every strategy: the linear probe becomes backbone tap + standardisation + linear layer,
a fine-tuned network is exported as it predicts (averaged with the linear probe when it is). The graph is checked against PyTorch before it is
written (the legacy exporter once produced wrong MobileNetV2 outputs here). A JSON file beside it
says how to prepare the input and names the outputs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from ._atomic import write_text
from ._json import to_json_label
from .features.engine import export_verified
from .fitted import as_record
from .strategies.novelty import NoveltyModule


class _ProbabilitiesAndNovelty(nn.Module):
    """Probabilities and the novelty score from one pass: ``model`` (a linear probe, a fine-tuned
    network or its ensemble) gives its logits and the codes its detector scores."""

    def __init__(self, model: nn.Module, novelty: NoveltyModule):
        super().__init__()
        self.model, self.novelty = model, novelty

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, codes = self.model.logits_and_codes(x)
        return logits.softmax(dim=1), self.novelty(codes, logits)


class _Probabilities(nn.Module):
    """Softmax over ``logits_model``'s output: what the graph returns."""

    def __init__(self, logits_model: nn.Module):
        super().__init__()
        self.logits_model = logits_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_model(x).softmax(dim=1)


def probability_module(model) -> nn.Module:
    """The fitted model (a TransferClassifier or its FittedModel) as one eval-mode module from a
    preprocessed image batch to probabilities (and, with a novelty detector, its scores too)."""
    record = as_record(model)
    network = record.predictor()
    model = network if network is not None else record.linear_probe()
    if record.novelty is not None:
        return _ProbabilitiesAndNovelty(model, NoveltyModule(record.novelty)).eval()
    return _Probabilities(model).eval()


def recipe_steps(p) -> list[str]:
    """From an image file to the graph's input, exactly as ``predict`` does it, in steps another
    program can follow with Pillow and numpy (tests/test_export.py follows them and matches
    ``predict`` on every image). The JPEG draft step matters: decoding at reduced size gives other
    pixels than decoding in full and resizing, enough to move a probability by 0.28 on some images."""
    interpolation = {"bilinear": "BILINEAR", "bicubic": "BICUBIC", "nearest": "NEAREST"}.get(p.interpolation, p.interpolation.upper())
    return [
        "open the file with Pillow; take the first frame (seek(0))",
        f"JPEG only: image.draft('RGB', ({p.resize}, {p.resize})) before decoding: libjpeg decodes at the smallest of full, "
        f"1/2, 1/4 or 1/8 size that keeps both sides at least {p.resize}",
        "ImageOps.exif_transpose(image) (the camera's orientation tag)",
        "to 8-bit RGB: a palette with transparency, RGBA, LA or PA is composited onto white; integer greyscale of more than 8 bits "
        "(I;16, I) with values in 0-65535 is divided by 2^b - 1 for the fewest bits b among 8, 10, 12, 14, 16 that hold its "
        "largest value, then times 255, rounded; float or signed greyscale is scaled to 0-255 by its own minimum and maximum; "
        "every other mode by image.convert('RGB')",
        f"resize so that the shorter side is {p.resize}: the longer becomes int({p.resize} * longer / shorter); "
        f"Pillow's image.resize((width, height), Image.{interpolation})",
        f"centre crop {p.crop} x {p.crop}: left = int(round((width - {p.crop}) / 2)), top = int(round((height - {p.crop}) / 2))",
        "to float32 in [0, 1] (pixel / 255)" + (f", times {p.value_scale:g}" if p.value_scale != 1.0 else "")
        + (", channels reversed to BGR" if p.channel_order == "BGR" else ""),
        f"per channel: subtract mean {list(p.mean)}, divide by std {list(p.std)}; lay out as (3, height, width), batch first",
    ]


def export_onnx(model, path: str | os.PathLike) -> Path:
    """Write ``path`` (the graph) and ``path`` + ``.json`` (input preparation, labels)."""
    path = Path(path).expanduser()
    record = as_record(model)
    preprocessing = record.preprocessing
    module = probability_module(record)
    with_novelty = isinstance(module, _ProbabilitiesAndNovelty)
    export_verified(module, path, preprocessing.crop, ["probabilities", "novelty"] if with_novelty else ["probabilities"])
    description = {
        "input": {"name": "x", "shape": ["batch", 3, preprocessing.crop, preprocessing.crop], "dtype": "float32"},
        "preprocessing": preprocessing.to_dict() | {"steps": recipe_steps(preprocessing)},
        "output": {"name": "probabilities", "shape": ["batch", len(record.classes)]},
        **({"novelty": {
            "name": "novelty", "shape": ["batch"], "threshold": record.novelty.threshold, "method": record.novelty.method,
            "meaning": "how unlike the training images each image is; above the threshold it looks like none of the classes",
        }} if with_novelty else {}),
        "labels": [to_json_label(c) for c in record.classes],
        "backbone": record.backbone,
        "strategy": record.strategy,
    }
    write_text(path.with_name(path.name + ".json"), json.dumps(description, indent=2) + "\n")
    return path
