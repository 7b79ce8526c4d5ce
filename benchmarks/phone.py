"""The phone-photo workload's ceiling: how fast this machine decodes 12 MP JPEGs.

A 12 MP photo costs far more to decode than to classify (resnet18's engine runs a
224x224 crop), so end to end the service is bound by decoding, not by the engine: its
images/s are compared with the machine's *decode limit*, the service's own
:class:`~service.preprocess.Preprocessor` (decode, orient, resize, crop, normalise)
on a thread pool as wide as the server's decode pool, in-process, no HTTP.

The photos are made at run time by upscaling the shared photos to 4032x3024
(:func:`benchmarks.inputs.make_jpegs`), never committed.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from service.preprocess import Limits, Preprocessor
from service.repository import Preprocessing
from service.settings import Settings


@dataclass
class DecodeLimit:
    width: int
    height: int
    mean_bytes: int
    threads: int
    images: int
    images_per_s: float
    #: This process's CPU time per image over the pool run (all threads).
    cpu_ms_per_image: float


def decode_limit(
    paths: list[Path], spec: Preprocessing, settings: Settings, *, images: int
) -> DecodeLimit:
    """``images`` photos (the set repeated) through the preprocessor on all decode threads."""
    pre = Preprocessor(spec, Limits(max_pixels=settings.max_image_pixels))
    blobs = [p.read_bytes() for p in paths]
    pre(blobs[0])  # the first call pays Pillow's plugin loading
    threads = settings.effective_decode_threads()
    count = max(images, threads)
    with ThreadPoolExecutor(threads) as pool:
        cpu0, t0 = time.process_time(), time.perf_counter()
        list(pool.map(pre, (blobs[i % len(blobs)] for i in range(count))))
        wall_s, cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
    with Image.open(paths[0]) as first:
        width, height = first.size
    return DecodeLimit(
        width=width,
        height=height,
        mean_bytes=sum(len(b) for b in blobs) // len(blobs),
        threads=threads,
        images=count,
        images_per_s=count / wall_s,
        cpu_ms_per_image=cpu_s / count * 1000,
    )
