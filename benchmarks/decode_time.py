"""Time to refuse a hostile image from its bytes, against the time its decode took before.

"Before": what a decode thread spent on the file until now: Pillow's ``Image.open`` and
``load`` (for the JPEGs, the service's whole decode with the new bounds lifted, draft mode
included; draft scaling does not shorten the walk over each scan). Pillow's header and
PNG/BMP-RLE parsers are Python, so for those rows that time also held the GIL. "After": the
time :meth:`Preprocessor.open` takes to answer, before any pixel is decoded. Each decode runs
once (they take seconds), each refusal ``--repeat`` times (median). Single-threaded and
bounded (a few seconds in all); on a shared, loaded machine the decode figures are noisy.

Usage::

    python -m benchmarks.decode_time [--repeat 20]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import time
from collections.abc import Callable

from PIL import Image

from service.errors import ServiceError
from service.preprocess import Limits, Preprocessor
from service.repository import Preprocessing
from tests.reliability import images

SPEC = Preprocessing(
    crop_size=224, resize_size=256, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
)
BOUNDED = Preprocessor(SPEC, Limits(max_pixels=40_000_000))
UNBOUNDED = Preprocessor(
    SPEC, Limits(max_pixels=40_000_000, max_jpeg_scans=10**9, max_decode_work=10**15)
)


def cases() -> dict[str, bytes]:
    photo = images.progressive_jpeg(2000, 2000, quality=80)
    small = images.encode(images.photo_like(1000, 1000), "JPEG")
    png = images.encode(images.photo_like(1000, 1000), "PNG")
    return {
        "honest progressive 2000x2000 (10 scans)": photo,
        "hostile: + 3000 empty scans": images.with_empty_scans(photo, 3000),
        "JPEG 1000x1000 + 1 MB of empty COM segments": small[:2]
        + b"\xff\xfe\x00\x02" * 250_000
        + small[2:],
        "PNG 1000x1000 + 100k empty IDAT chunks": images.png_with_empty_idat_chunks(png, 100_000),
        "RLE8 BMP 1000x1000, runs of 1 pixel": images.bmp_rle8(1000, 1000),
        "GIF + 1 MB of empty comment extensions": images.gif_with_comment_blocks(
            images.animated_gif(), 333_000
        ),
    }


def pillow_load(data: bytes) -> None:
    with Image.open(io.BytesIO(data)) as image:
        image.load()


def seconds(job: Callable[[], object]) -> float:
    started = time.perf_counter()
    with contextlib.suppress(ServiceError):
        job()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)
    print("| file | bytes | decode (before) | open, bounded (after) | outcome |")
    print("|---|---|---|---|---|")
    for name, data in cases().items():
        if name.startswith(("honest", "hostile")):
            decode_s = seconds(lambda d=data: UNBOUNDED.exact(UNBOUNDED.open(d)))
        else:
            decode_s = seconds(lambda d=data: pillow_load(d))
        refuse_s = statistics.median(
            seconds(lambda d=data: BOUNDED.open(d)) for _ in range(args.repeat)
        )
        try:
            outcome = f"accepted, work {BOUNDED.open(data).work:,} pixel-passes"
        except ServiceError as error:
            outcome = f"{error.status} {error.code}"
        print(
            f"| {name} | {len(data):,} | {decode_s * 1e3:,.0f} ms | {refuse_s * 1e3:.2f} ms "
            f"| {outcome} |"
        )


if __name__ == "__main__":
    main()
