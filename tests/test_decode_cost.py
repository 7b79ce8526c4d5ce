"""Decode work is estimated from the header; what no encoder writes is refused before decoding."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import GifImagePlugin, Image, ImageFile, JpegImagePlugin

from service.decode_cost import (
    DEFAULT_MAX_JPEG_SCANS,
    MAX_GIF_BLOCKS,
    MAX_GIF_JUNK_BYTES,
    MAX_JPEG_HEADER_JUNK_BYTES,
    MAX_JPEG_MARKERS,
    MAX_PNG_CHUNKS,
    gif_blocks,
    passes_per_pixel,
)
from service.errors import BadImage, ImageTooCostly, ServiceError, UnsupportedMediaType
from service.preprocess import DEFAULT_MAX_DECODE_WORK, Limits, Preprocessor
from service.settings import Settings
from tests.reference import IMAGENET, LIMITS
from tests.reliability import images

PRE = Preprocessor(IMAGENET, LIMITS)


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def load(self: object) -> None:
        raise AssertionError("pixels decoded before the cost check")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)


@pytest.fixture(scope="module")
def hostile_jpeg() -> bytes:
    return images.hostile_progressive_jpeg(scans=3000)


def test_limits_default_to_the_settings_defaults() -> None:
    settings = Settings()
    assert LIMITS.max_jpeg_scans == settings.max_jpeg_scans == DEFAULT_MAX_JPEG_SCANS == 500
    assert LIMITS.max_decode_work == settings.max_decode_work == DEFAULT_MAX_DECODE_WORK


# -- JPEG scans ---------------------------------------------------------------------------


def test_progressive_jpeg_with_thousands_of_empty_scans_is_refused_from_the_header(
    hostile_jpeg: bytes, no_decoding: None
) -> None:
    assert 900_000 < len(hostile_jpeg) < 1_100_000  # the size of the attack's files
    assert images.jpeg_scans(hostile_jpeg) == 3010
    with pytest.raises(ImageTooCostly, match="more than 500 scans") as info:
        PRE.open(hostile_jpeg)
    assert info.value.status == 413 and info.value.code == "image_too_costly"
    assert info.value.details == {"max_jpeg_scans": 500}


def test_the_hostile_jpeg_is_a_valid_image_that_pillow_would_decode(hostile_jpeg: bytes) -> None:
    """The refusal is about cost: the file decodes (slowly) to the honest photo's pixels."""
    small = images.with_empty_scans(images.progressive_jpeg(64, 48), 20)
    honest = Image.open(io.BytesIO(images.progressive_jpeg(64, 48)))
    assert Image.open(io.BytesIO(small)).tobytes() == honest.tobytes()
    assert Image.open(io.BytesIO(hostile_jpeg)).size == (2000, 2000)


def test_scan_count_at_the_bound_is_accepted_and_one_more_is_refused() -> None:
    base = images.progressive_jpeg(64, 48)
    assert images.jpeg_scans(base) == 10  # libjpeg-turbo's progressive script for YCbCr
    at_bound = images.with_empty_scans(base, DEFAULT_MAX_JPEG_SCANS - 10)
    opened = PRE.open(at_bound)
    assert opened.work == 64 * 48 * DEFAULT_MAX_JPEG_SCANS
    assert PRE.exact(opened).shape == (3, 224, 224)
    with pytest.raises(ImageTooCostly):
        PRE.open(images.with_empty_scans(base, DEFAULT_MAX_JPEG_SCANS - 9))


def test_a_lower_scan_bound_from_settings_is_applied() -> None:
    pre = Preprocessor(IMAGENET, Limits(max_pixels=10**6, max_jpeg_scans=10))
    assert pre.open(images.progressive_jpeg(64, 48)).work == 64 * 48 * 10
    with pytest.raises(ImageTooCostly, match="more than 10 scans"):
        pre.open(images.with_empty_scans(images.progressive_jpeg(64, 48), 1))


def test_scan_markers_inside_segments_and_after_the_image_are_not_counted() -> None:
    baseline = images.encode(images.photo_like(), "JPEG")
    comment = b"\xff\xda\xff\xd9" * 2000  # a COM payload is skipped by its length
    segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
    stuffed = baseline[:2] + segment + baseline[2:] + b"\xff\xda" * 5000  # and a trailer
    assert PRE.open(stuffed).work == 64 * 48  # one scan
    # Between scans too: a COM holding EOI cannot end the count early.
    progressive = images.progressive_jpeg(64, 48)
    eoi = progressive.rindex(b"\xff\xd9")
    hidden = progressive[:eoi] + segment + progressive[eoi:]
    hostile = images.with_empty_scans(hidden, DEFAULT_MAX_JPEG_SCANS)
    with pytest.raises(ImageTooCostly):
        PRE.open(hostile)


