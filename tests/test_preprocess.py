"""Preprocessing equals torchvision's recipe; odd modes become RGB; limits hold."""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image, ImageFile, ImageOps

from service.errors import BadImage, ImageTooLarge, UnsupportedMediaType
from service.preprocess import (
    _RESAMPLE,
    Limits,
    OpenedImage,
    Preprocessor,
    _resample,
    _to_grey,
    axis_plan,
    center_crop_box,
    resized_size,
)
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


# -- bounded-memory decode paths equal what they replace -------------------------------


def old_to_rgb(image: Image.Image) -> Image.Image:
    """The conversion this module used before (commit acc9a3f), for reference."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        gray = np.clip(array * (255.0 / peak), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def old_resize_crop(image: Image.Image, spec: Preprocessing) -> Image.Image:
    """Resize the whole image, then crop (the algorithm before crop-box resizing)."""
    target = resized_size(*image.size, spec.resize_size)
    if target != image.size:
        image = image.resize(target, _RESAMPLE[spec.interpolation])
    width, height = image.size
    if width < spec.crop_size or height < spec.crop_size:
        padded = Image.new("RGB", (max(width, spec.crop_size), max(height, spec.crop_size)))
        padded.paste(image, ((padded.width - width) // 2, (padded.height - height) // 2))
        image = padded
    return image.crop(center_crop_box(*image.size, spec.crop_size))


def old_pipeline(data: bytes, spec: Preprocessing) -> npt.NDArray[np.uint8]:
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    return np.asarray(old_resize_crop(old_to_rgb(image), spec))


def new_pipeline(data: bytes, spec: Preprocessing) -> npt.NDArray[np.uint8]:
    pre = Preprocessor(spec, LIMITS)
    opened = pre.open(data)
    if opened.format == "JPEG":  # the old path decoded drafts too; compare at full scale
        opened = OpenedImage(Image.open(io.BytesIO(data)), "PNG", 0, 0)
    return np.asarray(pre.crop_image(opened))


BILINEAR_AND_BICUBIC = [
    Preprocessing(**{**IMAGENET.model_dump(), "interpolation": name})
    for name in ("bilinear", "bicubic")
]


@pytest.mark.parametrize("spec", BILINEAR_AND_BICUBIC, ids=["bilinear", "bicubic"])
def test_crop_box_resize_equals_resize_then_crop_on_photos(
    photos_dir: Path, cifar_sample_dir: Path, spec: Preprocessing
) -> None:
    photos = sorted(p for p in photos_dir.iterdir() if p.suffix in (".png", ".jpg"))
    cifar = sorted(cifar_sample_dir.glob("*/*.jpg"))[::10]
    assert len(photos) >= 10 and len(cifar) >= 20
    for path in photos + cifar:
        data = path.read_bytes()
        np.testing.assert_array_equal(new_pipeline(data, spec), old_pipeline(data, spec), path.name)


@pytest.mark.parametrize("spec", BILINEAR_AND_BICUBIC, ids=["bilinear", "bicubic"])
def test_crop_box_resize_equals_resize_then_crop_on_random_sizes(spec: Preprocessing) -> None:
    rng = random.Random(11)
    noise = Image.fromarray(np.random.default_rng(11).integers(0, 256, (900, 900, 3), np.uint8))
    plans = {True: 0, False: 0}
    for _ in range(150):
        width = rng.randint(1, 900)
        height = (
            max(1, width // rng.choice([1, 1, 2, 3, 7, 30]))
            if rng.random() < 0.5
            else rng.randint(1, 900)
        )
        if rng.random() < 0.5:
            width, height = height, width
        resize, crop = rng.choice([(256, 224), (232, 224), (36, 32), (224, 224)])
        case = Preprocessing(**{**spec.model_dump(), "resize_size": resize, "crop_size": crop})
        image = noise.crop((0, 0, width, height))
        rw, rh = resized_size(width, height, resize)
        left = center_crop_box(rw, rh, crop)[0]
        plans[axis_plan(width, rw, left, crop).samples == crop] += 1
        ours = Preprocessor(case, LIMITS)._crop_resize(image)
        np.testing.assert_array_equal(
            np.asarray(ours),
            np.asarray(old_resize_crop(image, case)),
            f"{width}x{height} {resize}/{crop}",
        )
    assert min(plans.values()) > 20  # both the boxed and the whole-axis plan were exercised


def test_inexact_box_of_extreme_panoramas_is_within_two_levels() -> None:
    """Past FULL_AXIS_MAX_SAMPLES a non-dyadic axis takes a float32 box: bounded, measured."""
    rng = random.Random(5)
    noise = Image.fromarray(np.random.default_rng(5).integers(0, 256, (300, 900, 3), np.uint8))
    worst, differing, total = 0, 0, 0
    for _ in range(40):
        width, height = rng.randint(300, 900), rng.randint(20, 300)
        image = noise.crop((0, 0, width, height))
        for name in ("bilinear", "bicubic"):
            rw, rh = resized_size(width, height, 256)
            left, top, _, _ = center_crop_box(rw, rh, 224)
            x = axis_plan(width, rw, left, 224, full_max=0)
            y = axis_plan(height, rh, top, 224, full_max=0)
            ours = np.asarray(
                _resample(image, x, y, _RESAMPLE[name]).crop(
                    (x.skip, y.skip, x.skip + 224, y.skip + 224)
                )
            )
            spec = Preprocessing(**{**IMAGENET.model_dump(), "interpolation": name})
            diff = np.abs(ours.astype(int) - np.asarray(old_resize_crop(image, spec)).astype(int))
            worst, differing, total = (
                max(worst, diff.max()),
                differing + (diff > 0).sum(),
                total + diff.size,
            )
    assert worst <= 2, worst
    assert differing / total < 0.02, differing / total


@pytest.mark.parametrize("size", [(4000, 2), (2, 4000), (40000, 1), (1, 40000)])
def test_panoramas_are_classified(size: tuple[int, int]) -> None:
    ramp = np.tile(np.arange(size[0], dtype=np.uint32) % 256, (size[1], 1)).astype(np.uint8)
    data = encode(Image.fromarray(ramp).convert("RGB"), "PNG")
    tensor = Preprocessor(IMAGENET, LIMITS)(data)
    assert tensor.shape == (3, 224, 224) and np.isfinite(tensor).all()


def test_grey_resized_before_rgb_is_bit_identical() -> None:
    grey = Image.fromarray(np.random.default_rng(3).integers(0, 256, (333, 517), np.uint8))
    for name, resample in _RESAMPLE.items():
        box = (10.5, 3.25, 400.75, 300.0)
        late = np.asarray(grey.resize((224, 180), resample, box).convert("RGB"))
        early = np.asarray(grey.convert("RGB").resize((224, 180), resample, box))
        np.testing.assert_array_equal(late, early, name)


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
