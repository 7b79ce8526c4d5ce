"""Protobuf envelope: requests as tritonclient.grpc builds them, responses as it reads them."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2

# The request builder tritonclient.grpc's infer() calls: the exact message it sends.
from tritonclient.grpc._utils import _get_inference_request

from service.errors import BadRequest
from service.v2 import proto
from service.v2.codec import RequestedOutput, build_outputs

LABELS = ("cat", "dog", "ship")


def client_request(
    inputs: list[grpcclient.InferInput],
    outputs: list[grpcclient.InferRequestedOutput] | None = None,
    timeout: int | None = None,
) -> service_pb2.ModelInferRequest:
    return _get_inference_request(
        "m", inputs, "", "id-7", outputs, 0, False, False, 0, timeout, None
    )


def test_raw_input_contents_become_tensors() -> None:
    images = np.array([[b"\xff\xd8one"], [b"two"]], dtype=object)
    tensor = grpcclient.InferInput("image", [2, 1], "BYTES")
    tensor.set_data_from_numpy(images)
    wanted = [grpcclient.InferRequestedOutput("probabilities", class_count=3)]
    request = proto.request_from_proto(client_request([tensor], wanted, timeout=5_000))
    (parsed,) = request.inputs
    assert (parsed.name, parsed.shape, parsed.data.tolist()) == (
        "image",
        (2, 1),
        [b"\xff\xd8one", b"two"],
    )
    assert request.outputs == (RequestedOutput("probabilities", class_count=3),)
    assert (request.id, request.timeout_s) == ("id-7", pytest.approx(0.005))


def test_typed_contents_are_accepted_too() -> None:
    message = service_pb2.ModelInferRequest(model_name="m")
    tensor = message.inputs.add(name="input", datatype="FP32", shape=[1, 2])
    tensor.contents.fp32_contents.extend([1.5, -2.0])
    (parsed,) = proto.request_from_proto(message).inputs
    np.testing.assert_array_equal(parsed.data, [1.5, -2.0])


def test_raw_contents_must_be_one_per_input() -> None:
    message = service_pb2.ModelInferRequest(model_name="m")
    message.inputs.add(name="image", datatype="BYTES", shape=[1])
    message.inputs.add(name="input", datatype="FP32", shape=[1])
    message.raw_input_contents.append(b"\x00\x00\x00\x00")
    with pytest.raises(BadRequest, match="one per input"):
        proto.request_from_proto(message)


def test_classification_parameter_must_be_positive() -> None:
    message = service_pb2.ModelInferRequest(model_name="m")
    output = message.outputs.add(name="logits")
    output.parameters["classification"].int64_param = -1
    message.inputs.add(name="image", datatype="BYTES", shape=[0])
    with pytest.raises(BadRequest, match="positive integer"):
        proto.request_from_proto(message)


def test_tritonclient_reads_our_response() -> None:
    logits = np.array([[1.0, 3.0, 2.0]], dtype=np.float32)
    outputs = build_outputs(
        logits, LABELS, [RequestedOutput("logits"), RequestedOutput("probabilities", 2)]
    )
    result = grpcclient.InferResult(proto.infer_response("m", 2, "id-7", outputs))
    np.testing.assert_array_equal(result.as_numpy("logits"), logits)
    assert result.as_numpy("probabilities").shape == (1, 2)
    assert result.as_numpy("probabilities")[0, 0].decode().endswith(":1:dog")
    assert result.get_response().model_version == "2"
