"""The REST envelope: JSON, and the binary tensor data extension.

With the extension the body is a JSON header of ``Inference-Header-Content-Length``
bytes followed by the raw data of each input that declares ``binary_data_size``, in
input order (what ``tritonclient.http`` sends with ``binary_data=True``). Answers use
the same layout when any output is binary: per output ``parameters.binary_data``, or
the request's ``binary_data_output`` for outputs that do not say.
"""

from __future__ import annotations

import json
from typing import Any

from service.errors import BadRequest
from service.v2.codec import (
    BYTES,
    InferRequest,
    InputTensor,
    OutputTensor,
    RequestedOutput,
    class_count,
    output_bytes,
    tensor_from_list,
    tensor_from_raw,
)

HEADER_LENGTH = "Inference-Header-Content-Length"
#: Triton's request timeout parameter is in microseconds.
_MICROSECONDS = 1e-6


def parse_request(body: bytes | bytearray, header_length: str | None) -> InferRequest:
    json_part, binary = _split(body, header_length)
    try:
        doc = json.loads(json_part)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"request header is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest("request header must be a JSON object")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest("'inputs' must be a non-empty list")
    inputs: list[InputTensor] = []
    offset = 0
    for raw in raw_inputs:
        tensor, used = _input(raw, binary, offset)
        inputs.append(tensor)
        offset += used
    if offset != len(binary):
        raise BadRequest(
            f"{len(binary) - offset} bytes of binary data follow the last input that uses any"
        )
    params = _object(doc.get("parameters"), "parameters")
    binary_output = params.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise BadRequest("parameter 'binary_data_output' must be true or false")
    timeout = params.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int)):
        raise BadRequest("parameter 'timeout' must be an integer number of microseconds")
    raw_outputs = doc.get("outputs", [])
    if not isinstance(raw_outputs, list):
        raise BadRequest("'outputs' must be a list")
    request_id = doc.get("id", "")
    return InferRequest(
        id=request_id if isinstance(request_id, str) else str(request_id),
        inputs=tuple(inputs),
        outputs=tuple(_output(o) for o in raw_outputs),
        timeout_s=timeout * _MICROSECONDS if timeout else None,
        binary_output=binary_output,
    )


def _split(
    body: bytes | bytearray, header_length: str | None
) -> tuple[bytes | bytearray, bytes | bytearray]:
    if header_length is None:
        return body, b""
    try:
        size = int(header_length)
    except ValueError:
        size = -1
    if not 0 <= size <= len(body):
        raise BadRequest(
            f"{HEADER_LENGTH} must be an integer from 0 to the body's {len(body)} bytes, "
            f"got {header_length!r}"
        )
    return body[:size], body[size:]


def _object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"'{where}' must be a JSON object")
    return value


def _input(raw: Any, binary: bytes | bytearray, offset: int) -> tuple[InputTensor, int]:
    """One input and the number of binary bytes it takes."""
    if not isinstance(raw, dict):
        raise BadRequest("each input must be a JSON object")
    name, datatype, shape = raw.get("name"), raw.get("datatype"), raw.get("shape")
    if not isinstance(name, str) or not isinstance(datatype, str) or not isinstance(shape, list):
        raise BadRequest("each input needs 'name' and 'datatype' strings and a 'shape' list")
    params = _object(raw.get("parameters"), f"inputs[{name}].parameters")
    if "shared_memory_region" in params:
        raise BadRequest("shared memory inputs are not served; send the data in the request")
    size = params.get("binary_data_size")
    if size is None:
        if "data" not in raw:
            raise BadRequest(f"input {name!r} has neither 'data' nor binary_data_size")
        return tensor_from_list(name, datatype, shape, raw["data"]), 0
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise BadRequest(f"input {name!r}: binary_data_size must be a non-negative integer")
    if offset + size > len(binary):
        raise BadRequest(
            f"input {name!r} declares {size} bytes of binary data, "
            f"{len(binary) - offset} are left in the body"
        )
    return tensor_from_raw(name, datatype, shape, binary[offset : offset + size]), size


def _output(raw: Any) -> RequestedOutput:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise BadRequest("each requested output must be an object with a 'name'")
    name: str = raw["name"]
    params = _object(raw.get("parameters"), f"outputs[{name}].parameters")
    if "shared_memory_region" in params:
        raise BadRequest("shared memory outputs are not served")
    binary = params.get("binary_data")
    if binary is not None and not isinstance(binary, bool):
        raise BadRequest(f"output {name!r}: binary_data must be true or false")
    count = params.get("classification")
    return RequestedOutput(
        name=name,
        class_count=0 if count is None else class_count(name, count),
        binary=binary,
    )


def encode_response(
    model: str, version: int, request_id: str, outputs: list[OutputTensor]
) -> tuple[bytes, int | None]:
    """(body, JSON header length, or None when the whole body is JSON)."""
    header: dict[str, Any] = {"model_name": model, "model_version": str(version)}
    if request_id:
        header["id"] = request_id
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for output in outputs:
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": output.datatype,
            "shape": list(output.shape),
        }
        if output.binary:
            raw = output_bytes(output)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif output.datatype == BYTES:
            entry["data"] = [item.decode() for item in output.data.tolist()]
        else:
            entry["data"] = output.data.tolist()
        entries.append(entry)
    header["outputs"] = entries
    encoded = json.dumps(header, separators=(",", ":")).encode()
    if not chunks:
        return encoded, None
    return encoded + b"".join(chunks), len(encoded)
