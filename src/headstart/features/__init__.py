"""CNN codes at backbone taps: extraction engines and the on-disk cache."""

from .cache import FeatureCache, default_cache_dir
from .extract import CodeExtractor, Codes, ConcatExtractor, ImageInput, code_extractor

__all__ = ["CodeExtractor", "Codes", "ConcatExtractor", "FeatureCache", "ImageInput", "code_extractor", "default_cache_dir"]
