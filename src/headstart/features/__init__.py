"""CNN codes at backbone taps: extraction engines and the on-disk cache."""

from .cache import FeatureCache, default_cache_dir
from .extract import CodeExtractor, Codes, ConcatExtractor, ImageInput

__all__ = ["CodeExtractor", "Codes", "ConcatExtractor", "FeatureCache", "ImageInput", "default_cache_dir"]
