"""V2 tensors <-> numpy, shared by the REST and gRPC doors.

Both doors carry the same things in different envelopes: named, typed, shaped input
tensors whose data is either raw little-endian bytes (the binary extension over REST,
``raw_input_contents`` over gRPC) or typed lists (JSON ``data``, gRPC ``contents``),
and requested outputs with parameters. The doors turn their envelope into an
:class:`InferRequest`; everything after that is here and in :mod:`service.v2.infer`.

Only the two datatypes our models take are accepted (``BYTES`` encoded images and
``FP32`` preprocessed pixels); anything else is a 400 that names what is allowed.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from service.errors import BadRequest, PayloadTooLarge, TooManyImages
from service.postprocess import softmax

BYTES = "BYTES"
FP32 = "FP32"

#: Input names. ``image`` (BYTES, encoded images) is the default input.
IMAGE_INPUT = "image"
TENSOR_INPUT = "input"
#: Output names. With no output requested, every output is returned.
LOGITS_OUTPUT = "logits"
PROBABILITIES_OUTPUT = "probabilities"
OUTPUT_NAMES = (LOGITS_OUTPUT, PROBABILITIES_OUTPUT)
#: Inputs a request may name (the model declares two, both optional; one is sent).
MAX_INPUTS = 2

_LENGTH = struct.Struct("<I")


@dataclass(frozen=True)
class InputTensor:
    """One input. ``data`` is flat: ``bytes`` objects for BYTES, float32 for FP32."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: npt.NDArray[Any]


@dataclass(frozen=True)
class RequestedOutput:
    """An output the client asked for. ``binary`` is None when the client left it open."""

    name: str
    class_count: int = 0
    binary: bool | None = None


@dataclass(frozen=True)
class InferRequest:
    """A V2 inference request after its envelope (JSON, binary or protobuf) is opened."""

    id: str
    inputs: tuple[InputTensor, ...]
    outputs: tuple[RequestedOutput, ...]
    #: Triton's request ``timeout`` parameter (given in microseconds), in seconds.
    timeout_s: float | None = None
    #: REST ``binary_data_output``: the default for outputs that do not say.
    binary_output: bool = False


