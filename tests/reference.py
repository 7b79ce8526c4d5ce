"""Shared by the decode tests: the ImageNet recipe, an encoder, and the decode path as it was
before bounded-memory decoding (commit acc9a3f), which the new paths must equal."""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

from service.preprocess import Limits, OpenedImage, Preprocessor
from service.repository import Preprocessing
from service.resize import _RESAMPLE, center_crop_box, resized_size

IMAGENET = Preprocessing(
    resize_size=256,
    crop_size=224,
    interpolation="bilinear",
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
)
LIMITS = Limits(max_pixels=40_000_000)


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **kwargs)
    return out.getvalue()


def old_to_rgb(image: Image.Image) -> Image.Image:
    """The conversion service.preprocess used before (commit acc9a3f), for reference."""
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
        opened = OpenedImage(Image.open(io.BytesIO(data)), "PNG", 0, 0, 0)
    return np.asarray(pre.crop_image(opened))
