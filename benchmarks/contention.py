"""``python -m benchmarks.contention``: what decoding beside a CPU engine costs the engine.

The question behind ``cpu_turns`` (service/batching/turns.py): on a CPU, the engine's
intra-op threads and the decode threads share the cores. This runs the service's own
engine (``create_engine``, the server's settings) on one preprocessed batch in a loop,
in alternating slices: alone, then with ``--decoders`` threads decoding 640x480 JPEGs
with the service's preprocessor, each pausing ``--pause-ms`` between images (the pace of
a server at moderate load). Per slice it reports the engine's images/s and its own CPU
per image (the process's CPU minus the decoders' own thread CPU), so the engine's loss
is read against what the decodes themselves took. Results: printed, and written to
``<output-dir>/contention-<machine>-<date>.md``.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks import machine
from benchmarks.inputs import (
    DEFAULT_CACHE,
    DEFAULT_PHOTOS,
    SMALL_SIZE,
    Variant,
    make_jpegs,
    source_photos,
)
from benchmarks.options import RESULTS_DIR
from service.engines import create_engine
from service.preprocess import Limits, Preprocessor
from service.settings import Settings


class PacedDecoders:
    """``count`` threads decoding in a loop, each pausing between images."""

    def __init__(self, count: int, pre: Preprocessor, images: list[bytes], pause_s: float):
        self._stop = threading.Event()
        self._cpu_s: list[float] = []
        self._images = images
        self._pre = pre
        self._pause_s = pause_s
        self.decoded = 0
        self._threads = [threading.Thread(target=self._loop) for _ in range(count)]

    def _loop(self) -> None:
        started = time.thread_time()
        index = 0
        while not self._stop.is_set():
            self._pre(self._images[index % len(self._images)])
            index += 1
            self._stop.wait(self._pause_s)
        self._cpu_s.append(time.thread_time() - started)
        self.decoded += index

    def __enter__(self) -> PacedDecoders:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    @property
    def cpu_s(self) -> float:
        return sum(self._cpu_s)


def engine_slice(
    run: object, batch: np.ndarray, seconds: float, decoders: PacedDecoders | None
) -> tuple[float, float, float]:
    """(engine img/s, engine CPU-ms per image, decoders' share of the machine)."""
    assert callable(run)
    cpu0, wall0, images = time.process_time(), time.perf_counter(), 0
    if decoders is None:
        while time.perf_counter() - wall0 < seconds:
            run(batch)
            images += batch.shape[0]
        wall, cpu, side = time.perf_counter() - wall0, time.process_time() - cpu0, 0.0
    else:
        with decoders:
            while time.perf_counter() - wall0 < seconds:
                run(batch)
                images += batch.shape[0]
        wall, cpu, side = time.perf_counter() - wall0, time.process_time() - cpu0, decoders.cpu_s
    return images / wall, (cpu - side) * 1000 / images, side / wall / machine.cores()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--repository", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--decoders", type=int, default=2)
    parser.add_argument("--pause-ms", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)

    entry, version = Variant(args.model, None).resolve(args.repository)
    settings = Settings()
    engine = create_engine(entry.config, version, settings)
    engine.warmup(args.batch_size)
    pre = Preprocessor(entry.config.preprocessing, Limits(max_pixels=settings.max_image_pixels))
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_jpegs(source_photos(DEFAULT_PHOTOS), Path(tmp), SMALL_SIZE, 16)
        images = [p.read_bytes() for p in paths]
    batch = np.stack([pre(images[i % len(images)]) for i in range(args.batch_size)])
    rows: dict[str, list[tuple[float, float, float]]] = {"alone": [], "beside decodes": []}
    print(f"load average before: {machine.load_average()}", flush=True)
    for round_ in range(args.rounds):
        for arm in rows:
            paced = PacedDecoders(args.decoders, pre, images, args.pause_ms / 1000)
            got = engine_slice(engine.run, batch, args.seconds, paced if arm != "alone" else None)
            rows[arm].append(got)
            print(
                f"round {round_ + 1} {arm:<15} engine {got[0]:6.1f} img/s, "
                f"engine CPU {got[1]:5.1f} ms/img, decoders {got[2]:5.1%} of the machine",
                flush=True,
            )
    engine.close()
    med = {
        arm: [statistics.median(x[i] for x in got) for i in range(3)] for arm, got in rows.items()
    }
    alone, beside = med["alone"], med["beside decodes"]
    summary = (
        f"engine {args.model} b{args.batch_size}: beside {args.decoders} paced decoders "
        f"({beside[2]:.1%} of the machine), throughput {beside[0] / alone[0]:.2f}x alone, "
        f"engine CPU per image {beside[1] / alone[1]:.2f}x alone"
    )
    print(summary)
    command = "python -m benchmarks.contention " + " ".join(argv or sys.argv[1:])
    lines = [
        f"# Engine beside decoding — {machine.slug()}, {datetime.date.today()}",
        "",
        f"`{command}`; {machine.cpu_model()}, {machine.cores()} cores; load average "
        f"after: {machine.load_average()}.",
        "",
        "| arm | engine img/s | engine CPU-ms/img | decoders' share of the machine |",
        "|---|---|---|---|",
        *(f"| {arm} | {m[0]:.1f} | {m[1]:.1f} | {m[2]:.1%} |" for arm, m in med.items()),
        "",
        f"Medians of {args.rounds} interleaved slices of {args.seconds:.0f} s. {summary}.",
        "",
    ]
    args.output_dir.mkdir(parents=True, exist_ok=True)
    out = args.output_dir / f"contention-{machine.slug()}-{datetime.date.today()}.md"
    out.write_text("\n".join(lines))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
