"""Turn image bytes into an RGB PIL image, whatever the format, mode or orientation.

Format is detected from the content, never from the file name, so a PNG named ``.jpg`` loads.
"""

from __future__ import annotations

import io
import re
import threading
import warnings

import numpy as np
from PIL import Image, ImageOps

# 178 megapixels (PIL's default) is generous for photos; a file that claims more is treated as a
# decompression bomb and refused instead of allocating gigabytes.
MAX_PIXELS = 178_956_970

# Leading bytes of the formats we decode; used to tell images from notes and Thumbs.db files
# without trusting extensions.
_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG2000"),  # .jp2 (scanners, slides, satellites)
    (b"\xff\x4f\xff\x51", "JPEG2000"),  # a bare codestream, .j2k
)

# HEIC (an iPhone's photos) and AVIF are ISO base media files: the brand after 'ftyp', at bytes
# 4-12, names the format. Pillow reads AVIF itself and HEIC through pillow-heif.
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"})

# Pillow's warnings about a file it decodes anyway or names as unreadable (see _keep_pillow_quiet):
# (category, module pattern). Its modules warn with the default stack level, so they name themselves.
_PILLOW_WARNINGS = ((UserWarning, r"PIL\."), (Image.DecompressionBombWarning, ""))
_PILLOW_FILTERS_LOCK = threading.Lock()

FORMATS_IN_WORDS = "JPEG, PNG, WebP, BMP, GIF, TIFF, HEIC, AVIF, JPEG 2000 or PGM/PPM"  # what a person is told to give instead of an unreadable file

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".heic", ".heif", ".avif", ".jp2", ".j2k", ".pgm", ".ppm", ".pbm", ".pnm"}
)


class UnreadableImage(Exception):
    """Raised by :func:`decode_image` for a truncated, corrupt, or oversized image."""


def sniff_format(head: bytes) -> str | None:
    """Return the image format named by the first bytes of a file, or None if not an image."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp":
        return "AVIF" if head[8:12] in _AVIF_BRANDS else "HEIF" if head[8:12] in _HEIF_BRANDS else None
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[:1] == b"P" and head[1:2] in (b"1", b"2", b"3", b"4", b"5", b"6") and head[2:3].isspace():
        return "PPM"  # Netpbm's PBM, PGM and PPM: classic face and vision sets (ORL, Yale) come as .pgm
    return None


def decode_image(data: bytes, *, draft_size: int | None = None, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode ``data`` into an 8-bit RGB image with EXIF orientation applied.

    ``draft_size`` lets JPEG decoding skip detail that a later resize to that size would throw away
    (DCT scaling, the trick behind PIL's ``thumbnail``); the result is never smaller than it.
    ``max_pixels`` refuses larger images before any pixel is decoded (the server sets it lower).
    """
    if not data:
        raise UnreadableImage("empty file")  # as the folder scan words it (dataset.classify_file)
    if sniff_format(data[:16]) == "HEIF" and not read_heif():
        raise UnreadableImage("a HEIC photo, and pillow-heif is not installed: pip install pillow-heif")
    _keep_pillow_quiet()
    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > max_pixels:
            raise UnreadableImage(
                f"{image.width}x{image.height} pixels exceeds the {max_pixels:,}-pixel limit "
                "(possible decompression bomb)"
            )
        image.seek(0)  # first frame of animated GIF/WebP/TIFF
        if draft_size and image.format == "JPEG":
            image.draft("RGB", (draft_size, draft_size))
        image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except UnreadableImage:
        raise
    except Image.DecompressionBombError as exc:  # refused in Image.open, before the check above
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(claimed.group(1)):,} pixels" if claimed else "its size"
        raise UnreadableImage(f"{size} exceeds the {2 * Image.MAX_IMAGE_PIXELS:,}-pixel limit (possible decompression bomb, or a damaged header)") from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.UnidentifiedImageError) as exc:
        raise UnreadableImage(plain_reason(exc)) from None


def _keep_pillow_quiet() -> None:
    """Pillow's UserWarnings ("Corrupt EXIF data", "Truncated File Read"), on a camera's raw file
    (a .CR2 starts as a TIFF) or a damaged one, would reach the person's terminal: the image is
    decoded, or named as unreadable with the reason, either way. Its DecompressionBombWarning
    too: it warns from 89 million pixels (a 100-megapixel camera's photo), where decode_image's
    ``max_pixels`` judges instead (Pillow's own refusal, above twice that, is said in its words).

    Filters for Pillow's modules, put in place once and again wherever something took them out (a
    caller's catch_warnings), never a catch_warnings per decode: decoding threads entering and
    leaving catch_warnings restore one another's snapshots of the filters, which left "ignore every
    UserWarning" in the caller's process after every pass decoded in threads."""
    with _PILLOW_FILTERS_LOCK:
        for category, module in _PILLOW_WARNINGS:
            if not any(f[0] == "ignore" and f[2] is category and getattr(f[3], "pattern", "") == module for f in warnings.filters):
                warnings.filterwarnings("ignore", category=category, module=module)


