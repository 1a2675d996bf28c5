"""Style as Gram matrices of CNN activations: descriptors, comparison, search and evaluation."""

from .descriptors import STYLE_LAYERS, StyleDescriptors, StyleExtractor, gram, smooth, style_distance
from .evaluate import StyleRow, evaluate_style
from .index import Match, StyleIndex, StyleSettings, style_compare

__all__ = [
    "STYLE_LAYERS",
    "Match",
    "StyleDescriptors",
    "StyleExtractor",
    "StyleIndex",
    "StyleRow",
    "StyleSettings",
    "evaluate_style",
    "gram",
    "smooth",
    "style_compare",
    "style_distance",
]
