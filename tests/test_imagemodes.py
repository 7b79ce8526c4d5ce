"""Every mode becomes the RGB the old conversion gave; orientation and 16-bit range hold."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from service.imagemodes import _to_grey
from service.preprocess import Preprocessor
from service.repository import Preprocessing
from tests.reference import IMAGENET, LIMITS, encode, new_pipeline, old_pipeline, old_to_rgb


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


def test_sixteen_bit_scaling_equals_the_float_formula_for_every_value() -> None:
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    old = np.asarray(old_to_rgb(Image.fromarray(values)))[:, :, 0]
    new = np.asarray(_to_grey(Image.fromarray(values)))
    np.testing.assert_array_equal(new, old)


@pytest.mark.parametrize("peak", [200, 70000])
def test_thirty_two_bit_grey_follows_the_old_rule(peak: int) -> None:
    values = np.linspace(-50, peak, 300 * 200).astype(np.int32).reshape(200, 300)
    image = Image.fromarray(values, "I")
    old = np.asarray(old_to_rgb(image))[:, :, 0]
    np.testing.assert_array_equal(np.asarray(_to_grey(image)), old)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "PT", "1", "CMYK", "L"])
def test_every_mode_equals_the_old_conversion(mode: str) -> None:
    rgba = np.random.default_rng(7).integers(0, 256, (300, 260, 4), np.uint8)
    image = Image.fromarray(rgba, "RGBA")
    if mode == "PT":  # palette with a transparent index
        image = image.convert("RGB").quantize(64)
        image.info["transparency"] = 3
    elif mode != "RGBA":
        image = image.convert(mode)
    data = encode(image, "PNG" if mode != "CMYK" else "JPEG")
    np.testing.assert_array_equal(new_pipeline(data, IMAGENET), old_pipeline(data, IMAGENET))


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("mode", ["RGB", "L", "P"])
def test_every_orientation_equals_exif_transpose(orientation: int, mode: str) -> None:
    base = Image.fromarray(
        np.random.default_rng(orientation).integers(0, 256, (300, 400, 3), np.uint8)
    )
    exif = Image.Exif()
    exif[0x0112] = orientation
    image = base.convert(mode) if mode != "P" else base.quantize(32)
    data = encode(image, "PNG", exif=exif)
    np.testing.assert_array_equal(new_pipeline(data, IMAGENET), old_pipeline(data, IMAGENET))