@dataclass(frozen=True)
class OutputTensor:
    """One output: float32 for FP32, ``bytes`` objects for BYTES, in its final shape."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: npt.NDArray[Any]
    binary: bool


# -- inputs --------------------------------------------------------------------------
#: Most dimensions a tensor shape may have (ours take at most 4: N, C, H, W).
MAX_RANK = 8
#: Largest single dimension (a 32-bit signed index, as Triton's own limit).
MAX_DIM = 2**31 - 1


@dataclass(frozen=True)
class Limits:
    """What one request may hold, known from the model before a tensor is built."""

    #: Encoded images (BYTES elements) per request.
    max_images: int
    #: FP32 elements per request: images times the model's C*H*W.
    max_elements: int


def check_shape(name: str, shape: Sequence[Any]) -> tuple[int, ...]:
    """A shape checked in time linear in its length: rank, then each dimension."""
    if not isinstance(shape, list | tuple) or not shape:
        raise BadRequest(f"input {name!r}: shape must be a non-empty list of integers")
    if len(shape) > MAX_RANK:
        raise BadRequest(
            f"input {name!r}: shape has {len(shape)} dimensions; at most {MAX_RANK}",
            allowed="[N] or [N, 1] for BYTES images, [N, 3, H, W] for FP32 pixels",
        )
    for dim in shape:
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise BadRequest(f"input {name!r}: shape must be a non-empty list of integers")
        if dim < 0:
            raise BadRequest(f"input {name!r}: shape {list(shape)} has a negative dimension")
        if dim > MAX_DIM:
            raise BadRequest(f"input {name!r}: a dimension is above {MAX_DIM}")
    return tuple(int(d) for d in shape)


def deserialize_bytes(name: str, raw: bytes | bytearray, max_items: int = 2**62) -> list[bytes]:
    """Triton's BYTES layout: each element is a 4-byte little-endian length, then bytes.

    Refuses at the first element past ``max_items``: a body of a million empty elements
    costs a few of them, not a million objects.
    """
    items: list[bytes] = []
    offset = 0
    view = memoryview(raw)
    while offset < len(raw):
        if len(items) >= max_items:
            raise _too_many(name, max_items)
        if offset + _LENGTH.size > len(raw):
            raise BadRequest(f"input {name!r}: BYTES data ends inside an element's length")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += _LENGTH.size
        if offset + length > len(raw):
            raise BadRequest(
                f"input {name!r}: a BYTES element claims {length} bytes, "
                f"{len(raw) - offset} are left"
            )
        items.append(bytes(view[offset : offset + length]))
        offset += length
    return items


def serialize_bytes(items: Iterable[bytes]) -> bytes:
    return b"".join(_LENGTH.pack(len(item)) + item for item in items)


def _too_many(name: str, limit: int) -> TooManyImages:
    return TooManyImages(
        f"input {name!r} holds more than {limit} images; at most {limit} are accepted",
        max_images_per_request=limit,
    )


def _element_count(name: str, shape: tuple[int, ...], count: int) -> None:
    expected = math.prod(shape)  # at most MAX_RANK factors under 2**31: cheap
    if count != expected:
        raise BadRequest(
            f"input {name!r}: shape {list(shape)} holds {expected} elements, the data has {count}"
        )


def _check_datatype(name: str, datatype: str) -> None:
    if datatype not in (BYTES, FP32):
        raise BadRequest(
            f"input {name!r}: datatype {datatype[:32]!r} is not accepted",
            allowed=f"{BYTES} (encoded images) or {FP32} (preprocessed pixels)",
        )


def _check_elements(name: str, count: int, limits: Limits | None) -> None:
    if limits is not None and count > limits.max_elements:
        raise PayloadTooLarge(
            f"input {name!r} holds {count} FP32 values; at most {limits.max_elements} "
            "(max_images_per_request inputs of this model) are accepted",
            max_elements=limits.max_elements,
        )


def tensor_from_raw(
    name: str,
    datatype: str,
    shape: Sequence[Any],
    raw: bytes | bytearray,
    limits: Limits | None = None,
) -> InputTensor:
    """An input sent as raw bytes (binary extension, ``raw_input_contents``)."""
    dims = check_shape(name, shape)
    _check_datatype(name, datatype)
    data: npt.NDArray[Any]
    if datatype == BYTES:
        max_items = limits.max_images if limits is not None else 2**62
        data = np.array(deserialize_bytes(name, raw, max_items) or [], dtype=object)
    else:
        if len(raw) % 4:
            raise BadRequest(f"input {name!r}: FP32 data of {len(raw)} bytes is not 4-aligned")
        _check_elements(name, len(raw) // 4, limits)
        data = np.frombuffer(raw, dtype="<f4").astype(np.float32, copy=False)
    _element_count(name, dims, data.size)
    return InputTensor(name, datatype, dims, data)


def tensor_from_list(
    name: str, datatype: str, shape: Sequence[Any], values: Any, limits: Limits | None = None
) -> InputTensor:
    """An input sent as typed values (JSON ``data``, gRPC ``contents``).

    BYTES elements in JSON are base64 text: JSON strings cannot carry the raw bytes of
    an image (a JPEG is not valid UTF-8), so no client can send one any other way.
    Over gRPC ``bytes_contents`` are raw bytes and arrive here as ``bytes``. FP32 data
    may be flat or nested in lists (row-major), numbers only; numpy converts it at C
    speed, and anything it cannot take as a number array is the client's 400.
    """
    dims = check_shape(name, shape)
    _check_datatype(name, datatype)
    data: npt.NDArray[Any]
    if datatype == BYTES:
        max_items = limits.max_images if limits is not None else 2**62
        flat = _flatten_bytes(name, values, max_items)
        data = np.array([_image_bytes(name, v) for v in flat] or [], dtype=object)
    else:
        data = _numbers(name, values)
        _check_elements(name, data.size, limits)
    _element_count(name, dims, data.size)
    return InputTensor(name, datatype, dims, data)


def _numbers(name: str, values: Any) -> npt.NDArray[np.float32]:
    if not isinstance(values, list | tuple | np.ndarray):
        raise BadRequest(f"input {name!r}: FP32 data must be a list of numbers")
    try:
        array = np.asarray(values)
    except (ValueError, TypeError):  # ragged nesting
        raise BadRequest(f"input {name!r}: FP32 data must be a regular (row-major) list") from None
    if array.size and array.dtype.kind == "O":  # an int too large for any machine type
        raise BadRequest(f"input {name!r}: FP32 data must be numbers; a value is out of range")
    if array.size and array.dtype.kind not in "iuf":  # strings, booleans, mixed
        raise BadRequest(f"input {name!r}: FP32 data must be numbers")
    with np.errstate(over="ignore"):  # a value past float32 becomes inf: the pipeline's
        return array.astype(np.float32).ravel()  # finiteness check refuses it (400)


def _flatten_bytes(name: str, values: Any, max_items: int) -> list[Any]:
    """BYTES elements, flat or nested ``[[b], [b]]``, refused past ``max_items``."""
    flat: list[Any] = []
    stack = [values] if isinstance(values, list | tuple) else [[values]]
    while stack:
        node = stack.pop()
        if isinstance(node, list | tuple):
            stack.extend(reversed(node))
            if len(stack) > max_items * 2 + 2:  # nesting cannot hide more elements
                raise _too_many(name, max_items)
            continue
        if len(flat) >= max_items:
            raise _too_many(name, max_items)
        flat.append(node)
    return flat


def _image_bytes(name: str, value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise BadRequest(f"input {name!r}: BYTES data must be strings")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(
            f"input {name!r}: a BYTES element in JSON is not base64",
            allowed="base64 text in JSON, or raw bytes with the binary tensor extension",
        ) from None


# -- outputs -------------------------------------------------------------------------
def class_count(output: str, value: Any) -> int:
    """The classification parameter: a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequest(
            f"output {output!r}: classification must be a positive integer, got {value!r}"
        )
    return value


