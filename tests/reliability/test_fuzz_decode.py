"""Property tests of the decode path on random and mutated image bytes.

Property: ``Preprocessor(bytes)`` returns a finite float32 tensor of the model's input
shape, or raises a :class:`ServiceError` with a 4xx status. Any other exception, a
crash or a hang (Hypothesis deadline) fails. Bounded here by ``RESNET_SERVE_FUZZ_EXAMPLES``
(default 1000 per test); the long run is documented in README.md (Limits and errors).
"""

from __future__ import annotations

import os
import warnings
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.errors import ServiceError
from service.preprocess import Limits, Preprocessor
from service.repository import Preprocessing
from tests.reliability import images

EXAMPLES = int(os.environ.get("RESNET_SERVE_FUZZ_EXAMPLES", "1000"))
SPEC = Preprocessing(resize_size=40, crop_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
PREPROCESS = Preprocessor(SPEC, Limits(max_pixels=4_000_000))
SEEDS = [
    *images.ODD_VALID.values(),
    images.encode(images.photo_like(), "JPEG", quality=90),
    images.encode(images.photo_like(), "PNG"),
    images.encode(images.photo_like(), "GIF"),
    images.png_claiming(5000, 5000),
]
FUZZ = settings(
    max_examples=EXAMPLES,
    # A hang detector, not a speed target: one small image never takes seconds.
    deadline=timedelta(seconds=5),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def check(data: bytes) -> None:
    try:
        with warnings.catch_warnings():
            # Pillow warns on some corrupt metadata; a warning is not a failure.
            warnings.simplefilter("ignore")
            tensor = PREPROCESS(data)
    except ServiceError as error:
        assert 400 <= error.status < 500, error
        assert error.message
        return
    assert tensor.shape == PREPROCESS.input_shape
    assert tensor.dtype == np.float32
    assert np.isfinite(tensor).all()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real image with a few bytes flipped, cut, inserted or duplicated."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "cut", "insert", "truncate", "repeat"]))
        if op == "flip":
            data[at] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[at : at + draw(st.integers(1, 64))]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "truncate":
            del data[at:]
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 256))]
    return bytes(data)


@pytest.mark.slow
@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes_are_refused_with_4xx(data: bytes) -> None:
    check(data)


@pytest.mark.slow
@FUZZ
@given(
    st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"RIFF", b"BM"]).flatmap(
        lambda magic: st.binary(max_size=1024).map(lambda rest: magic + rest)
    )
)
def test_random_bytes_behind_a_real_magic_number_are_refused_with_4xx(data: bytes) -> None:
    check(data)


@pytest.mark.slow
@FUZZ
@given(mutated())
def test_mutated_real_images_decode_or_are_refused_with_4xx(data: bytes) -> None:
    check(data)


@pytest.mark.parametrize("name", list(images.ODD_VALID))
def test_every_odd_valid_image_decodes(name: str) -> None:
    tensor = PREPROCESS(images.ODD_VALID[name])
    assert tensor.shape == (3, 32, 32) and np.isfinite(tensor).all()
