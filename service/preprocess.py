"""Image bytes -> the model's input tensor (float32 CHW, normalised), in bounded memory.

Two calls, so that the caller can budget memory before any pixel is decoded:

* :meth:`Preprocessor.open` reads the header only (format allow-list, pixel cap, JPEG draft
  scale) and returns an :class:`OpenedImage` whose ``cost_bytes`` bounds the extra memory
  that decoding it takes. A small file that claims to be 100000x100000 costs nothing.
* :meth:`Preprocessor.decode` decodes, orients and converts (:mod:`service.imagemodes`),
  resizes only the centre-crop box (:mod:`service.resize`) and normalises.

The result is torchvision's ``ImageClassification`` on the RGB image (shorter side resized
with antialiasing, centre crop, [0, 1], normalise), pixel for pixel, so that predictions
through the service equal PyTorch eager on the same file. Decoding runs in a thread pool:
Pillow releases the GIL while decoding and resampling.

Peak memory of one decode is a small constant per decoded pixel (by mode, see
:func:`service.imagemodes.peak_bytes_per_pixel`) plus the resize's temporaries
(:func:`service.resize.resize_temp_bytes`), both known from the header;
benchmarks/decode_memory.py measures it against ``cost_bytes``. Whole-image copies are
avoided: grey images are resized before they become RGB, 16/32-bit grey is scaled in row
strips, alpha is dropped after the resize, orientation is applied only when the file asks
for it, and only the crop box is resampled (so a 40000x1 panorama costs no more than a
square photo).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt
from PIL import ExifTags, Image, ImageFile, UnidentifiedImageError

from service.batching import Collated, stack_arrays
from service.decode_cost import DEFAULT_MAX_JPEG_SCANS, check_decoder, passes_per_pixel
from service.errors import BadImage, ImageTooCostly, ImageTooLarge, NotAnImage
from service.imagemodes import orient_and_convert, peak_bytes_per_pixel, resampled_bytes_per_pixel
from service.repository import Preprocessing
from service.resize import center_crop_box, crop_resize, resize_temp_bytes, resized_size

__all__ = [
    "ALLOWED_FORMATS",
    "ALLOWED_FORMATS_TEXT",
    "DRAFT_MARGIN",
    "WORST_BYTES_PER_PIXEL",
    "WORST_FIXED_BYTES",
    "Collated",
    "Decoded",
    "Limits",
    "OpenedImage",
    "PendingJpeg",
    "Preprocessor",
    "center_crop_box",
    "resized_size",
    "stack_arrays",
    "worst_cost_bytes",
]

#: Formats we decode. Others (e.g. TIFF, PSD, EPS) widen the attack surface for no user need.
ALLOWED_FORMATS: frozenset[str] = frozenset({"JPEG", "PNG", "WEBP", "BMP", "GIF", "MPO"})
ALLOWED_FORMATS_TEXT = "JPEG, PNG, WebP, BMP, GIF"
#: The order Image.open tries them in (common first). Only these plugins parse the bytes.
_OPEN_ORDER = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "MPO")

# A truncated file must be an error, not a half-grey image classified with confidence.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Pillow's own decompression-bomb check (a warning, then an error at 2x its limit) runs inside
# Image.open, before our check, and silencing its warning per call needs warnings.catch_warnings,
# which is not thread-safe. We enforce Limits.max_pixels from the header ourselves, before any
# pixel is decoded, so Pillow's check is switched off once, here.
Image.MAX_IMAGE_PIXELS = None

#: Draft mode decodes a JPEG at 1/2, 1/4 or 1/8 scale inside libjpeg (DCT scaling), which
#: is several times faster for photos much larger than the model input. We only let it
#: scale down to at least DRAFT_MARGIN x the resize target, so the antialiased resize
#: that follows still averages several source pixels per output pixel; the measured
#: effect on the normalised input is small and bounded (see tests/test_preprocess.py).
DRAFT_MARGIN = 2

#: Decoder state, row buffers, strip temporaries and the output tensor, whatever the size
#: (measured: under 3 MiB for every case in benchmarks/decode_memory.py).
_FIXED_COST_BYTES = 8 * 1024 * 1024
#: A progressive JPEG keeps every DCT coefficient (2 bytes, up to 3 components) of the
#: full-size image while it decodes, whatever the draft scale.
_PROGRESSIVE_BYTES_PER_HEADER_PIXEL = 6
#: Worst-case bytes per pixel of any decode: WebP's (17, see imagemodes), above a 4-byte
#: mode plus its converted or rotated copy (8) plus a progressive JPEG's coefficients (6).
WORST_BYTES_PER_PIXEL = 17
#: The fixed cost plus the largest resize temporaries any image under a 40 MP-class cap
#: needs (a 32:1 image whose long axis is resampled whole: ~37 MiB), rounded up.
WORST_FIXED_BYTES = 64 * 1024 * 1024


#: Default bound on :attr:`OpenedImage.work`: a 40 MP image with 64 passes (libjpeg's
#: progressive default writes 10 scans, mozjpeg a subset of 64), ~2 s of decode here.
DEFAULT_MAX_DECODE_WORK = 40_000_000 * 64


@dataclass(frozen=True)
class Limits:
    """What :meth:`Preprocessor.open` refuses from the header (see :mod:`service.settings`)."""

    max_pixels: int
    max_jpeg_scans: int = DEFAULT_MAX_JPEG_SCANS
    max_decode_work: int = DEFAULT_MAX_DECODE_WORK


@dataclass(frozen=True)
class OpenedImage:
    """A validated header: what decoding will produce and what it may cost.

    ``image`` is Pillow's lazy image (no pixels yet); :meth:`Preprocessor.decode` consumes it
    and closes it. ``decode_pixels`` is width*height of what the decoder will produce (after
    JPEG draft scaling); ``cost_bytes`` is an upper bound on the peak extra memory of decoding
    it, for a caller that budgets memory across concurrent decodes. ``work`` estimates
    decode *time* in pixel-passes: full-size (header) pixels times the passes a decoder
    makes over them (JPEG scans, Adam7; :mod:`service.decode_cost`), for a caller that
    keeps long decodes from taking every decode thread (:mod:`service.pipeline.lanes`).
    """

    image: Image.Image
    format: str
    decode_pixels: int
    cost_bytes: int
    work: int


@dataclass(frozen=True)
class PendingJpeg:
    """A checked JPEG whose pixels are decoded later, with its whole batch, on a GPU.

    Only :mod:`service.preprocess_torch` makes these (``preprocess_device: cuda``); its
    ``collate`` decodes them in the engine thread. The bytes are a private copy.
    """

    data: bytearray


#: What a decode thread hands the batcher: the model's input, or a JPEG left for the GPU.
Decoded = npt.NDArray[np.float32] | PendingJpeg


def worst_cost_bytes(max_pixels: int) -> int:
    """An upper bound on ``OpenedImage.cost_bytes`` for any image under ``max_pixels``.

    A decode budget smaller than this could leave a valid image waiting forever, so the
    service refuses such settings at start-up.
    """
    return max_pixels * WORST_BYTES_PER_PIXEL + WORST_FIXED_BYTES


class Preprocessor:
    """Turns encoded bytes into one normalised CHW float32 array for one model."""

    def __init__(self, spec: Preprocessing, limits: Limits) -> None:
        self.spec = spec
        self.limits = limits
        # Shaped (3, 1, 1) to broadcast over a CHW image.
        self._mean = np.asarray(spec.mean, dtype=np.float32).reshape(3, 1, 1)
        self._std = np.asarray(spec.std, dtype=np.float32).reshape(3, 1, 1)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return 3, self.spec.crop_size, self.spec.crop_size

    def __call__(self, data: bytes | bytearray) -> npt.NDArray[np.float32]:
        return self.exact(self.open(data))

    def collate(self, items: Sequence[Decoded]) -> Collated:
        """The batch for the engine, built in the engine thread (so off the event loop)."""
        return stack_arrays(items)

    def open(self, data: bytes | bytearray) -> OpenedImage:
        """Header only: format, pixel cap, decode work and draft scale, and their costs."""
        if not data:
            raise BadImage(
                "empty image: the request contained a file with no bytes",
                allowed=ALLOWED_FORMATS_TEXT,
            )
        # Before Image.open: Pillow parses a JPEG's or PNG's header in Python, per marker.
        passes = passes_per_pixel(data, max_jpeg_scans=self.limits.max_jpeg_scans)
        try:
            image = Image.open(io.BytesIO(data), formats=_open_formats())
        except UnidentifiedImageError:
            raise NotAnImage("not a recognised image", allowed=ALLOWED_FORMATS_TEXT) from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:  # broken header
            raise BadImage(f"cannot read image header: {exc}") from None
        if image.format not in ALLOWED_FORMATS:  # a plugin may return a related format
            raise NotAnImage(
                f"image format {image.format} is not accepted", allowed=ALLOWED_FORMATS_TEXT
            )
        header_pixels = self._check_size(*image.size)
        check_decoder(image)
        work = self._check_work(header_pixels, passes)
        cost = _FIXED_COST_BYTES
        if image.format in ("JPEG", "MPO"):
            try:
                self._draft(image)
            except (OSError, ValueError) as exc:
                raise BadImage(f"cannot read image header: {exc}") from None
            if image.info.get("progressive") or image.info.get("progression"):
                cost += _PROGRESSIVE_BYTES_PER_HEADER_PIXEL * header_pixels
        width, height = image.size
        resize_bpp = resampled_bytes_per_pixel(image.mode)
        cost += peak_bytes_per_pixel(image, data) * width * height
        cost += resize_temp_bytes(width, height, self.spec, resize_bpp)
        return OpenedImage(image, image.format, width * height, cost, work)

    def decode(self, opened: OpenedImage) -> Decoded:
        """The image for the batcher; here always :meth:`exact` (a GPU backend may defer)."""
        return self.exact(opened)

    def exact(self, opened: OpenedImage) -> npt.NDArray[np.float32]:
        """Decode, orient, convert, resize the crop box and normalise; closes the image."""
        return self.to_tensor(self.crop_image(opened))

    def crop_image(self, opened: OpenedImage) -> Image.Image:
        """The upright 8-bit RGB centre crop the model sees (decode without normalising)."""
        image = opened.image
        try:
            image.seek(0)  # first frame of animated GIF / WebP
            image.load()
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
            return crop_resize(orient_and_convert(image, orientation), self.spec)
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise BadImage(f"corrupt or truncated {opened.format} image: {exc}") from None
        finally:
            image.close()  # frees the decoded pixels now, whoever still holds `opened`

    def to_tensor(self, image: Image.Image) -> npt.NDArray[np.float32]:
        """8-bit RGB crop -> normalised CHW float32: ``(x / 255 - mean) / std``.

        The same float32 operations, in the same order, as torchvision's ``to_tensor``
        then ``normalize``, so every value is bit-identical to it; done in place, a
        whole-array pass each (0.19 ms for 224x224 here, against 0.79 for the per-channel
        lookup table it replaces: ``np.take`` first widens the 8-bit indices to 64 bits).
        """
        hwc = np.asarray(image, dtype=np.uint8)
        chw = np.empty((3, hwc.shape[0], hwc.shape[1]), dtype=np.float32)
        np.copyto(chw, hwc.transpose(2, 0, 1), casting="unsafe")  # uint8 -> float32, exact
        np.divide(chw, np.float32(255.0), out=chw)
        np.subtract(chw, self._mean, out=chw)
        np.divide(chw, self._std, out=chw)
        return chw

    # -- helpers -----------------------------------------------------------------------
    def _check_size(self, width: int, height: int) -> int:
        if width < 1 or height < 1:
            raise BadImage(f"image has no pixels ({width}x{height})")
        if width * height > self.limits.max_pixels:
            raise ImageTooLarge(
                f"image is {width}x{height} = {width * height} pixels; "
                f"at most {self.limits.max_pixels} are accepted",
                max_pixels=self.limits.max_pixels,
            )
        return width * height

    def _check_work(self, header_pixels: int, passes: int) -> int:
        work = header_pixels * passes
        if work > self.limits.max_decode_work:
            raise ImageTooCostly(
                f"decoding this image is {header_pixels} pixels x {passes} passes = {work} "
                f"pixel-passes; at most {self.limits.max_decode_work} are accepted "
                "(a JPEG scan or an Adam7 interlace is a pass)",
                max_decode_work=self.limits.max_decode_work,
            )
        return work

    def _draft(self, image: Image.Image) -> None:
        """Ask libjpeg for a smaller decode when the image is far larger than needed."""
        width, height = image.size
        need = self.spec.resize_size * DRAFT_MARGIN
        short = min(width, height)
        if short < 2 * need:
            return  # draft could not scale by 2 without going below the margin
        # draft() picks the largest scale that keeps the image >= the requested size.
        scale = short / need
        mode = "RGB" if image.mode in ("RGB", "YCbCr") else image.mode
        image.draft(mode, (int(width / scale), int(height / scale)))


@cache
def _open_formats() -> tuple[str, ...]:
    """Allowed formats whose plugin this Pillow has (WebP is optional at build time)."""
    Image.init()  # imports the plugin modules; none of them sees our bytes
    return tuple(f for f in _OPEN_ORDER if f in Image.OPEN)
