"""What the V2 protocol says about the server and its models, once, as protocol messages.

Every answer is built here as the protocol's own message (``service_pb2``,
``model_config_pb2``, the generated code ``tritonclient`` ships); gRPC sends it as it is
and REST sends :func:`to_rest` of it, so the two doors can never describe a model
differently. Shapes follow Triton's conventions because Triton's clients and tools
(perf_analyzer, model analyzer) read them: the batch dimension is ``-1`` in metadata and
left out of the config's ``dims``, with ``max_batch_size`` saying how large it may be.
Both inputs are declared ``optional``: a request sends exactly one of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from prometheus_client import CollectorRegistry
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb

import service
from service.lifecycle import VersionState
from service.metrics import PREFIX
from service.pool import ServedModel
from service.v2.codec import (
    BYTES,
    FP32,
    IMAGE_INPUT,
    LOGITS_OUTPUT,
    PROBABILITIES_OUTPUT,
    TENSOR_INPUT,
)

SERVER_NAME = "resnet-serve"
#: Extensions served. ``model_repository``: the index always; load and unload when the
#: model control mode is explicit or poll (409 otherwise), with the admin key.
EXTENSIONS = (
    "binary_tensor_data",
    "classification",
    "model_configuration",
    "model_repository",
    "statistics",
)

#: Triton's platform names, so tools that switch on them recognise the artifact.
_PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "torchscript": "pytorch_libtorch"}
_CONFIG_TYPES = {BYTES: mc.TYPE_STRING, FP32: mc.TYPE_FP32}
_INTEGERS = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)


def to_rest(message: Any) -> dict[str, Any]:
    """A message in the JSON form Triton's REST server writes: proto field names, and
    64-bit integers as JSON numbers (``json_format`` writes them as strings)."""
    doc: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    _numbers_back(message.DESCRIPTOR, doc)
    return doc


def _numbers_back(descriptor: Any, doc: dict[str, Any]) -> None:
    for field in descriptor.fields:
        if field.name not in doc:
            continue
        value = doc[field.name]
        if field.message_type is not None:
            if field.message_type.GetOptions().map_entry:
                value_field = field.message_type.fields_by_name["value"]
                if value_field.message_type is not None:
                    for item in value.values():
                        _numbers_back(value_field.message_type, item)
                continue
            items = value if isinstance(value, list) else [value]
            for item in items:
                _numbers_back(field.message_type, item)
        elif field.type in _INTEGERS:
            doc[field.name] = [int(v) for v in value] if isinstance(value, list) else int(value)


def platform(served: ServedModel) -> str:
    engine = served.engine_name
    return _PLATFORMS.get(engine, engine)


def server_metadata() -> Any:
    return pb.ServerMetadataResponse(
        name=SERVER_NAME, version=service.__version__, extensions=list(EXTENSIONS)
    )


def _tensors(served: ServedModel) -> tuple[list[tuple[str, str, list[int]]], list[Any]]:
    """(inputs, outputs) as (name, datatype, per-item dims) (no batch dimension)."""
    classes = len(served.class_names)
    inputs = [
        # One encoded image per batch item; a flat [-1] shape is accepted too.
        (IMAGE_INPUT, BYTES, [1]),
        (TENSOR_INPUT, FP32, list(served.input_shape)),
    ]
    outputs = [(LOGITS_OUTPUT, FP32, [classes]), (PROBABILITIES_OUTPUT, FP32, [classes])]
    return inputs, outputs


def model_metadata(served: ServedModel, versions: Iterable[ServedModel]) -> Any:
    inputs, outputs = _tensors(served)

    def tensor(spec: tuple[str, str, list[int]]) -> Any:
        name, datatype, dims = spec
        return pb.ModelMetadataResponse.TensorMetadata(
            name=name, datatype=datatype, shape=[-1, *dims]
        )

    return pb.ModelMetadataResponse(
        name=served.name,
        versions=[str(v.number) for v in versions],
        platform=platform(served),
        inputs=[tensor(s) for s in inputs],
        outputs=[tensor(s) for s in outputs],
    )


def model_config(served: ServedModel, max_queue_delay_ms: float) -> Any:
    """A Triton ``ModelConfig``: what ``get_model_config`` clients read."""
    inputs, outputs = _tensors(served)
    return mc.ModelConfig(
        name=served.name,
        platform=platform(served),
        backend=served.engine_name,
        version_policy=mc.ModelVersionPolicy(
            specific=mc.ModelVersionPolicy.Specific(versions=[served.number])
        ),
        max_batch_size=served.max_batch_size,
        input=[
            mc.ModelInput(name=n, data_type=_CONFIG_TYPES[t], dims=d, optional=True)
            for n, t, d in inputs
        ],
        output=[mc.ModelOutput(name=n, data_type=_CONFIG_TYPES[t], dims=d) for n, t, d in outputs],
        dynamic_batching=mc.ModelDynamicBatching(
            max_queue_delay_microseconds=int(max_queue_delay_ms * 1000)
        ),
    )


def repository_index(versions: Iterable[VersionState]) -> Any:
    """Every version the pool knows, in Triton's states (READY, LOADING, UNLOADING,
    UNAVAILABLE) with the reason of one that does not serve."""
    index = pb.RepositoryIndexResponse()
    for v in versions:
        index.models.add(name=v.name, version=v.version, state=v.triton_state, reason=v.reason)
    return index


def model_statistics(models: Iterable[ServedModel], registry: CollectorRegistry) -> Any:
    """Triton's statistics, filled from the Prometheus metrics we already keep.

    Durations are the histograms' sums in nanoseconds. ``execution_count`` counts engine
    batches and ``inference_count`` the images in them; ``success`` counts answered
    requests of every door; ``last_inference`` is when the version's last batch ended
    (milliseconds since the epoch, 0 before its first). Fields we do not measure (cache,
    compute_input/output) are 0.
    """
    return pb.ModelStatisticsResponse(model_stats=[_statistics(m, registry) for m in models])


def _statistics(m: ServedModel, registry: CollectorRegistry) -> Any:
    labels = {"model": m.name, "version": str(m.number)}

    def total(sample: str, **extra: str) -> float:
        return _sum_samples(registry, f"{PREFIX}_{sample}", {**labels, **extra})

    def duration(histogram: str) -> Any:
        return pb.StatisticDuration(
            count=int(total(f"{histogram}_count")), ns=int(total(f"{histogram}_sum") * 1e9)
        )

    succeeded = total("requests_total", code="200")
    return pb.ModelStatistics(
        name=m.name,
        version=str(m.number),
        last_inference=m.batcher.last_batch_ms if m.batcher is not None else 0,
        inference_count=int(total("batch_size_sum")),
        execution_count=int(total("batch_size_count")),
        inference_stats=pb.InferStatistics(
            # The latency histogram has no status label: ns is every request's time.
            success=pb.StatisticDuration(
                count=int(succeeded), ns=int(total("request_duration_seconds_sum") * 1e9)
            ),
            fail=pb.StatisticDuration(count=int(total("requests_total") - succeeded), ns=0),
            queue=duration("queue_wait_seconds"),
            compute_infer=duration("inference_duration_seconds"),
        ),
    )


def _sum_samples(registry: CollectorRegistry, name: str, labels: dict[str, str]) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels`` (any door)."""
    return sum(
        sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )
