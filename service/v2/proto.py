"""The gRPC wire: the service's handler table and the inference messages.

The generated code comes from ``tritonclient.grpc`` (``service_pb2``), the maintained
package that ships the protocol's stubs; it carries no type hints, so the untyped
request and response handling stays here (and the descriptive messages in
:mod:`service.v2.metadata`), and the rest of ``service/v2`` sees typed values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2 as pb

from service.errors import BadRequest, TooManyImages
from service.v2.codec import (
    BYTES,
    FP32,
    MAX_INPUTS,
    MAX_RANK,
    OUTPUT_NAMES,
    InferRequest,
    InputTensor,
    Limits,
    OutputTensor,
    RequestedOutput,
    class_count,
    output_bytes,
    tensor_from_list,
    tensor_from_raw,
)

SERVICE = "inference.GRPCInferenceService"
#: The unary methods served, with their request and response types. ``ModelInfer``
#: takes its request as bytes: the pipeline parses it off the event loop, and a
#: malformed message becomes the client's INVALID_ARGUMENT, not gRPC's UNKNOWN.
#: Methods not listed (streaming, shared memory, trace, logging) answer UNIMPLEMENTED.
_METHODS: dict[str, tuple[Any, Any]] = {
    "ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse),
    "ServerReady": (pb.ServerReadyRequest, pb.ServerReadyResponse),
    "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse),
    "ServerMetadata": (pb.ServerMetadataRequest, pb.ServerMetadataResponse),
    "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse),
    "ModelConfig": (pb.ModelConfigRequest, pb.ModelConfigResponse),
    "ModelStatistics": (pb.ModelStatisticsRequest, pb.ModelStatisticsResponse),
    "RepositoryIndex": (pb.RepositoryIndexRequest, pb.RepositoryIndexResponse),
    "ModelInfer": (None, pb.ModelInferResponse),
    "RepositoryModelLoad": (pb.RepositoryModelLoadRequest, pb.RepositoryModelLoadResponse),
    "RepositoryModelUnload": (pb.RepositoryModelUnloadRequest, pb.RepositoryModelUnloadResponse),
}
#: Probes: never traced (a trace per probe drowns the real ones).
HEALTH_METHODS = ("ServerLive", "ServerReady", "ModelReady")


def generic_handler(handlers: dict[str, Callable[..., Any]]) -> grpc.GenericRpcHandler:
    """The service's handler table: each method with its (de)serializers."""
    table = {}
    for name, handler in handlers.items():
        request_type, response_type = _METHODS[name]
        table[name] = grpc.unary_unary_rpc_method_handler(
            handler,
            request_deserializer=None if request_type is None else request_type.FromString,
            response_serializer=response_type.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(SERVICE, table)


_CONTENTS = {BYTES: "bytes_contents", FP32: "fp32_contents"}


def parse_infer_request(raw: bytes) -> Any:
    """A ``ModelInferRequest`` from its wire bytes; malformed bytes are the client's 400."""
    try:
        return pb.ModelInferRequest.FromString(raw)
    except DecodeError as exc:
        raise BadRequest(f"malformed ModelInferRequest message: {str(exc)[:200]}") from None


def request_from_proto(message: Any, limits: Limits | None = None) -> InferRequest:
    """A ``ModelInferRequest`` as an :class:`InferRequest`.

    With ``raw_input_contents`` (what ``tritonclient.grpc`` sends), entry i holds input
    i's raw bytes and every input must use it; otherwise each input has typed contents.
    Counts are checked on the message's containers (O(1)) before any list is built.
    """
    if len(message.inputs) > MAX_INPUTS:
        raise BadRequest(f"{len(message.inputs)} inputs sent; send exactly one")
    if len(message.outputs) > len(OUTPUT_NAMES):
        raise BadRequest(
            f"{len(message.outputs)} outputs requested; this model has {len(OUTPUT_NAMES)}",
            allowed=list(OUTPUT_NAMES),
        )
    raw = message.raw_input_contents
    if len(raw) and len(raw) != len(message.inputs):
        raise BadRequest(
            f"{len(raw)} raw_input_contents for {len(message.inputs)} inputs; "
            "send one per input, or none and typed contents instead"
        )
    inputs: list[InputTensor] = []
    for index, tensor in enumerate(message.inputs):
        if "shared_memory_region" in tensor.parameters:
            raise BadRequest("shared memory inputs are not served; send the data in the request")
        if len(tensor.shape) > MAX_RANK:
            raise BadRequest(
                f"input {tensor.name[:64]!r}: shape has {len(tensor.shape)} dimensions; "
                f"at most {MAX_RANK}"
            )
        shape = list(tensor.shape)
        if len(raw):
            inputs.append(tensor_from_raw(tensor.name, tensor.datatype, shape, raw[index], limits))
        else:
            inputs.append(_typed(tensor, shape, limits))
    outputs = tuple(_requested(o) for o in message.outputs)
    timeout_us = _parameter(message.parameters, "timeout")
    timeout_s = timeout_us * 1e-6 if isinstance(timeout_us, int) and timeout_us > 0 else None
    return InferRequest(message.id[:256], tuple(inputs), outputs, timeout_s=timeout_s)


def _typed(tensor: Any, shape: list[int], limits: Limits | None) -> InputTensor:
    """An input sent as typed contents, its element count checked before it is copied."""
    field = _CONTENTS.get(tensor.datatype, "fp32_contents")
    values = getattr(tensor.contents, field)
    if limits is not None:
        most = limits.max_images if tensor.datatype == BYTES else limits.max_elements
        if len(values) > most:
            raise TooManyImages(
                f"input {tensor.name[:64]!r} holds {len(values)} elements; at most {most} "
                "are accepted",
                max_images_per_request=limits.max_images,
            )
    contents: Any = list(values) if tensor.datatype == BYTES else np.asarray(values, np.float32)
    return tensor_from_list(tensor.name, tensor.datatype, shape, contents, limits)


def _requested(output: Any) -> RequestedOutput:
    if "shared_memory_region" in output.parameters:
        raise BadRequest("shared memory outputs are not served")
    count = _parameter(output.parameters, "classification")
    return RequestedOutput(
        output.name, class_count=0 if count is None else class_count(output.name, count)
    )


def _parameter(parameters: Any, key: str) -> Any:
    """The value of an ``InferParameter`` in a parameters map, or None."""
    if key not in parameters:
        return None
    parameter = parameters[key]
    which = parameter.WhichOneof("parameter_choice")
    return None if which is None else getattr(parameter, which)


def infer_response(model: str, version: int, request_id: str, outputs: list[OutputTensor]) -> Any:
    """Outputs as ``raw_output_contents``, one per output in order (what clients read)."""
    response = pb.ModelInferResponse(model_name=model, model_version=str(version), id=request_id)
    for output in outputs:
        response.outputs.add(name=output.name, datatype=output.datatype, shape=output.shape)
        response.raw_output_contents.append(output_bytes(output))
    return response


def message(name: str, **fields: Any) -> Any:
    """A protocol message (e.g. ``"ServerLiveResponse"``) from its fields."""
    return getattr(pb, name)(**fields)
