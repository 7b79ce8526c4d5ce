"""The real server driven by Triton's own clients, tritonclient.http and tritonclient.grpc."""

from __future__ import annotations

import asyncio
import io
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from service.preprocess import Limits, Preprocessor
from service.repository import scan_repository
from tests.v2.conftest import API_KEY, V2Server

MODEL = "resnet20"
CIFAR_CLASSES = 10


def jpeg_input(module: object, images: list[bytes]) -> object:
    tensor = module.InferInput("image", [len(images), 1], "BYTES")  # type: ignore[attr-defined]
    tensor.set_data_from_numpy(np.array(images, dtype=object).reshape(-1, 1))
    return tensor


@pytest.fixture(scope="module")
def http(v2_server: V2Server) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(v2_server.rest)


@pytest.fixture(scope="module")
def grpc(v2_server: V2Server) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(v2_server.grpc)


def test_health_answers_on_both_doors(
    http: httpclient.InferenceServerClient, grpc: grpcclient.InferenceServerClient
) -> None:
    for client in (http, grpc):
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready(MODEL)
        assert client.is_model_ready(MODEL, "1")
        assert not client.is_model_ready("no-such-model")


def test_metadata_lists_both_inputs_and_both_outputs(
    http: httpclient.InferenceServerClient, grpc: grpcclient.InferenceServerClient
) -> None:
    server = http.get_server_metadata()
    assert server["name"] == "resnet-serve"
    assert {"binary_tensor_data", "classification"} <= set(server["extensions"])
    assert grpc.get_server_metadata(as_json=True)["extensions"] == server["extensions"]

    rest = http.get_model_metadata(MODEL)
    assert rest["versions"] == ["1"] and rest["platform"] == "onnxruntime_onnx"
    shapes = {t["name"]: (t["datatype"], t["shape"]) for t in rest["inputs"] + rest["outputs"]}
    assert shapes == {
        "image": ("BYTES", [-1, 1]),
        "input": ("FP32", [-1, 3, 32, 32]),
        "logits": ("FP32", [-1, CIFAR_CLASSES]),
        "probabilities": ("FP32", [-1, CIFAR_CLASSES]),
    }
    over_grpc = grpc.get_model_metadata(MODEL)
    assert [(t.name, t.datatype, list(t.shape)) for t in over_grpc.inputs] == [
        (t["name"], t["datatype"], t["shape"]) for t in rest["inputs"]
    ]


def test_config_statistics_and_index_parse_in_both_clients(
    http: httpclient.InferenceServerClient, grpc: grpcclient.InferenceServerClient
) -> None:
    config = http.get_model_config(MODEL)
    over_grpc = grpc.get_model_config(MODEL).config
    # One source: the same message in each door's form.
    assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == [
        (i.name, model_config_pb2.DataType.Name(i.data_type), list(i.dims)) for i in over_grpc.input
    ]
    assert config["max_batch_size"] > 0
    # Both inputs are declared, both optional: a request sends exactly one of them.
    assert [(i["name"], i.get("optional")) for i in config["input"]] == [
        ("image", True),
        ("input", True),
    ]
    before_ms = time.time() * 1000
    grpc.infer(MODEL, [jpeg_input(grpcclient, [_pixel_jpeg()])])  # at least one inference
    stats = grpc.get_inference_statistics(MODEL).model_stats[0]
    assert stats.name == MODEL and stats.execution_count >= 1 and stats.inference_count >= 1
    assert before_ms - 1000 <= stats.last_inference <= time.time() * 1000 + 1000
    rest_stats = http.get_inference_statistics(MODEL)["model_stats"][0]
    assert rest_stats["last_inference"] == stats.last_inference  # a number, not a string
    assert (
        http.get_inference_statistics(MODEL)["model_stats"][0]["inference_stats"]["success"][
            "count"
        ]
        >= 1
    )
    assert [m["name"] for m in http.get_model_repository_index()] == [MODEL]
    assert grpc.get_model_repository_index().models[0].state == "READY"


def preprocessor_of(repository: Path) -> Preprocessor:
    """The server's own preprocessing of the model, run here on the client's side."""
    config = scan_repository(repository)[0].config
    return Preprocessor(config.preprocessing, Limits(max_pixels=10**8))


def _pixel_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 120, 200)).save(buffer, "JPEG")
    return buffer.getvalue()


