"""Engines behind one protocol; the only code that turns an artifact into something runnable.

:func:`load_engine` is the single place an artifact is opened: the server (through
:func:`create_engine`), the export parity check and the int8 quantization report all
come through it, so what they check runs with the session options the server uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from service.engines.base import Engine
from service.repository import ENGINE_FORMAT, ArtifactFormat, ModelConfig, ModelVersion
from service.settings import Settings


def select_engine(config: ModelConfig, version: ModelVersion, settings: Settings) -> str:
    """The engine for this version: service override, then config, then artifacts present.

    The service-wide override applies only where that engine's artifact exists, so
    ``--engine torchscript`` does not break models exported to ONNX alone.
    """
    present = version.info.artifacts
    for wanted in (settings.engine, config.engine):
        if wanted and ENGINE_FORMAT[wanted] in present:
            return wanted
    if config.engine:
        raise ValueError(
            f"model {config.name} v{version.info.version}: config asks for engine "
            f"{config.engine!r} but has no {ENGINE_FORMAT[config.engine]} artifact"
        )
    for engine, fmt in ENGINE_FORMAT.items():
        if fmt in present:
            return engine
    raise ValueError(f"model {config.name} v{version.info.version} has no servable artifact")


@dataclass(frozen=True)
class EngineOptions:
    """The service settings an engine takes; the defaults are the server's defaults.

    Tools that run an artifact the way a plain ``serve`` would (the export parity
    check, the int8 report, the correctness gate) pass ``EngineOptions()``; the server
    passes :meth:`of` its settings (a test keeps the two defaults equal).
    """

    threads: int = 0
    spinning: bool = False
    max_batch_size: int = 32

    @classmethod
    def of(cls, settings: Settings) -> EngineOptions:
        return cls(
            threads=settings.intra_op_threads,
            spinning=settings.intra_op_spinning,
            max_batch_size=settings.max_batch_size,
        )


def load_engine(
    fmt: ArtifactFormat,
    artifact: Path,
    options: EngineOptions,
    *,
    providers: tuple[str, ...] | None = None,
    device: str = "auto",
    fp16: bool = False,
    trt_cache_dir: Path | None = None,
    max_batch_size: int | None = None,
    cuda_graphs: bool = False,
) -> Engine:
    """An engine for one artifact file, configured by ``options``.

    ``max_batch_size`` bounds TensorRT's optimisation profile and the CUDA graph sizes
    (default: ``options.max_batch_size``).
    """
    if fmt == "onnx":
        from service.engines.onnxruntime import OnnxRuntimeEngine

        return OnnxRuntimeEngine(
            artifact,
            providers=providers,
            device=device,
            threads=options.threads,
            spinning=options.spinning,
            fp16=fp16,
            trt_cache_dir=trt_cache_dir,
            max_batch_size=max_batch_size or options.max_batch_size,
            cuda_graphs=cuda_graphs,
        )
    from service.engines.torchscript import TorchScriptEngine

    return TorchScriptEngine(artifact, device=device, threads=options.threads, fp16=fp16)


def create_engine(config: ModelConfig, version: ModelVersion, settings: Settings) -> Engine:
    """The engine serving one model version: engine choice, providers and device applied."""
    fmt = ENGINE_FORMAT[select_engine(config, version, settings)]
    return load_engine(
        fmt,
        version.artifact_path(fmt),
        EngineOptions.of(settings),
        providers=settings.provider_list() or config.providers,
        device=config.device,
        fp16=config.fp16,
        trt_cache_dir=settings.trt_cache_dir / config.name / str(version.info.version),
        max_batch_size=max_batch_size_of(config, settings),
        cuda_graphs=config.cuda_graphs,
    )


#: What engines report when they run on the CPU (ONNX Runtime, TorchScript).
CPU_PROVIDERS = ("CPUExecutionProvider", "cpu")
#: Providers that mean "a GPU was asked for": if the engine runs another, it fell back.
_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def requested_gpu(config: ModelConfig, settings: Settings) -> str | None:
    """The GPU provider (or ``cuda``) a model asked for; None if it did not insist."""
    wanted = settings.provider_list() or config.providers or ()
    if wanted and wanted[0] in _GPU_PROVIDERS:
        return wanted[0]
    if config.device == "cuda":
        return "cuda"
    return None


def device_mismatch(config: ModelConfig, settings: Settings, running: str) -> str | None:
    """Why an engine running on ``running`` is not where its model asked to run, or None.

    ONNX Runtime silently falls back to the next provider when one fails to initialise
    (a missing CUDA library, no device visible): the session works, on the CPU.
    """
    wanted = requested_gpu(config, settings)
    if wanted is None:
        return None
    fell_back = running in CPU_PROVIDERS if wanted == "cuda" else running != wanted
    return f"asked for {wanted}, running on {running}" if fell_back else None


def max_batch_size_of(config: ModelConfig, settings: Settings) -> int:
    """The model's batch limit: its own, never above the service's."""
    return min(config.max_batch_size or settings.max_batch_size, settings.max_batch_size)


__all__ = [
    "CPU_PROVIDERS",
    "Engine",
    "EngineOptions",
    "create_engine",
    "device_mismatch",
    "load_engine",
    "max_batch_size_of",
    "requested_gpu",
    "select_engine",
]
