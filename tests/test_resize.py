"""Resizing only the crop box equals torchvision's resize-then-crop, bit for bit."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.preprocess import Preprocessor
from service.repository import Preprocessing
from service.resize import (
    _RESAMPLE,
    _resample,
    axis_plan,
    center_crop_box,
    crop_resize,
    resized_size,
)
from tests.reference import (
    IMAGENET,
    LIMITS,
    encode,
    new_pipeline,
    old_pipeline,
    old_resize_crop,
)

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
        ours = crop_resize(image, case)
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
