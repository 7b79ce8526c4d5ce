"""What the V2 protocol says about the server and its models, as plain dicts.

REST returns these dicts as JSON; gRPC parses the same dicts into the protocol's
messages, so the two doors can never describe a model differently. Shapes follow
Triton's conventions because Triton's clients and tools (perf_analyzer, model
analyzer) read them: the batch dimension is ``-1`` in metadata and left out of the
config's ``dims``, with ``max_batch_size`` saying how large it may be.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry

import service
from service.engines import select_engine
from service.metrics import PREFIX
from service.pool import ModelPool, ServedModel
from service.settings import Settings
from service.v2.codec import (
    BYTES,
    FP32,
    IMAGE_INPUT,
    LOGITS_OUTPUT,
    PROBABILITIES_OUTPUT,
    TENSOR_INPUT,
)

SERVER_NAME = "resnet-serve"
#: Extensions served in full. ``model_repository`` is not listed: of it only the index
#: is served (load and unload are not: the repository is fixed at start).
EXTENSIONS = ("binary_tensor_data", "classification", "model_configuration", "statistics")

#: Triton's platform names, so tools that switch on them recognise the artifact.
_PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "torchscript": "pytorch_libtorch"}
_TRITON_TYPES = {BYTES: "TYPE_STRING", FP32: "TYPE_FP32"}
#: Triton's model states in the repository index.
_STATES = {
    "loading": "LOADING",
    "ready": "READY",
    "failed": "UNAVAILABLE",
    "stopped": "UNAVAILABLE",
}


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": service.__version__, "extensions": list(EXTENSIONS)}


def server_ready(models: ModelPool, draining: bool) -> bool:
    """Ready as ``/health/ready`` is: loaded, not draining, at least one model serving."""
    return models.loaded and not draining and any(m.serving for m in models.all())


def tensor_specs(served: ServedModel) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(inputs, outputs) with their per-item dims (no batch dimension)."""
    size = served.entry.config.preprocessing.crop_size
    classes = len(served.entry.config.labels)
    inputs = [
        # One encoded image per batch item; a flat [-1] shape is accepted too.
        {"name": IMAGE_INPUT, "datatype": BYTES, "dims": [1]},
        {"name": TENSOR_INPUT, "datatype": FP32, "dims": [3, size, size]},
    ]
    outputs = [
        {"name": LOGITS_OUTPUT, "datatype": FP32, "dims": [classes]},
        {"name": PROBABILITIES_OUTPUT, "datatype": FP32, "dims": [classes]},
    ]
    return inputs, outputs


def platform(served: ServedModel, settings: Settings) -> str:
    engine = served.engine_name
    if not engine:  # not loaded yet: the engine it will run
        try:
            engine = select_engine(served.entry.config, served.version, settings)
        except Exception:
            return ""
    return _PLATFORMS.get(engine, engine)


def model_metadata(
    served: ServedModel, versions: Iterable[ServedModel], settings: Settings
) -> dict[str, Any]:
    inputs, outputs = tensor_specs(served)

    def metadata(spec: dict[str, Any]) -> dict[str, Any]:
        return {"name": spec["name"], "datatype": spec["datatype"], "shape": [-1, *spec["dims"]]}

    return {
        "name": served.name,
        "versions": [str(v.number) for v in versions],
        "platform": platform(served, settings),
        "inputs": [metadata(s) for s in inputs],
        "outputs": [metadata(s) for s in outputs],
    }


def model_config(served: ServedModel, settings: Settings) -> dict[str, Any]:
    """A Triton ``ModelConfig`` (JSON form): what ``get_model_config`` clients read."""
    inputs, outputs = tensor_specs(served)

    def config(spec: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": spec["name"],
            "data_type": _TRITON_TYPES[spec["datatype"]],
            "dims": spec["dims"],
        }

    return {
        "name": served.name,
        "platform": platform(served, settings),
        "backend": served.engine_name,
        "version_policy": {"specific": {"versions": [served.number]}},
        "max_batch_size": served.max_batch_size,
        "input": [config(s) for s in inputs],
        "output": [config(s) for s in outputs],
        "dynamic_batching": {
            "max_queue_delay_microseconds": int(settings.max_queue_delay_ms * 1000),
        },
    }


def repository_index(pool: ModelPool) -> list[dict[str, Any]]:
    return [
        {
            "name": m.name,
            "version": str(m.number),
            "state": _STATES.get(m.status, "UNAVAILABLE"),
            "reason": m.error or "",
        }
        for m in pool.all()
    ]


def model_statistics(models: Iterable[ServedModel], registry: CollectorRegistry) -> dict[str, Any]:
    """Triton's statistics shape, filled from the Prometheus metrics we already keep.

    Durations are the histograms' sums in nanoseconds. ``execution_count`` counts engine
    batches and ``inference_count`` the images in them; ``success`` counts answered
    requests of every door. Fields we do not measure (cache, compute_input/output) are 0.
    """
    return {"model_stats": [_statistics(m, registry) for m in models]}


def _statistics(m: ServedModel, registry: CollectorRegistry) -> dict[str, Any]:
    labels = {"model": m.name, "version": str(m.number)}

    def total(sample: str, **extra: str) -> float:
        return _sum_samples(registry, f"{PREFIX}_{sample}", {**labels, **extra})

    def duration(histogram: str) -> dict[str, int]:
        return {
            "count": int(total(f"{histogram}_count")),
            "ns": int(total(f"{histogram}_sum") * 1e9),
        }

    succeeded = total("requests_total", code="200")
    return {
        "name": m.name,
        "version": str(m.number),
        "last_inference": 0,
        "inference_count": int(total("batch_size_sum")),
        "execution_count": int(total("batch_size_count")),
        "inference_stats": {
            # The latency histogram has no status label: ns is every request's time.
            "success": {
                "count": int(succeeded),
                "ns": int(total("request_duration_seconds_sum") * 1e9),
            },
            "fail": {"count": int(total("requests_total") - succeeded), "ns": 0},
            "queue": duration("queue_wait_seconds"),
            "compute_infer": duration("inference_duration_seconds"),
        },
    }


def _sum_samples(registry: CollectorRegistry, name: str, labels: dict[str, str]) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels`` (any door)."""
    return sum(
        sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )
