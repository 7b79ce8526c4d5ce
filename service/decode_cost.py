"""How long an image takes to decode, estimated from its bytes before any pixel is decoded.

Decode memory grows with pixels (:mod:`service.preprocess`), but decode *time* can grow
without them: each scan of a progressive JPEG walks every coefficient block of its
components again, even a scan that codes nothing (one EOB run covers 32767 blocks in two
bytes), so a 1 MB file can hold thousands of full passes (libjpeg-turbo's LJT-01-004,
https://libjpeg-turbo.org/pmwiki/uploads/About/TwoIssueswiththeJPEGStandard.pdf). Measured
here (Pillow 13, libjpeg-turbo): ~0.35 ns per pixel per empty scan, so 2000 empty scans on
10 MP take 7.5 s against 0.33 s for the honest file. The unit of work is therefore the
*pixel-pass*: one walk over every pixel of the full-size (not draft-scaled) image.

* JPEG: passes = scans (SOS markers of the first image, its trailing data not counted).
* PNG: 1 pass, :data:`ADAM7_PASSES` when Adam7-interlaced. GIF, WebP, BMP: 1 pass (only
  the first frame of an animation is decoded).

Some of Pillow's parsers are Python loops over the bytes; they hold the GIL, so they stall
the event loop and every door with it, whatever thread they run in. Measured: 1 MB of
4-byte JPEG COM segments costs 1.2 s inside ``Image.open``, 1 MB of junk between JPEG
markers 0.33 s, 1 MB of empty GIF comment extensions 0.25 s, 100k empty PNG IDAT chunks
0.33 s of ``load``, an RLE8 BMP 1.6 s per megapixel. The walks here refuse such files
*before* Pillow sees them, with one Python step per marker, chunk or block (never per byte:
entropy-coded data and junk are skipped by :mod:`re`, in C; ~1 ms per MB).

Bounds are what no real encoder writes: libjpeg, libjpeg-turbo and mozjpeg write 6 to 10
scans for their progressive default (mozjpeg's scan optimisation picks a subset of its
search script), Photoshop's progressive option offers 3 to 5 "scans". libjpeg-turbo itself
calls more than 500 scans "unreasonably large" (TurboJPEG's ``TJFLAG_LIMITSCANS`` sets
its scan limit to 500; its fuzzers and NVIDIA DALI use 500 too).
"""

from __future__ import annotations

import re
import struct
from typing import Final

from PIL import Image

from service.errors import BadImage, ImageTooCostly, NotAnImage

__all__ = [
    "ADAM7_PASSES",
    "DEFAULT_MAX_JPEG_SCANS",
    "MAX_GIF_BLOCKS",
    "MAX_GIF_JUNK_BYTES",
    "MAX_JPEG_HEADER_JUNK_BYTES",
    "MAX_JPEG_MARKERS",
    "MAX_PNG_CHUNKS",
    "check_decoder",
    "gif_blocks",
    "jpeg_scans",
    "passes_per_pixel",
    "png_passes",
]

