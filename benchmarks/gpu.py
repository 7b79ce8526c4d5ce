"""The GPU check's benchmark: engine limit, the service in-process, CPU vs GPU preprocessing.

Run by ``scripts/gpu-check.sh`` (which exports the model first); every cell is bounded in
time so the whole check fits its budget. Three tables, one run:

* engine limit: the bare engine on preprocessed tensors, batch 1..max (TorchScript fp16
  and fp32 on the device; ONNX Runtime with TensorRT fp16 or CUDA where the installed
  onnxruntime has them, said so where not);
* preprocessing: images/s of the exact CPU path on all cores against the torch backend
  (batched JPEG decode and resize on the device), on 640x480 JPEGs;
* the service: :class:`service.pipeline.Pipeline` driven in-process with JPEG bytes at high
  concurrency (no HTTP: uvicorn and FastAPI may be missing on a bare GPU host), with CPU
  and with GPU preprocessing, as a ratio of the engine limit.

``--device cpu`` runs the same code on CPU (the script's dry run), with tiny budgets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from benchmarks import machine
from benchmarks.engine import EngineBudget, bench_engine
from benchmarks.gpu_report import markdown
from benchmarks.inputs import DEFAULT_PHOTOS, SMALL_SIZE, make_jpegs, source_photos
from service.engines.ort_options import fixed_batch_sizes
from service.metrics import Metrics
from service.pipeline import EncodedImage, Inputs, Pipeline
from service.pipeline.local import LocalCall
from service.pool import ModelPool
from service.preprocess import Limits, Preprocessor
from service.preprocess_torch import TorchPreprocessor
from service.repository import ModelEntry, load_model
from service.settings import Settings


@dataclass(frozen=True)
class PreprocessRow:
    backend: str
    device: str
    images: int
    images_per_s: float


@dataclass(frozen=True)
class ServiceRow:
    engine: str
    preprocess: str
    concurrency: int
    images: int
    images_per_s: float
    latency_ms_p50: float
    latency_ms_p99: float


def engine_rows(
    entry: ModelEntry, device: str, max_batch: int, budget: EngineBudget, skipped: list[str]
) -> list[dict[str, Any]]:
    """Every engine the device can run here, through the service's own engine factory."""
    version = entry.default_version
    crop = entry.config.preprocessing.crop_size
    tensors = [torch.randn(3, crop, crop).numpy() for _ in range(4)]
    sizes = list(fixed_batch_sizes(max_batch))
    settings = Settings(repository=entry.path.parent, max_batch_size=max_batch, warmup=False)
    cells: list[tuple[str, str | None, bool, str]] = [("torchscript", device, False, "")]
    if device == "cuda":
        cells.insert(0, ("torchscript", device, True, ""))
        cells.append(("onnxruntime", device, True, _ort_gpu_providers(skipped)))
    else:
        cells.append(("onnxruntime", "cpu", False, "CPUExecutionProvider"))
    rows: list[dict[str, Any]] = []
    for engine, where, fp16, providers in cells:
        if engine == "onnxruntime" and not providers:
            continue
        forced = settings.model_copy(update={"providers": providers or None})
        found, reason = bench_engine(
            entry, version, engine, tensors, sizes, forced, budget, device=where, fp16=fp16
        )
        if reason:
            skipped.append(f"engine {engine} ({providers or where}, fp16={fp16}): {reason}")
        rows += [asdict(row) for row in found]
    return rows


def _ort_gpu_providers(skipped: list[str]) -> str:
    import onnxruntime as ort

    available = ort.get_available_providers()
    gpu = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
    if not gpu:
        skipped.append(
            f"ONNX Runtime on the GPU: onnxruntime {ort.__version__} offers only {available}; "
            "the CUDA/TensorRT providers need `pip install onnxruntime-gpu` (the `gpu` extra)"
        )
    return ",".join(gpu)


def preprocess_rows(
    entry: ModelEntry, jpegs: list[bytes], device: str, threads: int, batch: int
) -> list[PreprocessRow]:
    """Images/s of the exact CPU path (all decode threads) and of the torch backend."""
    limits = Limits(max_pixels=40_000_000)
    exact = Preprocessor(entry.config.preprocessing, limits)
    backend = TorchPreprocessor(entry.config.preprocessing, limits, device=device)
    backend.warmup()
    with ThreadPoolExecutor(threads) as pool:
        started = time.perf_counter()
        list(pool.map(exact, jpegs))
        cpu_s = time.perf_counter() - started
        started = time.perf_counter()
        items = list(pool.map(lambda d: backend.decode(backend.open(d)), jpegs))
        for i in range(0, len(items), batch):
            backend.collate(items[i : i + batch])
        if device == "cuda":
            torch.cuda.synchronize()
        torch_s = time.perf_counter() - started
    return [
        PreprocessRow(f"exact CPU path, {threads} threads", "cpu", len(jpegs), len(jpegs) / cpu_s),
        PreprocessRow(f"torch, batches of {batch}", device, len(jpegs), len(jpegs) / torch_s),
    ]


