"""Engines behind one protocol; :func:`create_engine` picks one for a model version."""

from __future__ import annotations

from service.engines.base import Engine
from service.repository import ENGINE_FORMAT, ModelConfig, ModelVersion
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


def create_engine(config: ModelConfig, version: ModelVersion, settings: Settings) -> Engine:
    engine = select_engine(config, version, settings)
    artifact = version.artifact_path(ENGINE_FORMAT[engine])
    if engine == "onnxruntime":
        from service.engines.onnxruntime import OnnxRuntimeEngine

        return OnnxRuntimeEngine(
            artifact,
            providers=settings.provider_list() or config.providers,
            device=config.device,
            threads=settings.intra_op_threads,
            spinning=settings.intra_op_spinning,
            fp16=config.fp16,
            trt_cache_dir=settings.trt_cache_dir / config.name / str(version.info.version),
        )
    from service.engines.torchscript import TorchScriptEngine

    return TorchScriptEngine(
        artifact, device=config.device, threads=settings.intra_op_threads, fp16=config.fp16
    )


__all__ = ["Engine", "create_engine", "select_engine"]