#: libjpeg-turbo's own "unreasonably large number of scans" (TJFLAG_LIMITSCANS).
DEFAULT_MAX_JPEG_SCANS: Final = 500
#: Markers in one JPEG: real files carry under ~600 before the first scan (ICC profiles
#: split over at most 255 APP2 segments, extended XMP in 64 KiB APP1 segments, tables)
#: and a DHT or two per scan after it. Pillow parses those before the first scan in Python
#: (~5 us each measured), so this also bounds the time ``Image.open`` can take (~20 ms).
MAX_JPEG_MARKERS: Final = 4096
#: Bytes between markers before the first scan (fill bytes, junk). libjpeg warns about any;
#: Pillow skips them one Python step per byte (0.33 us each measured).
MAX_JPEG_HEADER_JUNK_BYTES: Final = 64 * 1024
#: Chunks in one PNG frame. libpng writes 8 KiB IDAT chunks (4096 for a 32 MiB file),
#: row-by-row writers one per row (6324 for a 40 MP square). Pillow reads each in Python
#: (~3 us measured), so this bounds that to ~50 ms.
MAX_PNG_CHUNKS: Final = 16384
#: Extension sub-blocks before a GIF's first image: real files carry a loop count, a
#: frame delay, comments, an ICC profile or XMP in 255-byte sub-blocks (1 MiB of them is
#: ~4100). Pillow reads each in Python (~0.7 us measured; 1 MB of empty comment
#: extensions took 0.25 s of ``Image.open``).
MAX_GIF_BLOCKS: Final = 8192
#: Junk bytes between GIF blocks, which Pillow skips one Python step at a time.
MAX_GIF_JUNK_BYTES: Final = 64 * 1024
#: Pixel-passes per pixel of an Adam7 PNG. Pillow decodes the seven sub-images and
#: scatters them; measured 1.05-1.1x the same image not interlaced, counted as 2 (rounded up).
ADAM7_PASSES: Final = 2

_SOI, _EOI, _SOS, _TEM = 0xD8, 0xD9, 0xDA, 0x01
#: The next marker: 0xFF, then anything but a stuffed zero, a restart marker or more fill.
#: In entropy-coded data every 0xFF is followed by 0x00 or RSTn, so a match there is real.
_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: A GIF block's first byte: extension, image descriptor, trailer.
_GIF_BLOCK = re.compile(rb"[\x21\x2c\x3b]")
_GIF_EXTENSION = 0x21
_SEGMENT_LENGTH = struct.Struct(">H")
_CHUNK_HEAD = struct.Struct(">I4s")


def passes_per_pixel(data: bytes | bytearray, *, max_jpeg_scans: int) -> int:
    """Pixel-passes per pixel, from the bytes alone: call it *before* ``Image.open``.

    Raises :class:`ImageTooCostly` (or :class:`BadImage`) for structures no encoder
    writes, before Pillow's Python parsers walk them.
    """
    if data[:3] == b"\xff\xd8\xff":  # JPEG and MPO
        return max(1, jpeg_scans(data, max_scans=max_jpeg_scans))
    if data.startswith(_PNG_SIGNATURE):
        return png_passes(data)
    if data.startswith((b"GIF87a", b"GIF89a")):
        gif_blocks(data)
    return 1


def check_decoder(image: Image.Image) -> None:
    """Refuse what Pillow would decode in pure Python, holding the GIL for seconds.

    Only RLE-compressed BMP, among the allowed formats: ``BmpRleDecoder`` runs a Python
    step per run or per padded pixel (1.6 s per megapixel measured), during which no
    other request, health probe included, is answered.
    """
    if any(tile[0] == "bmp_rle" for tile in getattr(image, "tile", ())):
        raise NotAnImage(
            "RLE-compressed BMP is not accepted: it is decoded in Python, ~1.6 s per "
            "megapixel; send an uncompressed BMP, PNG or JPEG",
            allowed="JPEG, PNG, WebP, uncompressed BMP, GIF",
        )


