"""The REST envelope against tritonclient.http's own request and response code."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.http as httpclient

from service.errors import BadRequest
from service.v2.codec import RequestedOutput, build_outputs
from service.v2.rest_codec import encode_response, parse_request

LABELS = ("cat", "dog", "ship")
LOGITS = np.array([[1.0, 3.0, 2.0]], dtype=np.float32)
ONE_INPUT = b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1], "data": [1]}]}'


def header(
    parameters: dict[str, object] | None = None,
    outputs: list[object] | None = None,
    request: dict[str, object] | None = None,
) -> bytes:
    """A one-input request header with input ``parameters``, ``outputs`` or request ones."""
    tensor: dict[str, object] = {"name": "input", "datatype": "FP32", "shape": [1]}
    tensor.update({"parameters": parameters} if parameters else {"data": [1]})
    doc: dict[str, object] = {"inputs": [tensor]}
    if outputs:
        doc["outputs"] = outputs
    if request:
        doc["parameters"] = request
    return json.dumps(doc).encode()


def client_body(
    inputs: list[httpclient.InferInput],
    outputs: list[httpclient.InferRequestedOutput] | None = None,
    **kwargs: object,
) -> tuple[bytes, str | None]:
    body, json_size = httpclient.InferenceServerClient.generate_request_body(
        inputs, outputs, **kwargs
    )
    return body, None if json_size is None else str(json_size)


def image_input(items: list[bytes], binary: bool = True) -> httpclient.InferInput:
    tensor = httpclient.InferInput("image", [len(items), 1], "BYTES")
    tensor.set_data_from_numpy(np.array(items, dtype=object).reshape(-1, 1), binary_data=binary)
    return tensor


def test_binary_bytes_input_as_tritonclient_sends_it() -> None:
    images = [b"\xff\xd8\x00jpeg-one", b"\x89PNG\r\n\x1a\n-two"]
    body, header_length = client_body(
        [image_input(images)],
        [httpclient.InferRequestedOutput("logits", class_count=2)],
        request_id="r1",
        timeout=250_000,
    )
    request = parse_request(body, header_length)
    (tensor,) = request.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("image", "BYTES", (2, 1))
    assert tensor.data.tolist() == images
    assert request.outputs == (RequestedOutput("logits", class_count=2, binary=True),)
    assert (request.id, request.timeout_s) == ("r1", pytest.approx(0.25))


def test_fp32_input_in_json_and_in_binary_give_the_same_tensor() -> None:
    pixels = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    parsed = []
    for binary in (True, False):
        tensor = httpclient.InferInput("input", list(pixels.shape), "FP32")
        tensor.set_data_from_numpy(pixels, binary_data=binary)
        parsed.append(parse_request(*client_body([tensor])).inputs[0])
    for tensor in parsed:
        assert tensor.shape == (2, 3, 4, 4)
        np.testing.assert_array_equal(tensor.data.reshape(tensor.shape), pixels)


def test_no_outputs_means_binary_outputs_as_tritonclient_asks() -> None:
    request = parse_request(*client_body([image_input([b"x"])]))
    assert request.outputs == () and request.binary_output is True


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_reads_our_response(binary: bool) -> None:
    requested = [
        RequestedOutput("probabilities", binary=binary),
        RequestedOutput("logits", class_count=2, binary=binary),
    ]
    body, header_length = encode_response("m", 3, "abc", build_outputs(LOGITS, LABELS, requested))
    assert (header_length is not None) == binary
    result = httpclient.InferenceServerClient.parse_response_body(body, header_length=header_length)
    assert result.get_response()["model_version"] == "3"
    assert result.as_numpy("probabilities").shape == (1, 3)
    # tritonclient gives BYTES as bytes from binary data and as str from JSON.
    classes = [
        [c if isinstance(c, bytes) else c.encode() for c in row]
        for row in result.as_numpy("logits").tolist()
    ]
    assert classes == [[b"3.000000:1:dog", b"2.000000:2:ship"]]


@pytest.mark.parametrize(
    ("body", "header_length", "problem"),
    [
        (b"{", None, "not valid JSON"),
        (b"[]", None, "JSON object"),
        (b'{"inputs": []}', None, "non-empty list"),
        (b'{"inputs": [{"name": "image"}]}', None, "'shape' list"),
        (b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1]}]}', None, "neither"),
        (b"{}", "9", "from 0 to the body's 2 bytes"),
        (b"{}", "x", "from 0 to"),
        (ONE_INPUT + b"xx", str(len(ONE_INPUT)), "2 bytes of binary data follow"),
        (header(parameters={"binary_data_size": 4}), None, "4 bytes of binary data, 0 are left"),
        (header(parameters={"shared_memory_region": "r"}), None, "shared memory"),
        (
            header(outputs=[{"name": "logits", "parameters": {"classification": 0}}]),
            None,
            "positive integer",
        ),
        (header(request={"timeout": "soon"}), None, "microseconds"),
    ],
)
def test_malformed_requests_are_bad_requests_that_say_why(
    body: bytes, header_length: str | None, problem: str
) -> None:
    with pytest.raises(BadRequest, match=problem):
        parse_request(body, header_length)


def test_json_response_is_plain_json_when_no_output_is_binary() -> None:
    body, header_length = encode_response(
        "m", 1, "", build_outputs(LOGITS, LABELS, [RequestedOutput("logits")])
    )
    assert header_length is None
    assert json.loads(body)["outputs"][0]["data"] == LOGITS.ravel().tolist()