def classification(values: npt.NDArray[np.float32], k: int, labels: Sequence[str]) -> list[bytes]:
    """Triton's classification strings for one row: ``"score:index:label"``, best first.

    The score is the output's own value (a logit or a probability) printed as C++
    ``std::to_string`` does (six decimals), so clients that parse Triton's answers parse
    ours; equal scores keep the lower index first.
    """
    order = np.argsort(-values, kind="stable")[: min(k, values.shape[0])]
    return [f"{float(values[i]):f}:{int(i)}:{labels[i]}".encode() for i in order]


def build_outputs(
    logits: npt.NDArray[np.float32],
    labels: Sequence[str],
    requested: Sequence[RequestedOutput],
    binary_default: bool = False,
) -> list[OutputTensor]:
    """The outputs asked for (all when none are), each as a tensor or classification."""
    wanted = list(requested) or [RequestedOutput(name) for name in OUTPUT_NAMES]
    values = {
        LOGITS_OUTPUT: logits.astype(np.float32, copy=False),
        PROBABILITIES_OUTPUT: softmax(logits).astype(np.float32),
    }
    outputs: list[OutputTensor] = []
    for want in wanted:
        tensor = values[want.name]
        binary = binary_default if want.binary is None else want.binary
        if want.class_count:
            rows = [classification(row, want.class_count, labels) for row in tensor]
            k = len(rows[0]) if rows else min(want.class_count, len(labels))
            data = np.array([item for row in rows for item in row] or [], dtype=object)
            outputs.append(OutputTensor(want.name, BYTES, (len(rows), k), data, binary))
        else:
            outputs.append(OutputTensor(want.name, FP32, tensor.shape, tensor.ravel(), binary))
    return outputs


def output_bytes(output: OutputTensor) -> bytes:
    """An output's raw little-endian bytes (binary extension, ``raw_output_contents``)."""
    if output.datatype == BYTES:
        return serialize_bytes(output.data.tolist())
    return output.data.astype("<f4", copy=False).tobytes()