# -- the same answers on every door ----------------------------------------------------
CHUNK = 50  # images per request: the sample in a few requests per door


def rest_probabilities(client: httpclient.InferenceServerClient, images: list[bytes]) -> np.ndarray:
    outputs = [httpclient.InferRequestedOutput("probabilities")]
    return client.infer(MODEL, [jpeg_input(httpclient, images)], outputs=outputs).as_numpy(
        "probabilities"
    )


def grpc_probabilities(client: grpcclient.InferenceServerClient, images: list[bytes]) -> np.ndarray:
    outputs = [grpcclient.InferRequestedOutput("probabilities")]
    return client.infer(MODEL, [jpeg_input(grpcclient, images)], outputs=outputs).as_numpy(
        "probabilities"
    )


def classify_probabilities(url: str, images: list[bytes]) -> np.ndarray:
    files = [("file", (f"{i}.jpg", data, "image/jpeg")) for i, data in enumerate(images)]
    response = httpx.post(
        f"{url}/classify", params={"top_k": CIFAR_CLASSES}, files=files, timeout=60
    )
    assert response.status_code == 200, response.text
    probabilities = np.zeros((len(images), CIFAR_CLASSES))
    for row, result in zip(probabilities, response.json()["results"], strict=True):
        for prediction in result["predictions"]:
            row[prediction["index"]] = prediction["score"]
    return probabilities


def test_cifar_sample_same_top1_and_probabilities_on_every_door(
    v2_server: V2Server,
    http: httpclient.InferenceServerClient,
    grpc: grpcclient.InferenceServerClient,
    cifar_sample: list[tuple[str, bytes, int]],
) -> None:
    images = [data for _, data, _ in cifar_sample]
    labels = np.array([label for _, _, label in cifar_sample])
    chunks = [images[i : i + CHUNK] for i in range(0, len(images), CHUNK)]
    doors = {
        "classify": np.concatenate(
            [classify_probabilities(v2_server.process.url, c) for c in chunks]
        ),
        "v2-rest": np.concatenate([rest_probabilities(http, c) for c in chunks]),
        "v2-grpc": np.concatenate([grpc_probabilities(grpc, c) for c in chunks]),
    }
    reference = doors["classify"]
    for door, probabilities in doors.items():
        assert probabilities.shape == (len(images), CIFAR_CLASSES), door
        np.testing.assert_array_equal(probabilities.argmax(1), reference.argmax(1), err_msg=door)
        np.testing.assert_allclose(probabilities, reference, rtol=0, atol=1e-6, err_msg=door)
    # The sample's JPEGs through the service score 81% (tests/export: at least 70%).
    assert (reference.argmax(1) == labels).mean() >= 0.70


def test_fp32_input_gives_what_the_same_pixels_give_as_jpeg(
    v2_server: V2Server,
    cifar_repository: Path,
    http: httpclient.InferenceServerClient,
    grpc: grpcclient.InferenceServerClient,
    cifar_sample: list[tuple[str, bytes, int]],
) -> None:
    images = [data for _, data, _ in cifar_sample[::30]]
    pixels = np.stack([preprocessor_of(cifar_repository)(data) for data in images])
    expected = grpc_probabilities(grpc, images)
    for module, client in ((httpclient, http), (grpcclient, grpc)):
        tensor = module.InferInput("input", list(pixels.shape), "FP32")
        tensor.set_data_from_numpy(pixels)
        result = client.infer(
            MODEL, [tensor], outputs=[module.InferRequestedOutput("probabilities")]
        )
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=0, atol=1e-6)


def test_classification_extension_returns_tritons_strings(
    http: httpclient.InferenceServerClient,
    grpc: grpcclient.InferenceServerClient,
    cifar_repository: Path,
    cifar_sample: list[tuple[str, bytes, int]],
) -> None:
    class_names = scan_repository(cifar_repository)[0].config.labels
    images = [data for _, data, _ in cifar_sample[:4]]
    probabilities = grpc_probabilities(grpc, images)
    for module, client in ((httpclient, http), (grpcclient, grpc)):
        wanted = [module.InferRequestedOutput("probabilities", class_count=3)]
        classes = client.infer(MODEL, [jpeg_input(module, images)], outputs=wanted).as_numpy(
            "probabilities"
        )
        assert classes.shape == (len(images), 3)
        for row, expected in zip(classes, probabilities, strict=True):
            parsed = [item.decode().split(":") for item in row]
            indices = [int(index) for _, index, _ in parsed]
            assert indices == list(np.argsort(-expected, kind="stable")[:3])
            assert [label for _, _, label in parsed] == [class_names[i] for i in indices]
            assert [float(s) for s, _, _ in parsed] == pytest.approx(expected[indices], abs=1e-6)


