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


# -- decode time: files whose decode work grows without their pixels ---------------------


def progressive_jpeg(width: int, height: int, seed: int = 0, **options: object) -> bytes:
    """A photo-like progressive JPEG (Pillow/libjpeg-turbo's 10-scan script for RGB)."""
    return encode(photo_like(width, height, seed), "JPEG", progressive=True, **options)


def jpeg_scans(data: bytes) -> int:
    """SOS markers in a JPEG this module wrote (no COM/APP payloads that could hold 0xFFDA)."""
    return data.count(b"\xff\xda")


def with_empty_scans(jpeg: bytes, scans: int) -> bytes:
    """``jpeg`` (progressive) with ``scans`` more scans that code nothing, before its EOI.

    Each is an AC scan of the first component whose data is one EOB run per 32767 blocks
    (a 1-bit Huffman code for EOB14 plus 14 bits of run length), so it costs ~14 bytes yet
    makes the decoder walk every block of that component again: the LJT-01-004 pattern of
    the 860 KB files that once held every decode thread. libjpeg warns about the
    inconsistent progression and decodes it, unchanged.
    """
    sof = jpeg.index(b"\xff\xc2")
    height, width = struct.unpack(">HH", jpeg[sof + 5 : sof + 9])
    component = jpeg[sof + 10]
    eoi = jpeg.rindex(b"\xff\xd9")
    # DHT: AC table 3 (class 1), one code of length 1 for symbol 0xE0 (EOB run, 14 bits).
    dht = b"\xff\xc4" + struct.pack(">H", 2 + 1 + 16 + 1) + b"\x13" + b"\x01" + b"\0" * 15
    dht += b"\xe0"
    blocks = -(-width // 8) * -(-height // 8)
    bits = "0" + "1" * 14  # code, then run = 2**14 + (2**14 - 1) = 32767 blocks
    stream = bits * -(-blocks // 32767)
    stream += "1" * (-len(stream) % 8)  # pad the last byte with ones, as encoders do
    entropy = int(stream, 2).to_bytes(len(stream) // 8, "big").replace(b"\xff", b"\xff\x00")
    # SOS: 1 component (table 0 DC / 3 AC), Ss=1, Se=63, Ah=Al=0.
    sos = b"\xff\xda" + struct.pack(">HB", 8, 1) + bytes([component, 0x03, 1, 63, 0])
    return jpeg[:eoi] + dht + (sos + entropy) * scans + jpeg[eoi:]


def hostile_progressive_jpeg(scans: int = 3000) -> bytes:
    """~0.95 MB: a 2000x2000 progressive photo plus ``scans`` empty scans (the attack)."""
    return with_empty_scans(progressive_jpeg(2000, 2000, quality=80), scans)


def png_adam7(image: Image.Image) -> bytes:
    """``image`` (RGB) as an Adam7-interlaced PNG; Pillow writes only non-interlaced ones."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    height, width = pixels.shape[:2]
    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2))
    raw = bytearray()
    for x0, y0, dx, dy in (*passes, (0, 1, 1, 2)):
        sub = pixels[y0::dy, x0::dx]
        if sub.size:  # each row: filter type 0, then the row
            rows = np.concatenate(
                [np.zeros((sub.shape[0], 1), np.uint8), sub.reshape(sub.shape[0], -1)], axis=1
            )
            raw += rows.tobytes()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 1)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(bytes(raw)))
        + png_chunk(b"IEND", b"")
    )


def png_with_empty_idat_chunks(png: bytes, chunks: int) -> bytes:
    """``png`` with ``chunks`` zero-length IDAT chunks before its data (valid, 12 B each)."""
    first = png.index(b"IDAT") - 4
    return png[:first] + png_chunk(b"IDAT", b"") * chunks + png[first:]


def bmp_rle8(width: int, height: int) -> bytes:
    """An RLE8 BMP of runs of one pixel (Pillow decodes RLE in Python, per run)."""
    row = b"\x01\x05" * width + b"\x00\x00"
    pixels = row * height + b"\x00\x01"
    palette = b"".join(bytes([i, i, i, 0]) for i in range(256))
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    offset = 14 + len(info) + len(palette)
    head = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    return head + info + palette + pixels


def gif_with_comment_blocks(gif: bytes, blocks: int) -> bytes:
    """``gif`` with ``blocks`` empty comment extensions (3 bytes each) before its image."""
    flags = gif[10]
    start = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    return gif[:start] + b"\x21\xfe\x00" * blocks + gif[start:]
