import io

import numpy as np
import pytest
from PIL import Image

from headstart.data.decode import MAX_PIXELS, UnreadableImage, array_to_image, decode_image, sniff_format


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


RGB = Image.fromarray(np.arange(24 * 16 * 3, dtype=np.uint8).reshape(16, 24, 3))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF", "AVIF", "HEIF", "JPEG2000", "PPM"])
def test_every_supported_format_decodes_to_rgb(fmt):
    if fmt == "HEIF":  # an iPhone's photos; the test needs pillow-heif's encoder, decode_image registers its reader itself
        import pillow_heif

        pillow_heif.register_heif_opener()
    image = decode_image(encode(RGB, fmt))
    assert image.mode == "RGB" and image.size == (24, 16)
    assert sniff_format(encode(RGB, fmt)[:16]) is not None


@pytest.mark.parametrize(
    "mode",
    ["L", "1", "P", "RGBA", "LA", "CMYK", "I;16", "I", "F"],
)
def test_every_mode_becomes_rgb(mode):
    if mode in ("I;16", "I", "F"):
        ramp = np.linspace(0, 60000, 16 * 24).reshape(16, 24)
        source = Image.fromarray(ramp.astype({"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]))
        assert source.mode == mode
    else:
        source = RGB.convert(mode)
    fmt = {"CMYK": "JPEG", "F": "TIFF", "I": "TIFF"}.get(mode, "PNG" if mode != "1" else "BMP")
    image = decode_image(encode(source, fmt))
    assert image.mode == "RGB" and image.size == (24, 16)


def test_sixteen_bit_keeps_its_range():
    ramp = Image.fromarray(np.linspace(0, 65535, 64).reshape(8, 8).astype(np.uint16))
    pixels = np.asarray(decode_image(encode(ramp, "PNG")))[:, :, 0]
    assert pixels.min() == 0 and pixels.max() == 255  # scaled, not clipped to white
    # 12-bit data in a 16-bit PNG, as scanners write it: scaled by 4,095, not 65,535 (16 grey levels)
    twelve = np.asarray(decode_image(encode(Image.fromarray(np.linspace(0, 4095, 256).reshape(16, 16).astype(np.uint16)), "PNG")))[:, :, 0]
    assert twelve.min() == 0 and twelve.max() == 255 and len(np.unique(twelve)) == 256
    # signed values (CT's Hounsfield units) by their own range
    hounsfield = np.asarray(decode_image(encode(Image.fromarray(np.linspace(-1024, 3071, 64).reshape(8, 8).astype(np.int32)), "TIFF")))
    assert hounsfield.min() == 0 and hounsfield.max() == 255


def test_transparency_is_composited_on_white():
    clear = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.asarray(decode_image(encode(clear, "PNG"))).min() == 255


def test_extension_does_not_matter(tmp_path):
    # A PNG saved as .jpg: decoding looks at the bytes, not the name.
    path = tmp_path / "liar.jpg"
    RGB.save(path, format="PNG")
    assert decode_image(path.read_bytes()).size == (24, 16)


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    image = decode_image(encode(RGB, "JPEG", exif=exif))
    assert image.size == (16, 24)


def test_gif_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    pixels = np.asarray(decode_image(buffer.getvalue()))
    assert pixels[0, 0, 0] > 200 and pixels[0, 0, 2] < 50


def test_truncated_image_is_unreadable():
    data = encode(RGB.resize((200, 200)), "JPEG")
    with pytest.raises(UnreadableImage, match="^truncated: the file ends before the image does"):
        decode_image(data[: len(data) // 2])
    buffer = io.BytesIO()
    RGB.save(buffer, format="JPEG", comment=b"x" * 3000)  # cut within a header (a camera's EXIF): Pillow says "Truncated File Read"
    with pytest.raises(UnreadableImage, match="^truncated: the file ends before the image does"):
        decode_image(buffer.getvalue()[:1000])


def test_damaged_image_data_is_said_in_plain_words():
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    png = bytearray(encode(noise, "PNG"))
    png[100:-100] = rng.integers(0, 255, len(png) - 200, dtype=np.uint8).tobytes()  # Pillow: "unrecognized data stream contents"
    webp = encode(noise, "WEBP")
    for damaged in (bytes(png), webp[: len(webp) // 2]):  # WebP cut short, Pillow: "could not create decoder object"
        with pytest.raises(UnreadableImage, match="^damaged: its image data cannot be decoded"):
            decode_image(damaged)


def test_garbage_is_unreadable():
    with pytest.raises(UnreadableImage):
        decode_image(b"not an image at all")


def test_decompression_bomb_is_refused():
    with pytest.raises(UnreadableImage, match="exceeds the 100-pixel limit"):
        decode_image(encode(RGB, "PNG"), max_pixels=100)  # the server's limit is lower than the library's
    assert MAX_PIXELS > 100_000_000  # the real limit admits any photo
    huge = bytearray(encode(RGB, "GIF"))
    huge[6:10] = b"\xff\xff\xff\xff"  # a header claiming 65535x65535: Pillow refuses it in Image.open, said in the same words
    with pytest.raises(UnreadableImage, match=f"^4,294,836,225 pixels exceeds the {MAX_PIXELS:,}-pixel limit"):
        decode_image(bytes(huge))
    huge[6:10] = b"\x10\x27\x10\x27"  # 10000x10000: a 100-megapixel camera's size, over Pillow's warning (89 million), under the limit
    assert decode_image(bytes(huge)).size == (10000, 10000)  # read, not refused as a bomb (its 8x8 frame drawn on that screen)
    with pytest.raises(UnreadableImage, match="^10000x10000 pixels exceeds the 50,000,000-pixel limit"):
        decode_image(bytes(huge), max_pixels=50_000_000)


def test_jpeg_draft_never_goes_below_requested_size():
    big = RGB.resize((800, 600))
    image = decode_image(encode(big, "JPEG"), draft_size=150)
    assert min(image.size) >= 150 and image.size[0] < 800


def test_arrays_of_any_layout():
    assert array_to_image(np.zeros((10, 12), np.uint8)).size == (12, 10)
    assert array_to_image(np.ones((3, 10, 12), np.float32)).size == (12, 10)
    assert np.asarray(array_to_image(np.ones((10, 12, 1), np.float64)))[0, 0, 0] == 255
    with pytest.raises(ValueError, match="shape"):
        array_to_image(np.zeros((2, 3, 4, 5)))


def test_arrays_past_eight_bits_scale_as_their_files_do():
    # 12-bit data as pydicom or tifffile hand it over (uint16): scaled by 4,095 as the same pixels
    # in a 16-bit PNG are, not clipped at 255 (which made nearly every pixel white)
    ramp = np.linspace(0, 4095, 256).reshape(16, 16).astype(np.uint16)
    from_array = np.asarray(array_to_image(ramp))
    from_file = np.asarray(decode_image(encode(Image.fromarray(ramp), "PNG")))
    assert np.array_equal(from_array, from_file) and len(np.unique(from_array)) == 256
    colour = np.asarray(array_to_image(np.stack([ramp] * 3, axis=-1)))  # 16-bit RGB, which PIL cannot hold
    assert colour.min() == 0 and colour.max() == 255 and len(np.unique(colour)) == 256
    hounsfield = np.asarray(array_to_image(np.linspace(-1024, 3071, 64).reshape(8, 8).astype(np.int16)))
    assert hounsfield.min() == 0 and hounsfield.max() == 255
    assert np.asarray(array_to_image(np.eye(4, dtype=bool))).max() == 255  # a boolean mask: 0 or 255
    with pytest.raises(ValueError, match="0-1 or 0-255"):
        array_to_image(np.full((4, 4), 4095.0))  # float past 255: refused, not clipped to white


def test_a_damaged_tiff_is_unreadable_without_pillows_warnings():
    import warnings

    with warnings.catch_warnings(record=True) as shown:
        warnings.resetwarnings()  # every warning shown, but for the filters decoding puts in place
        with pytest.raises(UnreadableImage, match="not a recognised image format"):
            decode_image(b"II*\x00\x10\x00\x00\x00CR\x02")  # a camera's raw file starts as a TIFF
    assert not shown  # Pillow's "Corrupt EXIF data" reached the terminal of predict and fit


def test_decoding_in_threads_leaves_the_callers_warnings_alone(tmp_path):
    """Each decoding thread entered and left a catch_warnings of its own: they restored one another's
    snapshots, and "ignore every UserWarning" stayed in the caller's process after the pass."""
    import warnings

    from headstart.data.images import unreadable_files

    paths = []
    for i in range(200):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (64, 64), (i, 0, 0)).save(paths[-1])
    with warnings.catch_warnings(record=True) as shown:
        warnings.resetwarnings()
        for i in range(5):  # the last thread to leave decides: the filter stayed after most passes, not all
            assert unreadable_files(paths) == {}
            warnings.warn(f"the caller's own warning, after pass {i}", UserWarning)
    assert [str(w.message) for w in shown] == [f"the caller's own warning, after pass {i}" for i in range(5)]
