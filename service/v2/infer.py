"""One V2 inference, door-agnostic: the parsed request into the pipeline's inputs, and the
logits back into the outputs asked for.

REST and gRPC turn their envelope into an :class:`InferRequest` in their parser (in the
pipeline's parse stage), then :func:`to_inputs` checks it against the model's signature,
before any image is decoded, so a wrong name, datatype or shape costs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from service.errors import BadRequest
from service.pipeline import EncodedImage, Inputs, Outcome
from service.pool import ServedModel
from service.v2.codec import (
    BYTES,
    FP32,
    IMAGE_INPUT,
    OUTPUT_NAMES,
    TENSOR_INPUT,
    InferRequest,
    InputTensor,
    Limits,
    OutputTensor,
    RequestedOutput,
    build_outputs,
)

_DATATYPES = {IMAGE_INPUT: BYTES, TENSOR_INPUT: FP32}


@dataclass(frozen=True)
class Reply:
    """What a V2 door needs to answer: the request's id and the outputs it asked for."""

    id: str
    outputs: tuple[RequestedOutput, ...]
    binary_output: bool = False

    def outputs_for(self, outcome: Outcome) -> list[OutputTensor]:
        return build_outputs(
            outcome.logits, outcome.model.class_names, self.outputs, self.binary_output
        )


def limits_of(served: ServedModel, max_images: int) -> Limits:
    """What one request to ``served`` may hold, for the parsers to refuse early."""
    channels, height, width = served.input_shape
    return Limits(max_images=max_images, max_elements=max_images * channels * height * width)


def check_outputs(outputs: Sequence[RequestedOutput]) -> None:
    names = [o.name for o in outputs]
    for name in names:
        if name not in OUTPUT_NAMES:
            raise BadRequest(f"unknown output {name[:64]!r}", allowed=list(OUTPUT_NAMES))
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
        raise BadRequest(f"unknown input {tensor.name[:64]!r}", allowed=list(_DATATYPES))
    expected = _DATATYPES[tensor.name]
    if tensor.datatype != expected:
        raise BadRequest(f"input {tensor.name!r} must be {expected}, got {tensor.datatype}")
    if tensor.name == IMAGE_INPUT:
        if len(tensor.shape) > 2 or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
            raise BadRequest(
                f"input {IMAGE_INPUT!r} has shape {list(tensor.shape)}; "
                "it takes [N] or [N, 1] (one encoded image per batch item)"
            )
    else:
        item = served.input_shape
        if len(tensor.shape) != 4 or tensor.shape[1:] != item:
            raise BadRequest(
                f"input {TENSOR_INPUT!r} has shape {list(tensor.shape)}; "
                f"model {served.name} takes [N, {', '.join(map(str, item))}]"
            )
    return tensor


def to_inputs(request: InferRequest, served: ServedModel) -> tuple[Inputs, Reply]:
    """The pipeline's inputs and the door's reply state, for a checked request."""
    check_outputs(request.outputs)
    tensor = select_input(request.inputs, served)
    reply = Reply(request.id, request.outputs, request.binary_output)
    if tensor.name == IMAGE_INPUT:
        images = [EncodedImage(b) for b in tensor.data.tolist()]
        return Inputs(images=images, timeout_s=request.timeout_s), reply
    pixels = tensor.data.reshape(tensor.shape)
    return Inputs(tensor=pixels, timeout_s=request.timeout_s), reply
