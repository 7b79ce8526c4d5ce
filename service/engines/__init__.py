"""Engines behind one protocol; the only code that turns an artifact into something runnable.

:func:`load_engine` is the single place an artifact is opened: the server (through
:func:`create_engine`), the export parity check and the int8 quantization report all
come through it, so what they check runs with the session options the server uses.
"""

from __future__ import annotations

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


def load_engine(
    fmt: ArtifactFormat,
    artifact: Path,
    settings: Settings,
    *,
    providers: tuple[str, ...] | None = None,
    device: str = "auto",
    fp16: bool = False,
    trt_cache_dir: Path | None = None,
) -> Engine:
    """An engine for one artifact file, configured from the service settings."""
    if fmt == "onnx":
        from service.engines.onnxruntime import OnnxRuntimeEngine

        return OnnxRuntimeEngine(
            artifact,
            providers=providers,
            device=device,
            threads=settings.intra_op_threads,
            spinning=settings.intra_op_spinning,
            fp16=fp16,
            trt_cache_dir=trt_cache_dir,
        )
    from service.engines.torchscript import TorchScriptEngine

    return TorchScriptEngine(artifact, device=device, threads=settings.intra_op_threads, fp16=fp16)


def create_engine(config: ModelConfig, version: ModelVersion, settings: Settings) -> Engine:
    """The engine serving one model version: engine choice, providers and device applied."""
    fmt = ENGINE_FORMAT[select_engine(config, version, settings)]
    return load_engine(
        fmt,
        version.artifact_path(fmt),
        settings,
        providers=settings.provider_list() or config.providers,
        device=config.device,
        fp16=config.fp16,
        trt_cache_dir=settings.trt_cache_dir / config.name / str(version.info.version),
    )


__all__ = ["Engine", "create_engine", "load_engine", "select_engine"]
