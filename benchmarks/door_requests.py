"""Every door's requests for a set of images, built once, before any load starts.

The same requests serve our server and Triton (both name the model and version the same
way): multipart and raw ``/classify`` bodies; the body ``tritonclient.http`` itself sends
(binary tensor data extension); tritonclient's gRPC ``ModelInferRequest`` with the tensor
in ``raw_input_contents``; and, for the FP32 doors, the pixels preprocessed once by the
model's own :class:`~service.preprocess.Preprocessor`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tritonclient.http as triton_http
from tritonclient.grpc import service_pb2
from tritonclient.utils import serialize_byte_tensor

from benchmarks import http
from service.preprocess import Limits, Preprocessor
from service.repository import ModelEntry

#: The output every V2 door asks for, as a top-1 classification (like ``top_k=1``).
OUTPUT = "probabilities"


@dataclass(frozen=True)
class Requests:
    """Every door's requests for the same images, built before any load starts."""

    multipart: list[http.Body]
    raw: list[http.Body]
    rest: dict[str, list[tuple[bytes, int]]]  # input -> (body, JSON header size)
    grpc: dict[str, list[service_pb2.ModelInferRequest]]


def _arrays(
    entry: ModelEntry, jpegs: list[bytes], max_pixels: int
) -> dict[str, list[npt.NDArray[Any]]]:
    """Per V2 input, one batch-of-one array per image: the JPEG as a ``[1, 1]`` BYTES
    tensor, and its pixels preprocessed by the model's own recipe as ``[1, 3, H, W]``."""
    pre = Preprocessor(entry.config.preprocessing, Limits(max_pixels=max_pixels))
    return {
        "BYTES": [np.array([[data]], dtype=np.object_) for data in jpegs],
        "FP32": [pre(data)[np.newaxis] for data in jpegs],
    }


def _rest_body(name: str, datatype: str, array: npt.NDArray[Any]) -> tuple[bytes, int]:
    """The body ``tritonclient.http`` itself sends (binary tensor data extension)."""
    tensor = triton_http.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=True)
    top1 = triton_http.InferRequestedOutput(OUTPUT, binary_data=False, class_count=1)
    body, json_size = triton_http.InferenceServerClient.generate_request_body(
        [tensor], outputs=[top1]
    )
    return bytes(body), int(json_size)


def _grpc_request(
    model: str, version: int, name: str, datatype: str, array: npt.NDArray[Any]
) -> service_pb2.ModelInferRequest:
    """A ModelInfer request as tritonclient.grpc builds it: the tensor's bytes in
    ``raw_input_contents`` (BYTES elements length-prefixed, as Triton serialises them)."""
    raw = serialize_byte_tensor(array).item() if datatype == "BYTES" else array.tobytes()
    top1 = service_pb2.ModelInferRequest.InferRequestedOutputTensor(name=OUTPUT)
    top1.parameters["classification"].int64_param = 1
    return service_pb2.ModelInferRequest(
        model_name=model,
        model_version=str(version),
        inputs=[
            service_pb2.ModelInferRequest.InferInputTensor(
                name=name, datatype=datatype, shape=list(array.shape)
            )
        ],
        outputs=[top1],
        raw_input_contents=[raw],
    )


def build_requests(
    entry: ModelEntry, version: int, images: list[Path], max_pixels: int, *, fp32: bool = True
) -> Requests:
    """Every door's requests; ``fp32=False`` skips the preprocessed-pixel tensors (for
    12 MP photos the BYTES doors are what matters, and FP32 pixels are the same size)."""
    blobs = [(p.name, p.read_bytes()) for p in images]
    arrays = _arrays(entry, [data for _, data in blobs], max_pixels)
    if not fp32:
        del arrays["FP32"]
    names = {"BYTES": "image", "FP32": "input"}
    model = entry.config.name
    return Requests(
        multipart=http.multipart_bodies(blobs, 1),
        raw=http.raw_bodies(blobs),
        rest={
            kind: [_rest_body(names[kind], kind, a) for a in batch]
            for kind, batch in arrays.items()
        },
        grpc={
            kind: [_grpc_request(model, version, names[kind], kind, a) for a in batch]
            for kind, batch in arrays.items()
        },
    )