def test_json_and_binary_outputs_carry_the_same_values(
    http: httpclient.InferenceServerClient, cifar_sample: list[tuple[str, bytes, int]]
) -> None:
    images = [data for _, data, _ in cifar_sample[:3]]
    answers = []
    for binary in (True, False):
        outputs = [httpclient.InferRequestedOutput("logits", binary_data=binary)]
        answers.append(
            http.infer(MODEL, [jpeg_input(httpclient, images)], outputs=outputs).as_numpy("logits")
        )
    np.testing.assert_array_equal(answers[0], answers[1])
    # No output requested: every output, as binary data (tritonclient asks for that).
    result = http.infer(MODEL, [jpeg_input(httpclient, images)])
    assert {o["name"] for o in result.get_response()["outputs"]} == {"logits", "probabilities"}


# -- errors ----------------------------------------------------------------------------
def failure(call: Callable[[], object]) -> tuple[str, str]:
    """(status, message) of the error a client call raises: an HTTP status for
    tritonclient.http, a ``StatusCode.*`` name for tritonclient.grpc."""
    with pytest.raises(InferenceServerException) as caught:
        call()
    return str(caught.value.status()), caught.value.message()


def both(
    http: httpclient.InferenceServerClient,
    grpc: grpcclient.InferenceServerClient,
    inputs: Callable[[Any], list[Any]],
    model: str = MODEL,
    **kwargs: Any,
) -> tuple[tuple[str, str], tuple[str, str]]:
    """(REST status, message), (gRPC status, message) of the same failing request."""
    # tritonclient.http adds its own entries to the headers dict it is given: copy it.
    headers = kwargs.pop("headers", None)
    rest = failure(lambda: http.infer(model, inputs(httpclient), headers=_copy(headers), **kwargs))
    over_grpc = failure(
        lambda: grpc.infer(model, inputs(grpcclient), headers=_copy(headers), **kwargs)
    )
    return rest, over_grpc


def _copy(headers: dict[str, str] | None) -> dict[str, str] | None:
    return None if headers is None else dict(headers)


def test_unknown_model_is_404_and_not_found(
    http: httpclient.InferenceServerClient, grpc: grpcclient.InferenceServerClient
) -> None:
    rest, over_grpc = both(http, grpc, lambda m: [jpeg_input(m, [_pixel_jpeg()])], model="nope")
    assert rest == ("404", over_grpc[1]) and over_grpc[0] == "StatusCode.NOT_FOUND"
    assert "nope" in rest[1]
    assert failure(lambda: http.get_model_metadata("nope"))[0] == "404"
    assert failure(lambda: grpc.get_model_metadata("nope"))[0] == "StatusCode.NOT_FOUND"


def fp32(module: Any, shape: list[int]) -> list[Any]:
    tensor = module.InferInput("input", shape, "FP32")
    tensor.set_data_from_numpy(np.zeros(shape, np.float32))
    return [tensor]


def int32_image(module: Any) -> list[Any]:
    tensor = module.InferInput("image", [1, 1], "INT32")
    tensor.set_data_from_numpy(np.zeros((1, 1), np.int32))
    return [tensor]


@pytest.mark.parametrize(
    ("inputs", "status", "problem"),
    [
        # A tensor element that is no image is the protocol's 400 over REST (/classify: 415).
        (lambda m: [jpeg_input(m, [b"not an image"])], "400", "image"),
        (lambda m: [jpeg_input(m, [_pixel_jpeg()[:200]])], "400", "image"),
        (int32_image, "400", "INT32"),
        (lambda m: fp32(m, [1, 3, 16, 16]), "400", "[N, 3, 32, 32]"),
        (lambda m: [*fp32(m, [1, 3, 32, 32]), jpeg_input(m, [b"x"])], "400", "exactly one"),
    ],
    ids=["not-an-image", "truncated-jpeg", "wrong-datatype", "wrong-shape", "two-inputs"],
)
def test_bad_inputs_are_4xx_and_invalid_argument(
    http: httpclient.InferenceServerClient,
    grpc: grpcclient.InferenceServerClient,
    inputs: Callable[[Any], list[Any]],
    status: str,
    problem: str,
) -> None:
    rest, over_grpc = both(http, grpc, inputs)
    assert (rest[0], over_grpc[0]) == (status, "StatusCode.INVALID_ARGUMENT")
    assert problem in rest[1] and rest[1] == over_grpc[1]