def read_heif() -> bool:
    """Teach Pillow HEIC, on the first one met (pillow-heif costs 0.1 s to import); False without pillow-heif."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def open_file(path) -> Image.Image:
    """``Image.open`` (the header only, until pixels are asked for), HEIC included: Pillow is
    taught HEIC only where it knows no other format for the file, so other files are opened once."""
    _keep_pillow_quiet()
    try:
        return Image.open(path)
    except Image.UnidentifiedImageError:
        if not read_heif():
            raise
        return Image.open(path)


def plain_reason(exc: BaseException) -> str:
    """Why PIL could not decode, in words a person can act on (PIL's own name in-memory buffers,
    as in 'cannot identify image file <_io.BytesIO object at 0x...>')."""
    text = str(exc)
    if isinstance(exc, Image.UnidentifiedImageError):
        return "not a recognised image format (damaged, or not really an image)"
    if "truncated" in text.lower() or isinstance(exc, EOFError):  # "image file is truncated", or "Truncated File Read" within a header
        return "truncated: the file ends before the image does, as after an interrupted copy"
    if any(words in text for words in ("data stream", "decoder", "decoding")):  # "unrecognized data stream contents", WebP's "could not create decoder object"
        return "damaged: its image data cannot be decoded (a corrupt file, or one cut short)"
    return re.sub(r"<[^<>]* object at 0x[0-9a-fA-F]+>", "the file", text) or type(exc).__name__


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; transparency is composited onto white."""
    image.load()  # force full decode so truncation surfaces here, not later
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _high_depth_to_rgb(image)
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """Scale 16-bit, 32-bit or float grayscale to 0-255 (PIL's convert would clip at 255)."""
    return Image.fromarray(to_eight_bits(np.asarray(image))).convert("RGB")  # "I;16" is uint16, "I" int32, "F" float32


def to_eight_bits(pixels: np.ndarray) -> np.ndarray:
    """Integer or float pixels past 8 bits scaled to uint8, for files and arrays alike.

    Integers scale by the bit depth their values fill, 10, 12, 14 or 16 bits: scanners store 12-bit
    data in 16-bit PNGs (and pydicom hands it over as uint16), which divided by 65,535 would keep
    16 grey levels, and clipped at 255 would be white; by depth, images of one depth keep their
    relative brightness. Floats, negative values (CT's Hounsfield units) and anything past 16 bits
    scale by the image's own range.
    """
    values = pixels.astype(np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if np.issubdtype(pixels.dtype, np.integer) and low >= 0 and high <= 65535:
        scale_low, scale_high = 0.0, float(next(2**bits - 1 for bits in (8, 10, 12, 14, 16) if high <= 2**bits - 1))
    else:
        scale_low, scale_high = low, high if high > low else low + 1.0
    scaled = (values - scale_low) / (scale_high - scale_low) * 255.0
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def channels_last(array: np.ndarray) -> np.ndarray:
    """An HxW or HxWxC array as it is; a CxHxW one (torchvision's tensors) moved to HxWxC."""
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[2] not in (1, 3, 4):
        return np.moveaxis(array, 0, -1)
    return array


def array_to_image(array: np.ndarray) -> Image.Image:
    """Turn an HxW or HxWxC uint8/float array (as from skimage or OpenCV-less code) into RGB."""
    array = channels_last(np.asarray(array))
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.integer) and array.size and (array.min() < 0 or array.max() > 255):
        array = to_eight_bits(array)  # 16-bit or signed data, scaled as the same pixels in a file would be
    elif array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.size and array.min() < 0:
            raise ValueError("pixel values below 0, as after normalisation: pass images as 0-1 or 0-255 (headstart normalises for the backbone)")
        if np.issubdtype(array.dtype, np.floating) and array.size and array.max() > 255:
            raise ValueError(f"float pixel values up to {float(array.max()):g}: pass floats as 0-1 or 0-255, or integer arrays (16-bit ones are scaled by their bit depth)")
        if np.issubdtype(array.dtype, np.floating) and array.size and array.max() <= 1.0:
            array = array * 255.0
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3):
        raise ValueError(f"expected an HxW or HxWxC image array, got shape {array.shape}")
    return to_rgb(Image.fromarray(array))
