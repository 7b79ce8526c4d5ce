"""Preprocessing equals torchvision's recipe; odd modes become RGB; limits hold."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from service.errors import BadImage, ImageTooLarge, UnsupportedMediaType
from service.preprocess import Limits, Preprocessor
from service.repository import Preprocessing
from tests.reference import IMAGENET, LIMITS, encode


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


@pytest.mark.parametrize("name", ["chelsea.png", "coffee.png", "rocket.jpg", "camera.png"])
def test_matches_torchvision_on_real_photos(photos_dir: Path, name: str) -> None:
    data = (photos_dir / name).read_bytes()
    ours = Preprocessor(IMAGENET, LIMITS)(data)
    reference = torchvision_reference(Image.open(io.BytesIO(data)), IMAGENET)
    assert ours.shape == (3, 224, 224) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_every_8_bit_level_normalises_bit_identically_to_torchvision() -> None:
    """All 256 levels in every channel: the normalisation is torchvision's, to the bit."""
    import torchvision.transforms.functional as tvf

    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    pixels = np.stack([levels, levels.T, 255 - levels], axis=-1)
    image = Image.fromarray(pixels, "RGB")
    ours = Preprocessor(IMAGENET, LIMITS).to_tensor(image)
    reference = tvf.normalize(tvf.to_tensor(image), IMAGENET.mean, IMAGENET.std).numpy()
    assert ours.dtype == np.float32
    assert np.array_equal(ours, reference)


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


def test_animated_gif_uses_its_first_frame() -> None:
    frames = [Image.new("RGB", (64, 64), colour) for colour in ("red", "lime", "blue")]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=50)
    red, green, blue = Preprocessor(IMAGENET, LIMITS)(out.getvalue()).mean(axis=(1, 2))
    assert red > 1.5 and green < -1.5 and blue < -1.5  # normalised: pure red


# -- open(): the header alone ----------------------------------------------------------


def test_open_refuses_tiff_without_running_its_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import TiffImagePlugin

    def parse(self: object) -> None:
        raise AssertionError("the TIFF parser ran on a client's bytes")

    data = encode(Image.new("RGB", (8, 8)), "TIFF")
    monkeypatch.setattr(TiffImagePlugin.TiffImageFile, "_open", parse)
    with pytest.raises(UnsupportedMediaType) as info:
        Preprocessor(IMAGENET, LIMITS).open(data)
    assert "JPEG, PNG, WebP, BMP, GIF" in str(info.value.details)


def test_open_refuses_too_many_pixels_without_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def load(self: object) -> None:
        raise AssertionError("pixels decoded before the size check")

    data = encode(Image.new("L", (5000, 3000)), "PNG")
    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    with pytest.raises(ImageTooLarge, match=r"5000x3000 = 15000000 pixels; at most 10000000"):
        Preprocessor(IMAGENET, Limits(max_pixels=10_000_000)).open(data)


def test_open_reports_pixels_after_draft_and_a_cost(photos_dir: Path) -> None:
    pre = Preprocessor(IMAGENET, LIMITS)
    big = pre.open((photos_dir / "retina.jpg").read_bytes())
    assert big.decode_pixels == 706 * 706  # 1411x1411 in the header, decoded at 1/2 scale
    assert big.decode_pixels == big.image.size[0] * big.image.size[1]
    small = pre.open((photos_dir / "coffee.png").read_bytes())
    assert small.decode_pixels == 600 * 400
    assert small.cost_bytes >= 4 * small.decode_pixels  # RGB: 4 bytes a pixel at least
