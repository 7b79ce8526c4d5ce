"""Odd, broken and hostile images, generated with Pillow (no binaries in the repo)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def photo_like(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    """Noise with a gradient: compresses like a photo, not like a flat colour."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, width, dtype=np.float32)[None, :, None]
    noise = rng.integers(0, 55, (height, width, 3)).astype(np.float32)
    return Image.fromarray((ramp + noise).astype(np.uint8))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A ~60-byte PNG whose header claims ``width x height``: a decompression bomb."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + png_chunk(b"IEND", b"")
    )


def corrupt_idat(data: bytes) -> bytes:
    """Flip bytes inside the first IDAT chunk's compressed data (CRC left stale)."""
    out = bytearray(data)
    start = out.find(b"IDAT") + 4
    for offset in range(8, 16):
        out[start + offset] ^= 0xFF
    return bytes(out)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (40, 30), c) for c in ("red", "green", "blue")]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=40, loop=0)


def png_16bit() -> bytes:
    ramp = np.linspace(0, 65535, 48 * 32).reshape(32, 48).astype(np.uint16)
    image = Image.fromarray(ramp)
    assert image.mode == "I;16"
    return encode(image, "PNG")


def palette_with_transparency() -> bytes:
    image = photo_like().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return encode(image, "PNG", transparency=0)


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW on display
    return encode(photo_like(64, 32), "JPEG", exif=exif)


def animated_webp() -> bytes:
    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "blue")]
    return encode(frames[0], "WEBP", save_all=True, append_images=frames[1:])


#: Valid but unusual images: each must be classified (200).
ODD_VALID: dict[str, bytes] = {}


def _odd_valid() -> dict[str, bytes]:
    base = photo_like()
    return {
        "animated.gif": animated_gif(),
        "16bit.png": png_16bit(),
        "palette-transparent.png": palette_with_transparency(),
        "gray.jpg": encode(base.convert("L"), "JPEG"),
        "gray-alpha.png": encode(base.convert("LA"), "PNG"),
        "rgba.png": encode(base.convert("RGBA"), "PNG"),
        "cmyk.jpg": encode(base.convert("CMYK"), "JPEG"),
        "bilevel.png": encode(base.convert("1"), "PNG"),
        "photo.webp": encode(base, "WEBP"),
        "animated.webp": animated_webp(),
        "photo.bmp": encode(base, "BMP"),
        "progressive.jpg": encode(base, "JPEG", progressive=True),
        "1x1.png": encode(Image.new("RGB", (1, 1), "white"), "PNG"),
        "1x1.jpg": encode(Image.new("RGB", (1, 1), "white"), "JPEG"),
        "exif-rotated.jpg": exif_rotated_jpeg(),
        "100x1.png": encode(Image.new("RGB", (100, 1), "gray"), "PNG"),
        "4000x2.png": encode(Image.new("RGB", (4000, 2), "gray"), "PNG"),
        "2x4000.png": encode(Image.new("RGB", (2, 4000), "gray"), "PNG"),
    }


ODD_VALID.update(_odd_valid())


#: The largest images under the default 40 MP pixel cap, in the modes that cost the most
#: memory per decoded pixel. Tiny on the wire (flat colour), huge once decoded.
def hostile_images() -> dict[str, bytes]:
    side = 6324  # 6324 x 6324 = 39.99 MP
    gray16 = Image.new("I;16", (side, side), 40000)
    rgba = Image.new("RGBA", (side, side), (10, 200, 30, 128))
    palette = Image.new("P", (side, side), 3)
    return {
        "gray16-40mp.png": encode(gray16, "PNG"),
        "rgba-40mp.png": encode(rgba, "PNG"),
        "palette-40mp.png": encode(palette, "PNG", transparency=3),
        "bilevel-40mp.png": encode(Image.new("1", (side, side), 1), "PNG"),
        "rgb-40mp.gif": encode(palette, "GIF"),
        "rgb-16383x2441.webp": encode(
            Image.new("RGB", (16383, 2441), (90, 90, 200)), "WEBP", lossless=True
        ),
        "photo-40mp.jpg": encode(Image.new("RGB", (side, side), (120, 60, 30)), "JPEG"),
    }
