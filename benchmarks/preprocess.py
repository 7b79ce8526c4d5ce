"""Preprocessing cost per image: decode, resize+crop, normalise, for small and large JPEGs.

Measured with the service's own :class:`~service.preprocess.Preprocessor`, one thread
(cost per image) and then the service's decode pool size (throughput), because on a
small CPU this stage competes with the engine for the same cores.
"""

from __future__ import annotations

import io
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from service.preprocess import Limits, Preprocessor
from service.repository import Preprocessing
from service.settings import Settings


@dataclass
class PreprocessRow:
    image_set: str
    width: int
    height: int
    mean_bytes: int
    images: int
    decode_ms: float
    resize_crop_ms: float
    normalise_ms: float
    total_ms_p50: float
    total_ms_mean: float
    threads: int
    images_per_s_threaded: float


def bench_preprocess(
    name: str,
    paths: list[Path],
    spec: Preprocessing,
    settings: Settings,
    *,
    passes: int,
    max_time_s: float,
) -> PreprocessRow:
    pre = Preprocessor(spec, Limits(max_pixels=settings.max_image_pixels))
    blobs = [p.read_bytes() for p in paths]
    pre(blobs[0])  # first call pays Pillow's plugin loading
    stages: list[tuple[float, float, float]] = []
    started = time.perf_counter()
    for index in range(passes * len(blobs)):
        if stages and time.perf_counter() - started > max_time_s:
            break
        data = blobs[index % len(blobs)]
        t0 = time.perf_counter()
        opened = pre.open(data)
        opened.image.load()  # decode: header, then pixels
        t1 = time.perf_counter()
        cropped = pre.crop_image(opened)  # orient, convert, resize the crop box
        t2 = time.perf_counter()
        pre.to_tensor(cropped)
        stages.append((t1 - t0, t2 - t1, time.perf_counter() - t2))
    totals = [sum(s) for s in stages]
    threads = settings.effective_decode_threads()
    count = max(len(stages), threads * 2)
    with ThreadPoolExecutor(threads) as pool:
        t0 = time.perf_counter()
        list(pool.map(pre, (blobs[i % len(blobs)] for i in range(count))))
        threaded = count / (time.perf_counter() - t0)
    with Image.open(io.BytesIO(blobs[0])) as first:
        width, height = first.size
    return PreprocessRow(
        image_set=name,
        width=width,
        height=height,
        mean_bytes=int(statistics.mean(len(b) for b in blobs)),
        images=len(stages),
        decode_ms=statistics.mean(s[0] for s in stages) * 1000,
        resize_crop_ms=statistics.mean(s[1] for s in stages) * 1000,
        normalise_ms=statistics.mean(s[2] for s in stages) * 1000,
        total_ms_p50=statistics.median(totals) * 1000,
        total_ms_mean=statistics.mean(totals) * 1000,
        threads=threads,
        images_per_s_threaded=threaded,
    )


def rows_as_dicts(rows: list[PreprocessRow]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]