async def _drive(
    pipeline: Pipeline, name: str, jpegs: list[bytes], concurrency: int, seconds: float
) -> tuple[int, list[float], float]:
    """``concurrency`` clients sending one JPEG per request until ``seconds`` pass."""
    latencies: list[float] = []
    stop_at = time.monotonic() + seconds

    async def client(index: int) -> None:
        n = index
        while time.monotonic() < stop_at:
            data = jpegs[n % len(jpegs)]
            n += concurrency
            started = time.perf_counter()
            await pipeline.serve(LocalCall(Inputs(images=[EncodedImage(data)]), model=name))
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    return len(latencies), latencies, time.perf_counter() - started


def service_row(
    entry: ModelEntry,
    engine: str,
    device: str,
    fp16: bool,
    gpu_preprocess: bool,
    jpegs: list[bytes],
    args: argparse.Namespace,
) -> ServiceRow:
    """The whole request path in-process: decode threads, batcher, the real engine."""
    config = entry.config.model_copy(update={"device": device, "fp16": fp16, "engine": engine})
    threads = machine.cores()
    settings = Settings(
        repository=entry.path.parent,
        max_batch_size=args.max_batch,
        decode_threads=threads,
        max_queue_size=4 * args.concurrency,
        max_images_per_request=1,
    )
    pool = ModelPool([replace(entry, config=config)], settings, Metrics())
    served = pool.get(entry.config.name)
    if gpu_preprocess:
        served.preprocessor = TorchPreprocessor(
            config.preprocessing, Limits(40_000_000), device=device
        )
        served.preprocessor.warmup()
    pipeline = Pipeline(pool, settings, Metrics())

    async def run() -> tuple[int, list[float], float]:
        await pool.load()
        if served.status != "ready":
            raise RuntimeError(f"model failed to load: {served.error}")
        await _drive(pipeline, entry.config.name, jpegs, args.concurrency, args.warmup_s)
        try:
            return await _drive(pipeline, entry.config.name, jpegs, args.concurrency, args.cell_s)
        finally:
            await pool.stop(5)

    count, latencies, seconds = asyncio.run(run())
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return ServiceRow(
        engine=f"{engine} {served.provider}{' fp16' if fp16 else ''}",
        preprocess=f"torch on {device}" if gpu_preprocess else "exact CPU path",
        concurrency=args.concurrency,
        images=count,
        images_per_s=count / seconds,
        latency_ms_p50=quantiles[49] * 1000,
        latency_ms_p99=quantiles[98] * 1000,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="GPU check benchmark (see module docstring)")
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--images", type=int, default=512, help="JPEGs generated")
    parser.add_argument("--cell-s", type=float, default=10.0, help="seconds per service cell")
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--engine-s", type=float, default=2.0, help="seconds per engine cell")
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--stem", default="")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device visible to torch: run with --device cpu for a dry run")
        return 2
    entry = load_model(args.repository / args.model)
    with tempfile.TemporaryDirectory() as folder:
        paths = make_jpegs(source_photos(args.photos), Path(folder), SMALL_SIZE, args.images)
        jpegs = [path.read_bytes() for path in paths]
    skipped: list[str] = []
    budget = EngineBudget(min_runs=3, min_time_s=args.engine_s, max_time_s=2 * args.engine_s)
    engines = engine_rows(entry, args.device, args.max_batch, budget, skipped)
    threads = machine.cores()
    preprocess = preprocess_rows(entry, jpegs, args.device, threads, args.max_batch)
    fp16 = args.device == "cuda"
    service = []
    for gpu_preprocess in (False, True):
        try:
            service.append(
                service_row(entry, "torchscript", args.device, fp16, gpu_preprocess, jpegs, args)
            )
        except Exception as exc:  # reported in the table; the rest still runs
            skipped.append(f"service, gpu_preprocess={gpu_preprocess}: {type(exc).__name__}: {exc}")
    results = {
        "model": args.model,
        "device_name": torch.cuda.get_device_name(0)
        if args.device == "cuda"
        else machine.cpu_model(),
        "environment": {"torch": torch.__version__, "cores": threads, "device": args.device},
        "engine": engines,
        "preprocess": [asdict(row) for row in preprocess],
        "service": [asdict(row) for row in service],
        "skipped": skipped,
    }
    stem = args.stem or f"gpu-check-{args.device}-{machine.slug()}-{time.strftime('%Y-%m-%d')}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results)
    (args.out / f"{stem}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
