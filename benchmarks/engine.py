"""The engine limit: images/s of the bare engine, in-process, on preprocessed tensors.

This is the ceiling the service can at best reach on this machine: no HTTP, no decoding,
no queue. The engines are built by the service's own ``create_engine`` with the service's
settings, so the limit is measured on exactly what the server runs.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from service.engines import create_engine, select_engine
from service.repository import ENGINE_FORMAT, ModelEntry, ModelVersion
from service.settings import Settings


@dataclass(frozen=True)
class EngineBudget:
    """Each cell runs until it has both ``min_runs`` and ``min_time_s``, or hits a cap."""

    min_runs: int = 3
    min_time_s: float = 2.0
    max_runs: int = 200
    max_time_s: float = 8.0


@dataclass
class EngineRow:
    variant: str
    engine: str
    provider: str
    precision: str
    batch_size: int
    runs: int
    images_per_s: float
    batch_ms_p50: float
    batch_ms_min: float
    per_image_ms: float
    #: CPU time of this process per image: unlike wall time, barely moved by other work
    #: on a shared machine (the engine is all this process runs meanwhile).
    cpu_ms_per_image: float


def time_batches(run: Any, batch: npt.NDArray[np.float32], budget: EngineBudget) -> list[float]:
    """Seconds per call of ``run(batch)`` after one untimed warm-up call."""
    run(batch)
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < budget.max_runs:
        elapsed = time.perf_counter() - started
        if len(times) >= budget.min_runs and elapsed >= budget.min_time_s:
            break
        if elapsed >= budget.max_time_s and times:
            break
        t0 = time.perf_counter()
        run(batch)
        times.append(time.perf_counter() - t0)
    return times


def bench_engine(
    entry: ModelEntry,
    version: ModelVersion,
    engine_name: str,
    tensors: list[npt.NDArray[np.float32]],
    batch_sizes: list[int],
    settings: Settings,
    budget: EngineBudget,
    *,
    device: str | None = None,
    fp16: bool = False,
) -> tuple[list[EngineRow], str | None]:
    """Rows per batch size, or no rows and the reason this engine cannot run here."""
    if ENGINE_FORMAT[engine_name] not in version.info.artifacts:
        return [], f"no {ENGINE_FORMAT[engine_name]} artifact"
    config = entry.config
    if device is not None or fp16:
        config = config.model_copy(update={"device": device or config.device, "fp16": fp16})
    forced = settings.model_copy(update={"engine": engine_name})
    if select_engine(config, version, forced) != engine_name:
        return [], f"the service would not run {engine_name} for this model"
    try:
        engine = create_engine(config, version, forced)
    except (ImportError, RuntimeError) as exc:
        return [], f"{type(exc).__name__}: {exc}"
    name = f"{config.name}:{version.info.version}"
    rows = []
    try:
        for size in batch_sizes:
            batch = np.stack([tensors[i % len(tensors)] for i in range(size)])
            cpu_before = time.process_time()
            times = time_batches(engine.run, batch, budget)
            cpu_s = time.process_time() - cpu_before
            total = sum(times)
            rows.append(
                EngineRow(
                    variant=name,
                    engine=engine_name,
                    provider=engine.provider,
                    precision="fp16" if fp16 else version.info.precision,
                    batch_size=size,
                    runs=len(times),
                    images_per_s=size * len(times) / total,
                    batch_ms_p50=statistics.median(times) * 1000,
                    batch_ms_min=min(times) * 1000,
                    per_image_ms=total / (size * len(times)) * 1000,
                    cpu_ms_per_image=cpu_s / (size * (len(times) + 1)) * 1000,
                )
            )
            print(
                f"  engine {name} {engine_name:<11} batch {size:>3}: "
                f"{rows[-1].images_per_s:8.1f} img/s  p50 {rows[-1].batch_ms_p50:8.1f} ms",
                flush=True,
            )
    finally:
        engine.close()
    return rows, None


def rows_as_dicts(rows: list[EngineRow]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]
