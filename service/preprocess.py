"""Image bytes -> the model's input tensor (float32 CHW, normalised), in bounded memory.

Two calls, so that the caller can budget memory before any pixel is decoded:

* :meth:`Preprocessor.open` reads the header only (format allow-list, pixel cap, JPEG draft
  scale) and returns an :class:`OpenedImage` whose ``cost_bytes`` bounds the extra memory
  that decoding it takes. A small file that claims to be 100000x100000 costs nothing.
* :meth:`Preprocessor.decode` decodes, orients, converts, resizes only the centre-crop box
  and normalises.

The result is torchvision's ``ImageClassification`` on the RGB image (shorter side resized
with antialiasing, centre crop, [0, 1], normalise), pixel for pixel, so that predictions
through the service equal PyTorch eager on the same file. Decoding runs in a thread pool:
Pillow releases the GIL while decoding and resampling.

Peak memory of one decode is a small constant per decoded pixel (``_PEAK_BYTES_PER_PIXEL``)
plus the resize's temporaries, both known from the header; benchmarks/decode_memory.py
measures it against ``cost_bytes``. Whole-image copies are avoided: grey images are resized
before they become RGB, 16/32-bit grey is scaled in row strips, alpha is dropped after the
resize, orientation is applied only when the file asks for it, and only the crop box is
resampled (so a 40000x1 panorama costs no more than a square photo).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from functools import cache

import numpy as np
import numpy.typing as npt
from PIL import ExifTags, Image, ImageFile, UnidentifiedImageError

from service.errors import BadImage, ImageTooLarge, UnsupportedMediaType
from service.repository import Preprocessing

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

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}

#: Draft mode decodes a JPEG at 1/2, 1/4 or 1/8 scale inside libjpeg (DCT scaling), which
#: is several times faster for photos much larger than the model input. We only let it
#: scale down to at least DRAFT_MARGIN x the resize target, so the antialiased resize
#: that follows still averages several source pixels per output pixel; the measured
#: effect on the normalised input is small and bounded (see tests/test_preprocess.py).
DRAFT_MARGIN = 2

#: Bytes Pillow stores per pixel, by mode (multi-band 8-bit modes take 4).
_STORED_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I": 4, "F": 4}
#: Modes resampled as they are: RGB, and RGBA/LA whose colour bands resample independently
#: of alpha (see _resample); grey-like modes become L first, anything else RGB.
_RESIZED_AS_IS = frozenset({"RGB", "RGBA", "LA", "L"})
_TO_GREY = frozenset({"1", "I;16", "I;16B", "I;16L", "I"})

#: Peak bytes per decoded pixel = stored source + the converted copy (if any). Orientation
#: never adds to it: the smaller of source and copy is the one transposed (see _orient).
_PEAK_BYTES_PER_PIXEL = {"1": 2, "L": 1, "P": 5, "I;16": 3, "I": 5, "LA": 4, "RGB": 4, "RGBA": 4}
#: Any other mode (CMYK, YCbCr, PA, ...): its 4-byte source plus a 4-byte RGB copy.
_OTHER_PEAK_BYTES_PER_PIXEL = 8
#: Decoder state, row buffers, strip temporaries and the output tensor, whatever the size
#: (measured: under 3 MiB for every case in benchmarks/decode_memory.py).
_FIXED_COST_BYTES = 8 * 1024 * 1024
#: A progressive JPEG keeps every DCT coefficient (2 bytes, up to 3 components) of the
#: full-size image while it decodes, whatever the draft scale.
_PROGRESSIVE_BYTES_PER_HEADER_PIXEL = 6
#: Worst-case bytes per pixel of any decode: a 4-byte mode plus its converted or rotated
#: copy (8), plus a progressive JPEG's coefficients (6), rounded up.
WORST_BYTES_PER_PIXEL = 16
#: The fixed cost plus the largest resize temporaries any image under a 40 MP-class cap
#: needs (a 32:1 image whose long axis is resampled whole: ~37 MiB), rounded up.
WORST_FIXED_BYTES = 64 * 1024 * 1024
#: Pixels per tile when scaling 16/32-bit grey: temporaries stay near 16 bytes per tile pixel.
_TILE_PIXELS = 256 * 1024
#: Along an axis whose crop box is not exactly representable for Pillow (see _axis_plan),
#: up to this many samples are resampled whole and then cropped, which is bit-identical to
#: resizing the whole image; only beyond (panoramas past ~30:1) is the inexact box used.
FULL_AXIS_MAX_SAMPLES = 8192

_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# 16-bit grey -> 8 bits as floor(v * 255 / 65535): 64 KiB, equal to the float formula this
# replaced for all 65536 values (a test checks), with no float copy of the image.
_SIXTEEN_TO_EIGHT = (np.arange(65536, dtype=np.uint32) * 255 // 65535).astype(np.uint8)


@dataclass(frozen=True)
class Limits:
    max_pixels: int


@dataclass(frozen=True)
class OpenedImage:
    """A validated header: what decoding will produce and what it may cost.

    ``image`` is Pillow's lazy image (no pixels yet); :meth:`Preprocessor.decode` consumes it
    and closes it. ``decode_pixels`` is width*height of what the decoder will produce (after
    JPEG draft scaling); ``cost_bytes`` is an upper bound on the peak extra memory of decoding
    it, for a caller that budgets memory across concurrent decodes.
    """

    image: Image.Image
    format: str
    decode_pixels: int
    cost_bytes: int


def worst_cost_bytes(max_pixels: int) -> int:
    """An upper bound on ``OpenedImage.cost_bytes`` for any image under ``max_pixels``.

    A decode budget smaller than this could leave a valid image waiting forever, so the
    service refuses such settings at start-up.
    """
    return max_pixels * WORST_BYTES_PER_PIXEL + WORST_FIXED_BYTES


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


class Preprocessor:
    """Turns encoded bytes into one normalised CHW float32 array for one model."""

    def __init__(self, spec: Preprocessing, limits: Limits) -> None:
        self.spec = spec
        self.limits = limits
        std = np.asarray(spec.std, dtype=np.float32)
        mean = np.asarray(spec.mean, dtype=np.float32)
        # Normalisation of an 8-bit value has only 256 outcomes per channel: a lookup
        # table gives the same float32 as (x / 255 - mean) / std, in a third of the time
        # of the arithmetic (0.24 vs 0.58 ms for 224x224 here).
        levels = np.arange(256, dtype=np.float32)
        self._table = np.stack([(levels / 255.0 - mean[c]) / std[c] for c in range(3)]).astype(
            np.float32
        )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return 3, self.spec.crop_size, self.spec.crop_size

    def __call__(self, data: bytes | bytearray) -> npt.NDArray[np.float32]:
        return self.decode(self.open(data))

    def open(self, data: bytes | bytearray) -> OpenedImage:
        """Header only: format, pixel cap and draft scale, and what decoding will cost."""
        if not data:
            raise BadImage(
                "empty image: the request contained a file with no bytes",
                allowed=ALLOWED_FORMATS_TEXT,
            )
        try:
            image = Image.open(io.BytesIO(data), formats=_open_formats())
        except UnidentifiedImageError:
            raise UnsupportedMediaType(
                "not a recognised image", allowed=ALLOWED_FORMATS_TEXT
            ) from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:  # broken header
            raise BadImage(f"cannot read image header: {exc}") from None
        if image.format not in ALLOWED_FORMATS:  # a plugin may return a related format
            raise UnsupportedMediaType(
                f"image format {image.format} is not accepted", allowed=ALLOWED_FORMATS_TEXT
            )
        header_pixels = self._check_size(*image.size)
        cost = _FIXED_COST_BYTES
        if image.format in ("JPEG", "MPO"):
            try:
                self._draft(image)
            except (OSError, ValueError) as exc:
                raise BadImage(f"cannot read image header: {exc}") from None
            if image.info.get("progressive") or image.info.get("progression"):
                cost += _PROGRESSIVE_BYTES_PER_HEADER_PIXEL * header_pixels
        width, height = image.size
        resize_bpp = 1 if image.mode in _TO_GREY or image.mode == "L" else 4
        peak = _peak_bytes_per_pixel(image.mode)
        if image.mode in _RESIZED_AS_IS and _may_rotate(image, data):
            peak *= 2  # no smaller copy to transpose: source and its transpose coexist
        cost += peak * width * height
        cost += resize_temp_bytes(width, height, self.spec, resize_bpp)
        return OpenedImage(image, image.format, width * height, cost)

    def decode(self, opened: OpenedImage) -> npt.NDArray[np.float32]:
        """Decode, orient, convert, resize the crop box and normalise; closes the image."""
        return self.to_tensor(self.crop_image(opened))

    def crop_image(self, opened: OpenedImage) -> Image.Image:
        """The upright 8-bit RGB centre crop the model sees (decode without normalising)."""
        image = opened.image
        try:
            image.seek(0)  # first frame of animated GIF / WebP
            image.load()
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
            return self._crop_resize(_orient_and_convert(image, orientation))
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise BadImage(f"corrupt or truncated {opened.format} image: {exc}") from None
        finally:
            image.close()  # frees the decoded pixels now, whoever still holds `opened`

    def to_tensor(self, image: Image.Image) -> npt.NDArray[np.float32]:
        """8-bit RGB crop -> normalised CHW float32, through the per-channel lookup table."""
        hwc = np.asarray(image, dtype=np.uint8)
        chw = np.empty((3, hwc.shape[0], hwc.shape[1]), dtype=np.float32)
        for channel in range(3):
            np.take(self._table[channel], hwc[:, :, channel], out=chw[channel])
        return chw

    # -- helpers -----------------------------------------------------------------------
    def _crop_resize(self, image: Image.Image) -> Image.Image:
        """The centre crop of the resized image, resampling only what the crop needs."""
        spec = self.spec
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


def _may_rotate(image: Image.Image, data: bytes | bytearray) -> bool:
    """Whether decoding may find an orientation to apply, known before decoding.

    PNG may carry EXIF or XMP (eXIf, or text chunks) after the pixel data, which Pillow reads
    only when it decodes; a scan of the chunk headers tells whether there are any. Other
    formats carry it in their header, which Pillow has read already.
    """
    if image.format == "PNG":
        return any(kind in _PNG_METADATA for kind in _png_chunk_types(data))
    try:
        return image.getexif().get(ExifTags.Base.Orientation, 1) in _ORIENTATION
    except (OSError, ValueError, SyntaxError, EOFError):
        return True  # decode() reads it again and answers the error; budget the worst


_PNG_METADATA = frozenset({b"eXIf", b"tEXt", b"zTXt", b"iTXt"})


def _png_chunk_types(data: bytes | bytearray) -> list[bytes]:
    """Chunk types of a PNG, from their 8-byte headers (no chunk body is read)."""
    kinds: list[bytes] = []
    at = 8  # after the signature
    while at + 8 <= len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        kinds.append(bytes(data[at + 4 : at + 8]))
        if data[at + 4 : at + 8] == b"IEND":
            break
        at += 12 + length
    return kinds


def _peak_bytes_per_pixel(mode: str) -> int:
    if mode in _PEAK_BYTES_PER_PIXEL:
        return _PEAK_BYTES_PER_PIXEL[mode]
    if mode.startswith("I;16"):
        return _PEAK_BYTES_PER_PIXEL["I;16"]
    return _OTHER_PEAK_BYTES_PER_PIXEL


def _orient_and_convert(image: Image.Image, orientation: int) -> Image.Image:
    """The image in a mode we resample (L, RGB, RGBA or LA), turned upright.

    Whichever of the source and its converted copy is smaller is transposed, so orienting
    never raises the peak above source + copy; the source is closed once copied.
    """
    method = _ORIENTATION.get(orientation)
    if image.mode in _RESIZED_AS_IS:
        return image if method is None else _transposed(image, method)
    to_grey = image.mode in _TO_GREY
    if method is not None and not to_grey:  # P, CMYK, ...: the 4-byte RGB copy is bigger
        image = _transposed(image, method)
        method = None
    converted = _to_grey(image) if to_grey else _to_rgb(image)
    image.close()
    return converted if method is None else _transposed(converted, method)


def _transposed(image: Image.Image, method: Image.Transpose) -> Image.Image:
    """``image`` turned by ``method``; the original's pixels are freed at once (as
    ``ImageOps.exif_transpose(image, in_place=True)`` does, which also allocates a copy)."""
    turned = image.transpose(method)
    image.close()
    return turned


def _to_rgb(image: Image.Image) -> Image.Image:
    """Palette, CMYK and other modes to 8-bit RGB; alpha is dropped as torchvision's loaders
    do. A palette's transparency only makes alpha, so it is dropped first: the colours are
    those of the RGBA route, without its whole-image RGBA copy (and without the warning
    Pillow gives when converting a palette with byte transparency straight to RGB)."""
    if image.mode == "P":
        image.info.pop("transparency", None)
    return image.convert("RGB")


def _to_grey(image: Image.Image) -> Image.Image:
    """1-bit, 16-bit and 32-bit grey to 8-bit L, in tiles (no whole-image temporaries).

    Pillow's convert clips 16-bit values to 255; we scale instead: I;16 as
    floor(v * 255 / 65535); mode I likewise when any value exceeds 255, else clipped to 0..255.
    """
    if image.mode == "1":
        return image.convert("L")
    width, height = image.size
    out = Image.new("L", (width, height))
    wide = image.mode.startswith("I;16") or image.getextrema()[1] > 255  # type: ignore[operator]
    cols = min(width, _TILE_PIXELS)
    rows = max(1, _TILE_PIXELS // cols)
    for top in range(0, height, rows):
        for left in range(0, width, cols):
            box = (left, top, min(left + cols, width), min(top + rows, height))
            tile = np.asarray(image.crop(box))
            if wide:
                grey = _SIXTEEN_TO_EIGHT[np.clip(tile, 0, 65535)]
            else:
                grey = np.clip(tile, 0, 255).astype(np.uint8)
            out.paste(Image.fromarray(grey, "L"), (left, top))
    return out


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
