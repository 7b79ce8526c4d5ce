"""``python -m benchmarks.decoders``: libjpeg-turbo bindings against Pillow's JPEG decoder.

The question (issue 13): would decoding with ``simplejpeg`` or ``PyTurboJPEG`` instead
of Pillow make the service cheaper per image without changing a single pixel? For each
decoder that is installed, on the benchmark's 640x480 JPEGs and on 12 MP ones, this
prints the CPU time per decode (median of interleaved rounds, so load that comes and
goes hits every decoder alike) and whether its RGB pixels equal Pillow's exactly.
Large images are also decoded at reduced DCT scale (Pillow's ``draft``, the others'
scaling options) at the same size, and compared the same way.

Measuring only: the service decodes with Pillow (``service/preprocess.py``).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from benchmarks.inputs import DEFAULT_PHOTOS, LARGE_SIZE, SMALL_SIZE, make_jpegs, source_photos

Pixels = npt.NDArray[np.uint8]
Decoder = Callable[[bytes, int], Pixels]  # (jpeg bytes, DCT scale denominator) -> HxWx3


def pillow(data: bytes, scale: int) -> Pixels:
    image = Image.open(io.BytesIO(data))
    if scale > 1:
        image.draft("RGB", (image.width // scale, image.height // scale))
    return np.asarray(image.convert("RGB"))


def _simplejpeg() -> Decoder | None:
    try:
        import simplejpeg
    except ImportError:
        return None

    def decode(data: bytes, scale: int) -> Pixels:
        if scale == 1:
            return simplejpeg.decode_jpeg(data, colorspace="RGB")  # type: ignore[no-any-return]
        width, height = simplejpeg.decode_jpeg_header(data)[:2]
        return simplejpeg.decode_jpeg(  # type: ignore[no-any-return]
            data, colorspace="RGB", min_width=width // scale, min_height=height // scale
        )

    return decode


def _turbojpeg() -> Decoder | None:
    try:
        import turbojpeg

        codec = turbojpeg.TurboJPEG()  # needs the system's libturbojpeg
    except (ImportError, RuntimeError, OSError):
        return None

    def decode(data: bytes, scale: int) -> Pixels:
        factor = (1, scale) if scale > 1 else None
        return codec.decode(  # type: ignore[no-any-return]
            data, pixel_format=turbojpeg.TJPF_RGB, scaling_factor=factor
        )

    return decode


def compare(blobs: list[bytes], scale: int, rounds: int, max_s: float) -> list[str]:
    """One printed line per decoder: CPU ms per decode, and bit-identical or not."""
    decoders: dict[str, Decoder] = {"pillow": pillow}
    for name, make in (("simplejpeg", _simplejpeg), ("pyturbojpeg", _turbojpeg)):
        found = make()
        if found is not None:
            decoders[name] = found
    reference = [pillow(b, scale) for b in blobs]
    identical = {
        name: all(np.array_equal(d(b, scale), r) for b, r in zip(blobs, reference, strict=True))
        for name, d in decoders.items()
    }
    times: dict[str, list[float]] = {name: [] for name in decoders}
    until = time.monotonic() + max_s
    for _ in range(rounds):  # interleaved: every round runs every decoder once
        for name, decode in decoders.items():
            started = time.thread_time()
            for blob in blobs:
                decode(blob, scale)
            times[name].append((time.thread_time() - started) / len(blobs))
        if time.monotonic() > until:
            break
    base = statistics.median(times["pillow"])
    lines = []
    for name, got in times.items():
        ms = statistics.median(got)
        lines.append(
            f"  {name:<12} {ms * 1000:7.2f} CPU-ms/decode  {base / ms:5.2f}x Pillow  "
            f"{'bit-identical' if identical[name] else 'DIFFERENT pixels'}  ({len(got)} rounds)"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decoders", description=__doc__)
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--max-seconds", type=float, default=20.0, help="per table")
    args = parser.parse_args(argv)
    photos = source_photos(args.photos)
    with tempfile.TemporaryDirectory(prefix="resnet-decoders-") as tmp_name:
        tmp = Path(tmp_name)
        small = [p.read_bytes() for p in make_jpegs(photos, tmp / "small", SMALL_SIZE, 16)]
        large = [p.read_bytes() for p in make_jpegs(photos, tmp / "large", LARGE_SIZE, 2)]
    for title, blobs, scale in (
        (f"{SMALL_SIZE[0]}x{SMALL_SIZE[1]}, full scale", small, 1),
        (f"{LARGE_SIZE[0]}x{LARGE_SIZE[1]}, full scale", large, 1),
        (f"{LARGE_SIZE[0]}x{LARGE_SIZE[1]}, DCT scale 1/4", large, 4),
    ):
        print(f"== {title} ({len(blobs)} images)", flush=True)
        print("\n".join(compare(blobs, scale, args.rounds, args.max_seconds)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
