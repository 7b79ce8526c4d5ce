"""The centre crop of a resized Pillow image, bit-identical to torchvision's resize-then-crop.

One job: given an image already in a mode we resample (L, RGB, RGBA or LA) and a model's
recipe, produce the 8-bit RGB centre crop that ``Resize(resize_size)`` followed by
``CenterCrop(crop_size)`` would, pixel for pixel, while resampling only the crop box. A
40000x1 panorama then costs no more than a square photo, and the memory a resize may take
(:func:`resize_temp_bytes`) is known from the header alone, before any pixel is decoded.

Exactness rests on how Pillow's C resize computes its filter taps (see :func:`axis_plan`)
and on running its two passes in the order the whole-image resize would (see
:func:`_resample`).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import cache, lru_cache

import numpy as np
from PIL import Image

from service.repository import Preprocessing

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}

#: Along an axis whose crop box is not exactly representable for Pillow (see axis_plan),
#: up to this many samples are resampled whole and then cropped, which is bit-identical to
#: resizing the whole image; only beyond (panoramas past ~30:1) is the inexact box used.
FULL_AXIS_MAX_SAMPLES = 8192
#: Axis plans remembered: photos come in a few sizes, and a plan's exact arithmetic
#: (Fractions) was 40 % of reading a 640x480 JPEG's header. Bounded, so a stream of odd
#: sizes only churns it.
PLAN_CACHE_SIZE = 1024


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """Shorter side to ``size``, longer side scaled and truncated, as torchvision does."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def center_crop_box(width: int, height: int, crop: int) -> tuple[int, int, int, int]:
    """torchvision's rounding of the crop offset, so crops match pixel for pixel."""
    left = round((width - crop) / 2.0)
    top = round((height - crop) / 2.0)
    return left, top, left + crop, top + crop


@dataclass(frozen=True)
class AxisPlan:
    """Resample ``[box0, box1)`` of one source axis to ``samples``, then keep
    ``[skip, skip + crop)``. ``exact`` says whether this equals resizing the whole axis."""

    resized: int
    box0: float
    box1: float
    samples: int
    skip: int
    exact: bool


@lru_cache(maxsize=PLAN_CACHE_SIZE)
def axis_plan(
    source: int, resized: int, offset: int, crop: int, full_max: int = FULL_AXIS_MAX_SAMPLES
) -> AxisPlan:
    """How to produce output samples ``[offset, offset + crop)`` of a ``source -> resized``
    resample along one axis, bit-identical to resampling the whole axis where possible.

    Pillow's C resize takes the box as 32-bit floats and computes the scale as
    ``(double)(box1 - box0) / samples`` and each tap centre as ``box0 + (i + 0.5) * scale``;
    the whole-image resize computes ``(i + offset + 0.5) * source / resized``. They agree bit
    for bit when every one of these numbers is exact, which holds when source/resized is a
    dyadic fraction (e.g. the shorter side to 256) and the box edges fit a float32. Otherwise
    a box edge is rounded to float32 (relative error ~6e-8), the filter weights move in
    their last bits, and about 1 output value in 300 differs by one grey level. So such an
    axis is resampled whole (cheap: it is at most ``full_max`` samples long) and cropped; only
    a longer one, an extreme panorama, takes the inexact box.
    """
    scale = Fraction(source, resized)
    box0, box1 = offset * scale, (offset + crop) * scale
    dyadic = scale.denominator & (scale.denominator - 1) == 0
    if dyadic and _is_float32(box0) and _is_float32(box1) and _is_float32(box1 - box0):
        return AxisPlan(resized, float(box0), float(box1), crop, 0, exact=True)
    if resized <= full_max:
        return AxisPlan(resized, 0.0, float(source), resized, offset, exact=True)
    # float32 rounding of the top edge may not pass the image edge: Pillow refuses that.
    top = min(float(np.float32(box1)), float(source))
    return AxisPlan(resized, float(np.float32(box0)), top, crop, 0, exact=False)


def _is_float32(value: Fraction) -> bool:
    return Fraction(float(np.float32(value))) == value