def test_unknown_output_is_invalid(
    http: httpclient.InferenceServerClient, grpc: grpcclient.InferenceServerClient
) -> None:
    rest = failure(
        lambda: http.infer(
            MODEL,
            [jpeg_input(httpclient, [_pixel_jpeg()])],
            outputs=[httpclient.InferRequestedOutput("scores")],
        )
    )
    over_grpc = failure(
        lambda: grpc.infer(
            MODEL,
            [jpeg_input(grpcclient, [_pixel_jpeg()])],
            outputs=[grpcclient.InferRequestedOutput("scores")],
        )
    )
    assert (rest[0], over_grpc[0]) == ("400", "StatusCode.INVALID_ARGUMENT")
    assert "unknown output 'scores'" in rest[1]


def test_request_timeout_parameter_past_is_504_and_deadline_exceeded(
    http: httpclient.InferenceServerClient, grpc: grpcclient.InferenceServerClient
) -> None:
    # Triton's timeout parameter is in microseconds: 1 us has passed before decoding starts.
    rest, over_grpc = both(http, grpc, lambda m: [jpeg_input(m, [_pixel_jpeg()])], timeout=1)
    assert (rest[0], over_grpc[0]) == ("504", "StatusCode.DEADLINE_EXCEEDED")
    assert "deadline" in rest[1]


def test_grpc_deadline_bounds_the_request(grpc: grpcclient.InferenceServerClient) -> None:
    """A deadline the server can meet is met; the gRPC deadline reaches the pipeline as
    its timeout (the unit test of the servicer checks the value passed)."""
    result = grpc.infer(MODEL, [jpeg_input(grpcclient, [_pixel_jpeg()])], client_timeout=30)
    assert result.as_numpy("logits").shape == (1, CIFAR_CLASSES)


def test_api_key_is_required_except_for_health(strict_server: V2Server) -> None:
    http = httpclient.InferenceServerClient(strict_server.rest)
    grpc = grpcclient.InferenceServerClient(strict_server.grpc)
    for headers in (None, {"x-api-key": "wrong"}):
        rest, over_grpc = both(
            http, grpc, lambda m: [jpeg_input(m, [_pixel_jpeg()])], headers=headers
        )
        assert (rest[0], over_grpc[0]) == ("401", "StatusCode.UNAUTHENTICATED")
        assert failure(lambda h=headers: http.get_model_metadata(MODEL, headers=h))[0] == "401"
        assert (
            failure(lambda h=headers: grpc.get_model_metadata(MODEL, headers=h))[0]
            == "StatusCode.UNAUTHENTICATED"
        )
    for module, client in ((httpclient, http), (grpcclient, grpc)):
        assert client.is_server_ready() and client.is_model_ready(MODEL)
        assert client.get_model_metadata(MODEL, headers={"x-api-key": API_KEY})
        result = client.infer(
            MODEL, [jpeg_input(module, [_pixel_jpeg()])], headers={"x-api-key": API_KEY}
        )
        assert result.as_numpy("logits").shape == (1, CIFAR_CLASSES)


