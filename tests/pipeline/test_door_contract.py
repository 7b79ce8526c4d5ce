"""The door contract, stated once and checked on every door with its real client.

A door is a transport, a parse/encode pair and an error table around one call of
:meth:`service.pipeline.Pipeline.serve`. So, on ``/classify`` (httpx), V2 REST
(``tritonclient.http``) and V2 gRPC (``tritonclient.grpc``) alike:

* the same image gets the same answer;
* each fault gets the same class of answer (the door's form of one typed error);
* every outcome is counted exactly once in ``resnet_serve_requests_total`` with its
  door label, refusals before the model is known included;
* every call has a request id, echoed back, and a server span that continues the
  caller's ``traceparent``, with the pipeline's stages as its children.

One real server (pretrained CIFAR ResNet-20) with an API key, spans written to its log
by OpenTelemetry's console exporter. Health agreement is in ``test_readiness_agreement``.
"""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from benchmarks.harness import ServerProcess
from tests.v2.conftest import API_KEY

MODEL = "resnet20"
MAX_IMAGES = 4
#: A few hundred KiB of body budget: one slow upload can hold all of it.
BODY_BUDGET = 256 * 1024
TRACE_ID = "5bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "10f067aa0ba902b7"


def jpeg(color: tuple[int, int, int], size: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


GOOD = jpeg((10, 120, 200))
TRUNCATED = GOOD[: len(GOOD) // 2]
NOT_AN_IMAGE = b"plain text, no image"


@dataclass(frozen=True)
class Answer:
    """What a door answered, in one vocabulary: a fault class or the top-5 classes."""

    fault: str | None  # None: success
    top5: tuple[int, ...] = ()
    request_id: str | None = None


#: Each door's error table, read backwards: its status or code -> the fault class.
HTTP_FAULTS = {
    400: "bad input",
    401: "unauthorized",
    404: "not found",
    408: "too slow",
    413: "too large",
    415: "bad input",
    422: "bad parameter",
    499: "client gone",
    503: "unavailable",
    504: "deadline",
}
GRPC_FAULTS = {
    "StatusCode.INVALID_ARGUMENT": "bad input",
    "StatusCode.UNAUTHENTICATED": "unauthorized",
    "StatusCode.NOT_FOUND": "not found",
    "StatusCode.RESOURCE_EXHAUSTED": "too large",
    "StatusCode.UNAVAILABLE": "unavailable",
    "StatusCode.DEADLINE_EXCEEDED": "deadline",
}


@dataclass(frozen=True)
class Ask:
    """One call, door-neutral."""

    images: tuple[bytes, ...] = (GOOD,)
    model: str = MODEL
    version: str = ""
    key: str | None = API_KEY
    timeout_us: int | None = None
    request_id: str | None = None
    traceparent: str | None = None


class Door:
    name: str

    def call(self, ask: Ask) -> Answer:
        raise NotImplementedError


class Classify(Door):
    name = "classify"

    def __init__(self, url: str) -> None:
        self.url = url

    def call(self, ask: Ask) -> Answer:
        headers = {}
        if ask.key is not None:
            headers["X-API-Key"] = ask.key
        if ask.timeout_us is not None:
            headers["X-Request-Timeout-Ms"] = str(ask.timeout_us / 1000)
        if ask.request_id:
            headers["X-Request-ID"] = ask.request_id
        if ask.traceparent:
            headers["traceparent"] = ask.traceparent
        params: dict[str, Any] = {"model": ask.model, "top_k": 5}
        if ask.version:
            params["version"] = ask.version
        files = [("file", (f"{i}.jpg", data)) for i, data in enumerate(ask.images)]
        response = httpx.post(
            f"{self.url}/classify", params=params, files=files, headers=headers, timeout=30
        )
        request_id = response.headers.get("x-request-id")
        if response.status_code != 200:
            assert "internal" not in response.text, response.text
            return Answer(HTTP_FAULTS[response.status_code], request_id=request_id)
        top = response.json()["results"][0]["predictions"]
        return Answer(None, tuple(p["index"] for p in top), request_id)


def _v2_inputs(module: Any, images: tuple[bytes, ...]) -> list[Any]:
    tensor = module.InferInput("image", [len(images), 1], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=object).reshape(-1, 1))
    return [tensor]


def _v2_headers(ask: Ask) -> dict[str, str]:
    """The call's key, request id and trace context as V2 clients send them."""
    headers = {"x-api-key": ask.key} if ask.key is not None else {}
    if ask.request_id:
        headers["x-request-id"] = ask.request_id
    if ask.traceparent:
        headers["traceparent"] = ask.traceparent
    return headers


def _top5(logits: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argsort(-logits[0], kind="stable")[:5])


class V2Rest(Door):
    name = "v2-rest"

    def __init__(self, address: str) -> None:
        self.client = httpclient.InferenceServerClient(address, network_timeout=30)

    def call(self, ask: Ask) -> Answer:
        headers = _v2_headers(ask)
        try:
            result = self.client.infer(
                ask.model,
                _v2_inputs(httpclient, ask.images),
                model_version=ask.version,
                outputs=[httpclient.InferRequestedOutput("logits", binary_data=True)],
                headers=headers,
                timeout=ask.timeout_us,
            )
        except InferenceServerException as exc:
            assert "internal" not in str(exc.message()), exc
            return Answer(HTTP_FAULTS[int(exc.status())])
        logits = result.as_numpy("logits")
        assert logits is not None
        return Answer(None, _top5(logits), result.get_response().get("id"))


class V2Grpc(Door):
    name = "v2-grpc"

    def __init__(self, address: str) -> None:
        self.client = grpcclient.InferenceServerClient(address)

    def call(self, ask: Ask) -> Answer:
        headers = _v2_headers(ask)
        try:
            result = self.client.infer(
                ask.model,
                _v2_inputs(grpcclient, ask.images),
                model_version=ask.version,
                outputs=[grpcclient.InferRequestedOutput("logits")],
                headers=headers,
                timeout=ask.timeout_us,
                client_timeout=30,
            )
        except InferenceServerException as exc:
            assert "internal" not in str(exc.message()), exc
            return Answer(GRPC_FAULTS[str(exc.status())])
        logits = result.as_numpy("logits")
        assert logits is not None
        return Answer(None, _top5(logits))


@dataclass
class Served:
    process: ServerProcess
    doors: dict[str, Door]

    def requests(self) -> dict[tuple[str, str, str], float]:
        """``resnet_serve_requests_total`` by (model, protocol, code)."""
        text = httpx.get(f"{self.process.url}/metrics", timeout=10).text
        counts: dict[tuple[str, str, str], float] = {}
        for line in text.splitlines():
            if line.startswith("resnet_serve_requests_total{"):
                labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
                key = (labels["model"], labels["protocol"], labels["code"])
                counts[key] = float(line.rsplit(" ", 1)[1])
        return counts


@pytest.fixture(scope="module")
def served(cifar_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    log = tmp_path_factory.mktemp("doors") / "server.log"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OTEL_TRACES_EXPORTER", "console")
        env.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        process = ServerProcess(
            cifar_repository,
            log,
            api_key=API_KEY,
            max_images_per_request=MAX_IMAGES,
            max_body_bytes=BODY_BUDGET,
            max_body_bytes_in_flight=BODY_BUDGET,
            grpc_max_message_bytes=BODY_BUDGET,
            tracing="true",
        )
    try:
        process.wait_ready()
        doors: dict[str, Door] = {
            "classify": Classify(process.url),
            "v2-rest": V2Rest(f"127.0.0.1:{process.port}"),
            "v2-grpc": V2Grpc(f"127.0.0.1:{process.grpc_port}"),
        }
        yield Served(process, doors)
    finally:
        process.stop()


DOORS = ("classify", "v2-rest", "v2-grpc")


def test_the_same_image_gets_the_same_answer_on_every_door(served: Served) -> None:
    images = (jpeg((200, 30, 30)), jpeg((30, 200, 30)), GOOD)
    for image in images:
        answers = {name: served.doors[name].call(Ask(images=(image,))) for name in DOORS}
        assert {a.fault for a in answers.values()} == {None}, answers
        assert len({a.top5 for a in answers.values()}) == 1, answers


#: (fault case, what to ask, the class every door answers it with)
FAULTS: list[tuple[str, Ask, str]] = [
    ("unknown model", Ask(model="no-such-model"), "not found"),
    ("bad version", Ask(version="7"), "not found"),
    ("malformed version", Ask(version="x1"), "not found"),
    ("truncated image", Ask(images=(TRUNCATED,)), "bad input"),
    ("not an image", Ask(images=(NOT_AN_IMAGE,)), "bad input"),
    ("too many images", Ask(images=(GOOD,) * (MAX_IMAGES + 1)), "too large"),
    ("no key", Ask(key=None), "unauthorized"),
    ("wrong key", Ask(key="nope"), "unauthorized"),
    ("spent deadline", Ask(timeout_us=1), "deadline"),
]


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize(("case", "ask", "fault"), FAULTS, ids=[f[0] for f in FAULTS])
def test_each_fault_gets_the_same_class_of_answer_and_is_counted_once(
    served: Served, door: str, case: str, ask: Ask, fault: str
) -> None:
    before = served.requests()
    answer = served.doors[door].call(ask)
    assert answer.fault == fault, (door, case, answer)
    after = served.requests()
    changed = {k: after[k] - before.get(k, 0.0) for k in after if after[k] != before.get(k)}
    assert list(changed.values()) == [1.0], (door, case, changed)
    ((_, protocol, code),) = changed
    assert protocol == door
    assert code != "500"


def test_over_the_body_budget_every_door_answers_unavailable_and_counts_it(
    served: Served,
) -> None:
    # One slow upload declares the whole body budget and sends a byte: until it goes,
    # every door's request is refused at once (retryable), not queued behind it.
    holder = socket.create_connection(("127.0.0.1", served.process.port))
    try:
        holder.sendall(
            b"POST /classify?model=resnet20 HTTP/1.1\r\nHost: x\r\n"
            b"X-API-Key: " + API_KEY.encode() + b"\r\nContent-Type: image/jpeg\r\n"
            b"Content-Length: " + str(BODY_BUDGET).encode() + b"\r\n\r\n\xff"
        )
        _wait_for_budget_taken(served)
        for name in DOORS:
            before = served.requests()
            assert served.doors[name].call(Ask()).fault == "unavailable", name
            after = served.requests()
            assert after[(MODEL, name, "503")] - before.get((MODEL, name, "503"), 0) == 1
    finally:
        holder.close()
    _wait_for(lambda: served.doors["classify"].call(Ask()).fault is None)


def _wait_for_budget_taken(served: Served) -> None:
    def taken() -> bool:
        text = httpx.get(f"{served.process.url}/metrics", timeout=10).text
        match = re.search(r"^resnet_serve_body_\w*in_flight\w* (\S+)$", text, re.MULTILINE)
        return match is not None and float(match.group(1)) >= BODY_BUDGET

    _wait_for(taken)


def _wait_for(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.mark.parametrize("door", ["classify", "v2-rest"])
def test_a_client_gone_mid_body_is_counted_as_499(served: Served, door: str) -> None:
    path = "/classify" if door == "classify" else f"/v2/models/{MODEL}/infer"
    before = served.requests()
    with socket.create_connection(("127.0.0.1", served.process.port)) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\n"
            "Content-Type: image/jpeg\r\nContent-Length: 5000\r\n\r\n".encode()
            + b"\xff" * 10
        )
        time.sleep(0.3)  # the pipeline is reading the body
    _wait_for(
        lambda: (
            served.requests().get((MODEL, door, "499"), 0) - before.get((MODEL, door, "499"), 0)
            == 1
        )
    )


def test_every_call_has_a_request_id_echoed_back(served: Served) -> None:
    for name in ("classify", "v2-rest"):
        asked = f"rid-{uuid.uuid4().hex[:8]}"
        if name == "classify":
            assert served.doors[name].call(Ask(request_id=asked)).request_id == asked
        else:  # tritonclient.http hides response headers: ask with httpx
            response = httpx.post(
                f"{served.process.url}/v2/models/{MODEL}/infer",
                json={"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                  "data": [base64.b64encode(GOOD).decode()]}]},
                headers={"X-API-Key": API_KEY, "X-Request-ID": asked},
                timeout=30,
            )  # fmt: skip
            assert response.status_code == 200 and response.headers["x-request-id"] == asked
        fresh = served.doors["classify"].call(Ask()).request_id
        assert fresh and re.fullmatch(r"[0-9a-f]{32}", fresh)
    # gRPC: the id travels in metadata both ways (the raw stub shows the initial metadata).
    channel = grpc.insecure_channel(f"127.0.0.1:{served.process.grpc_port}")
    infer = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=service_pb2.ModelInferRequest.SerializeToString,
        response_deserializer=service_pb2.ModelInferResponse.FromString,
    )
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    tensor = request.inputs.add(name="image", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(GOOD)
    _, call = infer.with_call(
        request, metadata=(("x-api-key", API_KEY), ("x-request-id", "grpc-rid-1")), timeout=30
    )
    assert ("x-request-id", "grpc-rid-1") in call.initial_metadata()
    channel.close()


def test_every_door_continues_the_callers_trace_with_stage_spans(served: Served) -> None:
    request_ids = {}
    for name in DOORS:
        request_ids[name] = f"trace-{name}-{uuid.uuid4().hex[:6]}"
        ask = Ask(request_id=request_ids[name], traceparent=f"00-{TRACE_ID}-{PARENT_ID}-01")
        assert served.doors[name].call(ask).fault is None
    spans: list[dict[str, Any]] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        spans = _spans(served.process.log_path)
        servers = [s for s in spans if s["attributes"].get("request_id") in request_ids.values()]
        if len(servers) == len(DOORS):
            break
        time.sleep(0.2)
    by_id = {s["context"]["span_id"]: s for s in spans}
    for name in DOORS:
        (server,) = [s for s in spans if s["attributes"].get("request_id") == request_ids[name]]
        assert server["kind"] == "SpanKind.SERVER", name
        assert server["context"]["trace_id"] == f"0x{TRACE_ID}", name
        assert server["parent_id"] == f"0x{PARENT_ID}", name
        assert server["attributes"]["door"] == name
        children = {
            s["name"] for s in by_id.values() if s.get("parent_id") == server["context"]["span_id"]
        }
        assert {"read", "parse", "decode", "queue", "inference"} <= children, (name, children)
    # Probes are never traced.
    probe = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
    httpx.get(f"{served.process.url}/health/ready", headers=probe, timeout=10)
    assert not [s for s in _spans(served.process.log_path) if "health" in s["name"]]


def _spans(log: Path) -> list[dict[str, Any]]:
    """The console exporter's JSON objects in the server log."""
    text = log.read_text(errors="replace")
    spans = []
    decoder = json.JSONDecoder()
    for match in re.finditer(r"^\{$", text, re.MULTILINE):
        try:
            obj, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(obj, dict) and "context" in obj and "kind" in obj:
            spans.append(obj)
    return spans
