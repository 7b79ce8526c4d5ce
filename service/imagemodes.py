"""A decoded Pillow image, turned upright and in a mode we resample, in bounded memory.

One job: whatever mode and EXIF orientation a file decodes to, hand the resize an image in
L, RGB, RGBA or LA (``RESIZED_AS_IS``), upright, with the RGB values torchvision's loaders
would give, and say from the header alone how much memory that takes. Whole-image copies
are avoided: grey stays grey until after the resize, 16/32-bit grey is scaled in tiles,
alpha is dropped after the resize (see service.resize), and of the source and its
converted copy only the smaller is transposed.
"""

from __future__ import annotations

import numpy as np
from PIL import ExifTags, Image

#: Modes resampled as they are: RGB, and RGBA/LA whose colour bands resample independently
#: of alpha (see service.resize._resample); grey-like modes become L first, anything else RGB.
RESIZED_AS_IS = frozenset({"RGB", "RGBA", "LA", "L"})
_TO_GREY = frozenset({"1", "I;16", "I;16B", "I;16L", "I"})

#: Peak bytes per decoded pixel = stored source + the converted copy (if any). Orientation
#: never adds to it: the smaller of source and copy is the one transposed (see orient_and_convert).
_PEAK_BYTES_PER_PIXEL = {"1": 2, "L": 1, "P": 5, "I;16": 3, "I": 5, "LA": 4, "RGB": 4, "RGBA": 4}
#: Any other mode (CMYK, YCbCr, PA, ...): its 4-byte source plus a 4-byte RGB copy.
_OTHER_PEAK_BYTES_PER_PIXEL = 8
#: Pixels per tile when scaling 16/32-bit grey: temporaries stay near 16 bytes per tile pixel.
_TILE_PIXELS = 256 * 1024

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


def resampled_bytes_per_pixel(mode: str) -> int:
    """Bytes per pixel of the image the resize sees: 1 for grey (resized as L), else 4."""
    return 1 if mode in _TO_GREY or mode == "L" else 4


#: Peak bytes per pixel of a WebP decode (see peak_bytes_per_pixel), rounded up.
WEBP_PEAK_BYTES_PER_PIXEL = 17


def peak_bytes_per_pixel(image: Image.Image, data: bytes | bytearray) -> int:
    """Peak bytes per decoded pixel of decoding, orienting and converting ``image``, from
    its header (and, for PNG, its chunk headers in ``data``)."""
    peak = _peak_bytes_per_pixel(image.mode)
    if image.mode in RESIZED_AS_IS and _may_rotate(image, data):
        peak *= 2  # no smaller copy to transpose: source and its transpose coexist
    if image.format == "WEBP":
        # Pillow decodes WebP through libwebp's animation decoder, which holds its RGBA
        # canvas and previous frame while Pillow copies the frame out (measured: 610 MiB
        # for 16383x2441, lossy or lossless; benchmarks/decode_memory.py).
        peak = max(peak, WEBP_PEAK_BYTES_PER_PIXEL)
    return peak


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


def orient_and_convert(image: Image.Image, orientation: int) -> Image.Image:
    """The image in a mode we resample (L, RGB, RGBA or LA), turned upright.

    Whichever of the source and its converted copy is smaller is transposed, so orienting
    never raises the peak above source + copy; the source is closed once copied.
    """
    method = _ORIENTATION.get(orientation)
    if image.mode in RESIZED_AS_IS:
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