def test_full_queue_is_503_and_unavailable(strict_server: V2Server) -> None:
    """An upload that stalls after its headers holds the queue's one place; meanwhile
    both doors are refused at admission, before reading or decoding anything."""
    http = httpclient.InferenceServerClient(strict_server.rest)
    grpc = grpcclient.InferenceServerClient(strict_server.grpc)
    good = {"x-api-key": API_KEY}
    with socket.create_connection(("127.0.0.1", strict_server.process.port), timeout=10) as stalled:
        stalled.sendall(
            f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nHost: x\r\nx-api-key: {API_KEY}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{".encode()
        )
        wait_for_metric(strict_server, "resnet_serve_in_flight_requests", 1.0, protocol="v2-rest")
        rest, over_grpc = both(http, grpc, lambda m: [jpeg_input(m, [_pixel_jpeg()])], headers=good)
    assert (rest[0], over_grpc[0]) == ("503", "StatusCode.UNAVAILABLE")
    assert "queue" in rest[1] and rest[1] == over_grpc[1]


def wait_for_metric(server: V2Server, name: str, value: float, **labels: str) -> None:
    """Poll /metrics until ``name`` reaches ``value`` (bounded: 10 s)."""
    deadline = time.monotonic() + 10
    while server.process.metric(name, **labels) != value:
        assert time.monotonic() < deadline, f"{name}{labels} never reached {value}"
        time.sleep(0.02)


def test_message_over_the_body_limit_is_413_and_resource_exhausted(strict_server: V2Server) -> None:
    """An FP32 CIFAR tensor is 12 KiB, over this server's 8 KiB body limit."""
    http = httpclient.InferenceServerClient(strict_server.rest)
    grpc = grpcclient.InferenceServerClient(strict_server.grpc)
    good = {"x-api-key": API_KEY}
    rest, over_grpc = both(http, grpc, lambda m: fp32(m, [1, 3, 32, 32]), headers=good)
    assert (rest[0], over_grpc[0]) == ("413", "StatusCode.RESOURCE_EXHAUSTED")


# -- one batcher behind every door -----------------------------------------------------
BURSTS = 10  # at most; a burst that shares a batch ends the search


async def burst(server: V2Server, images: list[bytes]) -> tuple[int, list[np.ndarray]]:
    """One /classify request and one V2 REST and one V2 gRPC request per image, all at
    once: (the /classify request's batch size, every answer's probabilities in order)."""
    import tritonclient.grpc.aio as grpc_aio
    import tritonclient.http.aio as http_aio

    rest = http_aio.InferenceServerClient(server.rest)
    over_grpc = grpc_aio.InferenceServerClient(server.grpc)
    wanted = "probabilities"

    async def classify(client: httpx.AsyncClient) -> tuple[int, np.ndarray]:
        files = [("file", ("0.jpg", images[0], "image/jpeg"))]
        params = {"top_k": CIFAR_CLASSES}
        body = (await client.post("/classify", params=params, files=files)).json()
        row = np.zeros(CIFAR_CLASSES)
        for p in body["results"][0]["predictions"]:
            row[p["index"]] = p["score"]
        return body["timings"]["batch_size"], row

    async def v2(module: Any, client: Any, image: bytes) -> np.ndarray:
        outputs = [module.InferRequestedOutput(wanted)]
        result = await client.infer(MODEL, [jpeg_input(module, [image])], outputs=outputs)
        return result.as_numpy(wanted)[0]

    try:
        async with httpx.AsyncClient(base_url=server.process.url, timeout=30) as client:
            jobs = [
                classify(client),
                *(v2(httpclient, rest, image) for image in images[1:]),
                *(v2(grpcclient, over_grpc, image) for image in images[1:]),
            ]
            (batch_size, first), *rows = await asyncio.gather(*jobs)
    finally:
        await rest.close()
        await over_grpc.close()
    return batch_size, [first, *rows]


def test_classify_and_v2_requests_share_batches_and_answer_as_alone(
    v2_server: V2Server,
    grpc: grpcclient.InferenceServerClient,
    cifar_sample: list[tuple[str, bytes, int]],
) -> None:
    images = [data for _, data, _ in cifar_sample[::37]][:5]
    alone = [grpc_probabilities(grpc, [image])[0] for image in images]
    expected = [alone[0], *alone[1:], *alone[1:]]  # classify, then REST, then gRPC
    labels = {"model": MODEL, "version": "1"}
    batches_before = v2_server.process.metric("resnet_serve_batch_size_count", **labels)
    images_before = v2_server.process.metric("resnet_serve_batch_size_sum", **labels)
    shared = 0
    for attempt in range(1, BURSTS + 1):
        batch_size, answers = asyncio.run(burst(v2_server, images))
        for answer, reference in zip(answers, expected, strict=True):
            np.testing.assert_allclose(answer, reference, rtol=0, atol=1e-6)
        if batch_size > 1:  # the only /classify request of the burst ran with V2 requests
            shared = attempt
            break
    assert shared, f"/classify never shared a batch with V2 requests in {BURSTS} bursts"
    batches = v2_server.process.metric("resnet_serve_batch_size_count", **labels) - batches_before
    images_run = v2_server.process.metric("resnet_serve_batch_size_sum", **labels) - images_before
    assert images_run == shared * (2 * len(images) - 1)
    assert batches < images_run  # the batch-size metric saw images sharing batches
