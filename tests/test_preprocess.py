"""Preprocessing equals torchvision's recipe; odd modes become RGB; limits hold."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.errors import BadImage, ImageTooLarge, UnsupportedMediaType
from service.preprocess import Limits, Preprocessor
from service.repository import Preprocessing

IMAGENET = Preprocessing(
    resize_size=256,
    crop_size=224,
    interpolation="bilinear",
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
)
LIMITS = Limits(max_pixels=40_000_000)


def torchvision_reference(image: Image.Image, spec: Preprocessing) -> np.ndarray:
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms._presets import ImageClassification

    transform = ImageClassification(
        crop_size=spec.crop_size,
        resize_size=spec.resize_size,
        mean=spec.mean,
        std=spec.std,
        interpolation=InterpolationMode(spec.interpolation),
    )
    return transform(image.convert("RGB")).numpy()


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **kwargs)
    return out.getvalue()


@pytest.mark.parametrize("name", ["chelsea.png", "coffee.png", "rocket.jpg", "camera.png"])
def test_matches_torchvision_on_real_photos(photos_dir: Path, name: str) -> None:
    data = (photos_dir / name).read_bytes()
    ours = Preprocessor(IMAGENET, LIMITS)(data)
    reference = torchvision_reference(Image.open(io.BytesIO(data)), IMAGENET)
    assert ours.shape == (3, 224, 224) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, atol=1e-5)


@pytest.mark.parametrize("name", ["retina.jpg", "hubble_deep_field.jpg"])
def test_jpeg_draft_mode_changes_the_input_only_slightly(photos_dir: Path, name: str) -> None:
    """Large JPEGs decode at reduced scale; the model input moves by a bounded amount."""
    data = (photos_dir / name).read_bytes()
    spec = Preprocessing(**{**IMAGENET.model_dump(), "resize_size": 232})
    ours = Preprocessor(spec, LIMITS)(data)
    reference = torchvision_reference(Image.open(io.BytesIO(data)), spec)
    diff = np.abs(ours - reference)
    # Normalised units (1 grey level ~ 0.017): mean under ~1 level, worst pixel bounded.
    assert diff.mean() < 0.02, diff.mean()
    assert diff.max() < 0.6, diff.max()


def test_draft_mode_is_used_for_large_jpegs(photos_dir: Path) -> None:
    pre = Preprocessor(IMAGENET, LIMITS)
    opened = pre.open((photos_dir / "retina.jpg").read_bytes())
    assert opened.image.size == (706, 706)  # 1411x1411 decoded at 1/2 scale, >= 2x resize target
    assert opened.decode_pixels == 706 * 706
    opened.image.load()
    assert opened.image.size == (706, 706)


@pytest.mark.parametrize(
    "name", ["edge_chelsea_gray.jpg", "edge_coffee_rgba.png", "edge_rocket_cmyk.jpg", "coins.png"]
)
def test_any_mode_becomes_three_channels(photos_dir: Path, name: str) -> None:
    data = (photos_dir / name).read_bytes()
    ours = Preprocessor(IMAGENET, LIMITS)(data)
    reference = torchvision_reference(Image.open(io.BytesIO(data)), IMAGENET)
    assert ours.shape == (3, 224, 224)
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_exif_orientation_is_applied() -> None:
    wide = Image.new("RGB", (400, 200), "white")
    wide.paste(Image.new("RGB", (200, 200), "red"), (0, 0))  # red on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the red half ends up on top
    data = encode(wide, "JPEG", exif=exif, quality=95)
    # Resize 200, crop 200: the crop is rows 100..300 of the upright 200x400 image.
    pre = Preprocessor(
        Preprocessing(**{**IMAGENET.model_dump(), "resize_size": 200, "crop_size": 200}), LIMITS
    )
    opened = pre.open(data)
    assert opened.image.size == (400, 200)  # as stored
    decoded = pre.crop_image(opened)
    assert decoded.size == (200, 200)
    top, bottom = decoded.getpixel((100, 50)), decoded.getpixel((100, 150))
    assert top[0] > 200 and top[1] < 60, top  # red half on top, as displayed
    assert bottom[1] > 200, bottom


def test_sixteen_bit_png_keeps_its_range() -> None:
    ramp = np.tile(np.linspace(0, 65535, 300, dtype=np.uint16), (300, 1))
    data = encode(Image.fromarray(ramp), "PNG")
    whole = Preprocessing(**{**IMAGENET.model_dump(), "resize_size": 300, "crop_size": 300})
    pre = Preprocessor(whole, LIMITS)
    decoded = np.asarray(pre.crop_image(pre.open(data)))
    assert decoded.shape == (300, 300, 3)
    assert decoded[:, :5].max() < 10 and decoded[:, -5:].min() > 245


def test_pixel_limit_is_checked_before_decoding() -> None:
    # A 20000x20000 PNG header with a tiny body: refused from the header alone.
    data = encode(Image.new("1", (20000, 20000)), "PNG")
    assert len(data) < 200_000
    with pytest.raises(ImageTooLarge) as info:
        Preprocessor(IMAGENET, Limits(max_pixels=10_000_000))(data)
    assert info.value.status == 413


@pytest.mark.parametrize(
    ("data", "error"),
    [(b"", BadImage), (b"hello, not an image", UnsupportedMediaType)],
)
def test_non_images_are_refused(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        Preprocessor(IMAGENET, LIMITS)(data)


def test_truncated_jpeg_is_refused(photos_dir: Path) -> None:
    data = (photos_dir / "rocket.jpg").read_bytes()
    with pytest.raises(BadImage):
        Preprocessor(IMAGENET, LIMITS)(data[: len(data) // 2])


def test_tiff_is_not_accepted() -> None:
    with pytest.raises(UnsupportedMediaType):
        Preprocessor(IMAGENET, LIMITS)(encode(Image.new("RGB", (8, 8)), "TIFF"))