def test_thousands_of_header_segments_are_refused_before_pillow_parses_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pillow walks header segments in Python: 1 MB of them took 1.2 s in Image.open."""

    def parse(self: object) -> None:
        raise AssertionError("Pillow parsed a hostile header")

    data = images.encode(images.photo_like(), "JPEG")
    padded = data[:2] + b"\xff\xfe\x00\x02" * (MAX_JPEG_MARKERS + 1) + data[2:]
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "_open", parse)
    with pytest.raises(ImageTooCostly, match=f"over {MAX_JPEG_MARKERS} markers"):
        PRE.open(padded)


def test_junk_between_header_markers_is_refused_past_a_bound() -> None:
    data = images.encode(images.photo_like(), "JPEG")
    com = b"\xff\xfe\x00\x02"
    some = data[:2] + com + b"\0" * 100 + data[2:]
    assert PRE.open(some).work == 64 * 48  # a little junk: libjpeg warns, we decode
    lots = data[:2] + com + b"\0" * (MAX_JPEG_HEADER_JUNK_BYTES + 1) + data[2:]
    with pytest.raises(BadImage, match="junk"):
        PRE.open(lots)


# -- real photos: no false refusals -------------------------------------------------------


def _photos(photos_dir: Path) -> list[Path]:
    found = sorted(p for p in photos_dir.iterdir() if p.suffix in (".jpg", ".png"))
    assert len(found) >= 10
    return found


def test_every_real_photo_passes_with_its_scan_count(photos_dir: Path) -> None:
    for path in _photos(photos_dir):
        data = path.read_bytes()
        width, height = Image.open(io.BytesIO(data)).size
        opened = PRE.open(data)
        scans = data.count(b"\xff\xda") if path.suffix == ".jpg" else 1
        assert opened.work <= width * height * scans, path.name  # EXIF thumbnails excluded
        assert opened.work >= width * height, path.name


@pytest.mark.parametrize(
    "options",
    [
        {"progressive": True},
        {"progressive": True, "optimize": True},
        {"optimize": True},
        {"progressive": True, "quality": 95, "subsampling": 0},
    ],
)
def test_every_real_photo_resaved_by_pillow_passes(photos_dir: Path, options: dict) -> None:
    for path in _photos(photos_dir):
        image = Image.open(path)
        mode = image.mode if image.mode in ("L", "RGB", "CMYK") else "RGB"
        data = images.encode(image.convert(mode), "JPEG", **options)
        opened = PRE.open(data)
        scans = images.jpeg_scans(data)
        assert 1 <= scans <= 18, (path.name, scans)  # CMYK progressive: 18
        assert opened.work == image.size[0] * image.size[1] * scans, path.name
        assert opened.work <= Settings().heavy_decode_work, path.name  # the cheap lane


# -- PNG, BMP and the work bound ----------------------------------------------------------


def test_adam7_png_counts_two_passes_and_decodes_the_same_pixels() -> None:
    photo = images.photo_like(40, 30)
    interlaced = images.png_adam7(photo)
    assert PRE.open(interlaced).work == 2 * 40 * 30
    assert PRE.open(images.encode(photo, "PNG")).work == 40 * 30
    assert Image.open(io.BytesIO(interlaced)).convert("RGB").tobytes() == photo.tobytes()


def test_png_with_more_chunks_than_encoders_write_is_refused(no_decoding: None) -> None:
    png = images.encode(images.photo_like(), "PNG")
    assert PRE.open(images.png_with_empty_idat_chunks(png, 1000)).work == 64 * 48
    with pytest.raises(ImageTooCostly, match=f"over {MAX_PNG_CHUNKS} chunks"):
        PRE.open(images.png_with_empty_idat_chunks(png, MAX_PNG_CHUNKS))


def test_rle_bmp_is_refused_because_pillow_decodes_it_in_python(no_decoding: None) -> None:
    with pytest.raises(UnsupportedMediaType, match="RLE-compressed BMP") as info:
        PRE.open(images.bmp_rle8(32, 8))
    assert "uncompressed BMP" in info.value.details["allowed"]
    assert PRE.open(images.encode(images.photo_like(), "BMP")).work == 64 * 48


def test_work_above_the_bound_is_refused_naming_pixels_passes_and_bound(
    no_decoding: None,
) -> None:
    pre = Preprocessor(IMAGENET, Limits(max_pixels=10**6, max_decode_work=64 * 48 * 9))
    with pytest.raises(ImageTooCostly) as info:
        pre.open(images.progressive_jpeg(64, 48))
    assert str(info.value).startswith("decoding this image is 3072 pixels x 10 passes = 30720")
    assert info.value.details == {"max_decode_work": 27648}
    assert pre.open(images.encode(images.photo_like(), "JPEG")).work == 3072


def test_work_bound_below_the_pixel_cap_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="max_decode_work") as info:
        Settings(max_image_pixels=10**6, max_decode_work=10**5)
    assert "could never" in str(info.value)


def test_gif_with_more_extension_blocks_than_encoders_write_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pillow walks them in Python inside Image.open: 1 MB of them took 0.25 s."""
    gif = images.animated_gif()
    assert PRE.open(images.gif_with_comment_blocks(gif, 100)).work == 40 * 30
    assert gif_blocks(gif) == 5  # NETSCAPE2.0 (id, loop count, end), frame delay (data, end)

    def parse(self: object) -> None:
        raise AssertionError("Pillow parsed a hostile header")

    monkeypatch.setattr(GifImagePlugin.GifImageFile, "_open", parse)
    with pytest.raises(ImageTooCostly, match=f"over {MAX_GIF_BLOCKS} extension blocks"):
        PRE.open(images.gif_with_comment_blocks(gif, MAX_GIF_BLOCKS + 1))
    junk = gif[:13] + b"\0" * (MAX_GIF_JUNK_BYTES + 1) + gif[13:]
    with pytest.raises(BadImage, match="junk"):
        PRE.open(junk)


@settings(max_examples=300, deadline=None)
@given(
    magic=st.sampled_from([b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a"]),
    body=st.binary(max_size=4096),
)
def test_the_walks_answer_any_bytes_with_a_count_or_a_typed_error(
    magic: bytes, body: bytes
) -> None:
    try:
        assert passes_per_pixel(magic + body, max_jpeg_scans=DEFAULT_MAX_JPEG_SCANS) >= 1
    except ServiceError as error:
        assert 400 <= error.status < 500
