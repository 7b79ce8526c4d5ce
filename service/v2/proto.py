"""The only module that touches the generated V2 protocol messages.

The stubs come from ``tritonclient.grpc`` (``service_pb2``, ``service_pb2_grpc``,
``model_config_pb2``), the maintained package that ships the protocol's generated
code; they carry no type hints, so everything untyped stays here and the rest of
``service/v2`` sees typed values (:class:`InferRequest`, dicts) or opaque ``Any``.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from service.errors import BadRequest
from service.v2.codec import (
    BYTES,
    FP32,
    InferRequest,
    InputTensor,
    OutputTensor,
    RequestedOutput,
    class_count,
    output_bytes,
    tensor_from_list,
    tensor_from_raw,
)

#: Subclassed by the servicer: methods it does not define answer UNIMPLEMENTED.
BaseServicer: Any = pb_grpc.GRPCInferenceServiceServicer
add_servicer: Any = pb_grpc.add_GRPCInferenceServiceServicer_to_server

_CONTENTS = {BYTES: "bytes_contents", FP32: "fp32_contents"}


def request_from_proto(message: Any) -> InferRequest:
    """A ``ModelInferRequest`` as an :class:`InferRequest`.

    With ``raw_input_contents`` (what ``tritonclient.grpc`` sends), entry i holds input
    i's raw bytes and every input must use it; otherwise each input has typed contents.
    """
    raw = list(message.raw_input_contents)
    if raw and len(raw) != len(message.inputs):
        raise BadRequest(
            f"{len(raw)} raw_input_contents for {len(message.inputs)} inputs; "
            "send one per input, or none and typed contents instead"
        )
    inputs: list[InputTensor] = []
    for index, tensor in enumerate(message.inputs):
        if "shared_memory_region" in tensor.parameters:
            raise BadRequest("shared memory inputs are not served; send the data in the request")
        shape = list(tensor.shape)
        if raw:
            inputs.append(tensor_from_raw(tensor.name, tensor.datatype, shape, raw[index]))
        else:
            field = _CONTENTS.get(tensor.datatype, "fp32_contents")
            values = list(getattr(tensor.contents, field))
            inputs.append(tensor_from_list(tensor.name, tensor.datatype, shape, values))
    outputs = tuple(_requested(o) for o in message.outputs)
    timeout_us = _parameter(message.parameters, "timeout")
    timeout_s = timeout_us * 1e-6 if isinstance(timeout_us, int) and timeout_us > 0 else None
    return InferRequest(message.id, tuple(inputs), outputs, timeout_s=timeout_s)


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


def message(name: str, fields: dict[str, Any] | None = None) -> Any:
    """A protocol message (e.g. ``"ModelMetadataResponse"``) from its JSON-form dict."""
    return json_format.ParseDict(fields or {}, getattr(pb, name)())
