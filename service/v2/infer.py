"""One V2 inference, door-agnostic: pick the input, run it through the pipeline, shape outputs.

REST and gRPC open a :class:`~service.pipeline.RequestScope` (which resolved the model
and set the deadline), turn their envelope into an :class:`InferRequest`, and call
:func:`run`. Requests are checked against the model's signature before any image is
decoded, so a wrong name, datatype or shape costs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from service.errors import BadRequest, UnknownModel
from service.pipeline import EncodedImage, Outcome, RequestScope
from service.pool import ServedModel
from service.v2.codec import (
    BYTES,
    FP32,
    IMAGE_INPUT,
    OUTPUT_NAMES,
    TENSOR_INPUT,
    InferRequest,
    InputTensor,
    OutputTensor,
    RequestedOutput,
    build_outputs,
)

_DATATYPES = {IMAGE_INPUT: BYTES, TENSOR_INPUT: FP32}


def parse_version(text: str | None) -> int | None:
    """A version from a path or message field: empty means the model's default version."""
    if not text:
        return None
    # isascii: str.isdigit() also accepts "²" and other digits int() refuses.
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise UnknownModel(f"model version must be a positive integer, got {text!r}")
    return int(text)


def check_outputs(outputs: Sequence[RequestedOutput]) -> None:
    names = [o.name for o in outputs]
    for name in names:
        if name not in OUTPUT_NAMES:
            raise BadRequest(f"unknown output {name!r}", allowed=list(OUTPUT_NAMES))
    if len(set(names)) != len(names):
        raise BadRequest(f"an output is requested twice: {names}")


def select_input(inputs: Sequence[InputTensor], served: ServedModel) -> InputTensor:
    """The one input of the request, checked against the model's signature."""
    if len(inputs) != 1:
        raise BadRequest(
            f"{len(inputs)} inputs sent; send exactly one: {IMAGE_INPUT!r} (BYTES encoded "
            f"images) or {TENSOR_INPUT!r} (FP32 preprocessed pixels)"
        )
    tensor = inputs[0]
    if tensor.name not in _DATATYPES:
        raise BadRequest(f"unknown input {tensor.name!r}", allowed=list(_DATATYPES))
    expected = _DATATYPES[tensor.name]
    if tensor.datatype != expected:
        raise BadRequest(
            f"input {tensor.name!r} must be {expected}, got {tensor.datatype}",
        )
    if tensor.name == IMAGE_INPUT:
        if len(tensor.shape) > 2 or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
            raise BadRequest(
                f"input {IMAGE_INPUT!r} has shape {list(tensor.shape)}; "
                "it takes [N] or [N, 1] (one encoded image per batch item)"
            )
    else:
        size = served.entry.config.preprocessing.crop_size
        if len(tensor.shape) != 4 or tensor.shape[1:] != (3, size, size):
            raise BadRequest(
                f"input {TENSOR_INPUT!r} has shape {list(tensor.shape)}; "
                f"model {served.name} takes [N, 3, {size}, {size}]"
            )
    return tensor


async def run(scope: RequestScope, request: InferRequest) -> tuple[Outcome, list[OutputTensor]]:
    check_outputs(request.outputs)
    tensor = select_input(request.inputs, scope.served)
    scope.shorten(request.timeout_s)  # a timeout found inside the body
    if tensor.name == IMAGE_INPUT:
        outcome = await scope.classify_images([EncodedImage(b) for b in tensor.data.tolist()])
    else:
        outcome = await scope.classify_tensors(tensor.data.reshape(tensor.shape))
    return outcome, build_outputs(
        outcome.logits, scope.served.class_names, request.outputs, request.binary_output
    )
