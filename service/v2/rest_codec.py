"""The REST envelope: JSON, and the binary tensor data extension.

With the extension the body is a JSON header of ``Inference-Header-Content-Length``
bytes followed by the raw data of each input that declares ``binary_data_size``, in
input order (what ``tritonclient.http`` sends with ``binary_data=True``). Answers use
the same layout when any output is binary: per output ``parameters.binary_data``, or
the request's ``binary_data_output`` for outputs that do not say.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from service.errors import BadRequest, PayloadTooLarge
from service.pipeline import Inputs, Parsed
from service.v2.codec import (
    BYTES,
    MAX_INPUTS,
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

X = TypeVar("X")
HEADER_LENGTH = "Inference-Header-Content-Length"
#: Triton's request timeout parameter is in microseconds.
_MICROSECONDS = 1e-6


def json_values_bound(text: bytes | bytearray) -> int:
    """An upper bound on the values a JSON text holds, counted at C speed before parsing:
    every value but the first follows a ``,`` ``:`` or an opening bracket."""
    return text.count(b",") + text.count(b":") + text.count(b"[") + text.count(b"{") + 1


def json_cost_bytes(text: bytes | bytearray) -> int:
    """An upper bound on the memory ``json.loads(text)`` builds, before it builds it.

    Each value costs at most a container (an empty dict: 64 bytes) plus its slot in its
    parent (8); strings add at most their text, 4 bytes a character when any character
    needs them (CPython's widest string kind), 1 when the text is ASCII.
    """
    per_char = 1 if text.isascii() else 4
    return 72 * json_values_bound(text) + per_char * len(text)


def parse_request(
    body: bytes | bytearray,
    header_length: str | None,
    limits: Limits | None = None,
    max_json_values: int | None = None,
) -> InferRequest:
    json_part, binary = _split(body, header_length)
    if max_json_values is not None and (values := json_values_bound(json_part)) > max_json_values:
        raise PayloadTooLarge(
            f"the request's JSON holds up to {values} values; at most {max_json_values} are "
            "accepted: send images as BYTES, or tensors with the binary tensor extension",
            max_json_values=max_json_values,
        )
    try:
        doc = json.loads(json_part)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"request header is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(doc, dict):
        raise BadRequest("request header must be a JSON object")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest("'inputs' must be a non-empty list")
    if len(raw_inputs) > MAX_INPUTS:
        raise BadRequest(f"{len(raw_inputs)} inputs sent; send exactly one")
    inputs: list[InputTensor] = []
    offset = 0
    for raw in raw_inputs:
        tensor, used = _input(raw, binary, offset, limits)
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
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int) or not 0 <= timeout < 2**63
    ):
        raise BadRequest(
            "parameter 'timeout' must be a non-negative integer number of microseconds",
            allowed="0 (none) to 2**63-1",
        )
    raw_outputs = doc.get("outputs", [])
    if not isinstance(raw_outputs, list):
        raise BadRequest("'outputs' must be a list")
    if len(raw_outputs) > len(OUTPUT_NAMES):
        raise BadRequest(
            f"{len(raw_outputs)} outputs requested; this model has {len(OUTPUT_NAMES)}",
            allowed=list(OUTPUT_NAMES),
        )
    request_id = doc.get("id", "")
    return InferRequest(
        id=(request_id if isinstance(request_id, str) else str(request_id))[:256],
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


def _input(
    raw: Any, binary: bytes | bytearray, offset: int, limits: Limits | None
) -> tuple[InputTensor, int]:
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
        return tensor_from_list(name, datatype, shape, raw["data"], limits), 0
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise BadRequest(f"input {name!r}: binary_data_size must be a non-negative integer")
    if offset + size > len(binary):
        raise BadRequest(
            f"input {name!r} declares {size} bytes of binary data, "
            f"{len(binary) - offset} are left in the body"
        )
    return tensor_from_raw(name, datatype, shape, binary[offset : offset + size], limits), size


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


class RestInferParser(Generic[X]):
    """The V2 REST body as the pipeline's parse stage takes it: kept as it streams,
    bounded before ``json.loads`` builds anything, parsed and checked in ``finish``."""

    heavy = True  # json.loads and the counts before it grow with the body

    def __init__(
        self,
        header_length: str | None,
        limits: Limits,
        max_json_values: int,
        check: Callable[[InferRequest], tuple[Inputs, X]],
    ) -> None:
        self._header_length = header_length
        self._limits = limits
        self._max_json_values = max_json_values
        self._check = check
        self._body = bytearray()

    def feed(self, chunk: bytes) -> None:
        self._body += chunk

    def cost_bytes(self) -> int:
        json_part, _ = _split(self._body, self._header_length)
        return json_cost_bytes(json_part)

    def finish(self) -> Parsed[X]:
        request = parse_request(
            self._body, self._header_length, self._limits, self._max_json_values
        )
        inputs, extra = self._check(request)
        return Parsed(inputs, extra)