def resize_temp_bytes(width: int, height: int, spec: Preprocessing, bytes_per_pixel: int) -> int:
    """Upper bound on the resize's temporaries for an image of that size, either orientation.

    The first pass makes (samples_x x source rows) or, vertical first, (source columns x
    samples_y); the second (samples_x x samples_y); the crop and the RGB conversion that
    follow are at most that big.
    """
    worst = 0
    for w, h in ((width, height), (height, width)):
        rw, rh = resized_size(w, h, spec.resize_size)
        crop = spec.crop_size
        if rw < crop or rh < crop:  # padded path: whole resized image, then RGB and padding
            worst = max(worst, (bytes_per_pixel * 2 + 8) * max(rw, crop) * max(rh, crop))
            continue
        left, top, _, _ = center_crop_box(rw, rh, crop)
        sx = axis_plan(w, rw, left, crop).samples
        sy = axis_plan(h, rh, top, crop).samples
        worst = max(worst, bytes_per_pixel * (max(sx * h, w * sy) + 2 * sx * sy))
    return worst


def crop_resize(image: Image.Image, spec: Preprocessing) -> Image.Image:
    """The centre crop of the resized image, resampling only what the crop needs."""
    resample = _RESAMPLE[spec.interpolation]
    width, height = image.size
    rw, rh = resized_size(width, height, spec.resize_size)
    crop = spec.crop_size
    if rw < crop or rh < crop:
        return _pad_crop(image, (rw, rh), crop, resample)
    left, top, _, _ = center_crop_box(rw, rh, crop)
    x = axis_plan(width, rw, left, crop)
    y = axis_plan(height, rh, top, crop)
    out = _resample(image, x, y, resample)
    if out.size != (crop, crop):
        out = out.crop((x.skip, y.skip, x.skip + crop, y.skip + crop))
    return out if out.mode == "RGB" else out.convert("RGB")


def _resample(
    image: Image.Image, x: AxisPlan, y: AxisPlan, resample: Image.Resampling
) -> Image.Image:
    """The two passes of Pillow's resize, one call per axis, in the order Pillow would run
    them for the whole-image resize.

    Pillow rounds to 8 bits between its horizontal and vertical passes, so the order decides
    the last bit; one call per axis keeps it ours, not re-decided for the smaller box.
    Calling the core resize also skips ``Image.resize``'s premultiplication of RGBA and LA by
    alpha: torchvision drops alpha *before* resizing, and the core treats the four bands
    independently, so resampling RGBA and dropping alpha afterwards gives the same RGB as
    converting the whole image first, without the whole-image RGB copy.
    """
    core = image.im
    width, height = image.size
    passes = ["x", "y"]
    if _vertical_first(width, height, x.resized, y.resized):
        passes.reverse()
    for axis in passes:
        w, h = core.size
        if axis == "x" and (x.box0, x.box1, x.samples) != (0.0, float(w), w):
            core = core.resize((x.samples, h), resample, (x.box0, 0.0, x.box1, float(h)))
        if axis == "y" and (y.box0, y.box1, y.samples) != (0.0, float(h), h):
            core = core.resize((w, y.samples), resample, (0.0, y.box0, float(w), y.box1))
    return image._new(core)


def _vertical_first(width: int, height: int, out_width: int, out_height: int) -> bool:
    """Whether Pillow resizing (width, height) to (out_width, out_height) runs the vertical
    pass first: Pillow 13.0 does when the height shrinks by more than twice what the width
    does (src/libImaging/Resample.c); earlier versions never do. The probe tells which."""
    shrink_y = height - out_height
    return _pillow_may_run_vertical_first() and shrink_y > 0 and shrink_y > 2 * (width - out_width)


@cache
def _pillow_may_run_vertical_first() -> bool:
    probe = Image.frombytes("L", (9, 64), bytes((i * 97 + 13) % 251 for i in range(9 * 64)))
    bilinear = Image.Resampling.BILINEAR
    whole = probe.resize((7, 16), bilinear).tobytes()
    vertical_first = probe.resize((9, 16), bilinear).resize((7, 16), bilinear).tobytes()
    return whole == vertical_first


def _pad_crop(
    image: Image.Image, target: tuple[int, int], crop: int, resample: Image.Resampling
) -> Image.Image:
    """The crop is larger than the resized image: torchvision pads with zeros (rare: only
    when a model's resize size is below its crop size)."""
    image = image.convert("RGB")
    if target != image.size:
        image = image.resize(target, resample)
    width, height = image.size
    padded = Image.new("RGB", (max(width, crop), max(height, crop)))
    padded.paste(image, ((padded.width - width) // 2, (padded.height - height) // 2))
    return padded.crop(center_crop_box(*padded.size, crop))