def jpeg_scans(data: bytes | bytearray, *, max_scans: int) -> int:
    """Scans of the first image in a JPEG stream (0 if its structure is broken).

    Walks marker to marker: a segment is skipped by its length (so a COM or APP payload
    holding 0xFFDA or 0xFFD9 bytes is not mistaken for a marker), entropy-coded data by
    :data:`_MARKER`. Stops at EOI: what follows (an MPO's next image, a phone's appended
    video) is never decoded. A broken structure returns early; Pillow reports it.
    """
    pos, scans, markers, junk = 2, 0, 0, 0
    while (found := _MARKER.search(data, pos)) is not None:
        start = found.start()
        if scans == 0:  # before the first scan, skipped bytes are junk Pillow walks
            junk += start - pos
            if junk > MAX_JPEG_HEADER_JUNK_BYTES:
                raise BadImage(
                    f"JPEG has over {MAX_JPEG_HEADER_JUNK_BYTES} bytes of junk between its "
                    "header markers; encoders write none",
                    max_junk_bytes=MAX_JPEG_HEADER_JUNK_BYTES,
                )
        markers += 1
        if markers > MAX_JPEG_MARKERS:
            raise ImageTooCostly(
                f"JPEG has over {MAX_JPEG_MARKERS} markers; real files have a few hundred at most",
                max_markers=MAX_JPEG_MARKERS,
            )
        code = data[start + 1]
        if code == _EOI:
            break
        if code in (_SOI, _TEM):  # standalone markers: no length
            pos = start + 2
            continue
        if start + 4 > len(data):
            break
        (length,) = _SEGMENT_LENGTH.unpack_from(data, start + 2)
        if length < 2:
            break
        if code == _SOS:
            scans += 1
            if scans > max_scans:
                raise ImageTooCostly(
                    f"JPEG has more than {max_scans} scans; real encoders write 1 to a few "
                    f"dozen, and each scan is another pass over every pixel",
                    max_jpeg_scans=max_scans,
                )
        pos = start + 2 + length
    return scans


def png_passes(data: bytes | bytearray) -> int:
    """Pixel-passes per pixel of a PNG's first frame, after checking its chunk count.

    One Python step per chunk (the length field jumps over the payload). Stops at IEND, at
    the second frame of an APNG (Pillow decodes the first only), or where the data ends.
    """
    if not data.startswith(_PNG_SIGNATURE):
        return 1
    pos, chunks, interlaced, seen_data = len(_PNG_SIGNATURE), 0, False, False
    while pos + 8 <= len(data):
        length, kind = _CHUNK_HEAD.unpack_from(data, pos)
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise ImageTooCostly(
                f"PNG has over {MAX_PNG_CHUNKS} chunks before its end; encoders write one "
                "per 8 KiB of data or per row",
                max_png_chunks=MAX_PNG_CHUNKS,
            )
        if kind == b"IHDR" and length >= 13 and pos + 21 <= len(data):
            interlaced = data[pos + 8 + 12] == 1
        elif kind == b"IDAT":
            seen_data = True
        elif kind == b"IEND" or (kind == b"fcTL" and seen_data):
            break
        pos += 12 + length
    return ADAM7_PASSES if interlaced else 1


def gif_blocks(data: bytes | bytearray) -> int:
    """Extension sub-blocks before a GIF's first image, after checking their count.

    Pillow's ``Image.open`` walks them in Python, and junk between blocks one byte at a
    time; here junk is skipped by :data:`_GIF_BLOCK` (in C) and each sub-block is one step.
    The image data after the first descriptor is read by Pillow's C decoder.
    """
    if len(data) < 13:
        return 0
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # global colour table
    blocks, junk = 0, 0
    while (found := _GIF_BLOCK.search(data, pos)) is not None:
        junk += found.start() - pos
        if junk > MAX_GIF_JUNK_BYTES:
            raise BadImage(
                f"GIF has over {MAX_GIF_JUNK_BYTES} bytes of junk between its blocks; "
                "encoders write none",
                max_junk_bytes=MAX_GIF_JUNK_BYTES,
            )
        if data[found.start()] != _GIF_EXTENSION:
            break  # the first image, or the trailer: Pillow takes it from here
        pos = found.start() + 2  # introducer and label
        while pos < len(data):
            size = data[pos]
            pos += 1 + size
            blocks += 1
            if blocks > MAX_GIF_BLOCKS:
                raise ImageTooCostly(
                    f"GIF has over {MAX_GIF_BLOCKS} extension blocks before its first "
                    "image; real files have a handful",
                    max_gif_blocks=MAX_GIF_BLOCKS,
                )
            if size == 0:
                break
    return blocks
