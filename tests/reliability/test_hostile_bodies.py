"""Hostile bodies and messages on the V2 doors: what a body makes the server build and
spend, beyond its bytes.

Each attack runs against the real server (pretrained CIFAR ResNet-20, default limits
but for the gRPC ones named) for a bounded time while a prober asks ``/health/live``
every 100 ms on its own connection and valid clients classify an image. For each attack
the test asserts:

* peak RSS (VmHWM, reset before the attack) within the documented formula's share for
  bodies and parsing: ``idle + max_body_bytes_in_flight + max_parse_bytes + 2 x
  grpc_max_concurrent_rpcs x grpc_max_message_bytes + slack``;
* ``/health/live`` answered within 1 s throughout (the event loop never blocks long);
* valid requests get 200: at least half of them while the attack runs, all once it ends;
* the attack itself gets only 4xx, 503 or 504 (its gRPC forms), never a 500, and the
  server log holds no traceback.

Every loop is bounded in count and time; traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import pytest
from PIL import Image
from tritonclient.grpc import service_pb2

from benchmarks.harness import ServerProcess
from tests.reliability.test_hostile_clients import current_rss, peak_rss, reset_peak

API_KEY = "bodies-suite-key"
MODEL = "resnet20"
MiB = 2**20
MAX_BODY = 32 * MiB  # the default: the 31 MiB JSON attack fits under it
BODY_IN_FLIGHT = 64 * MiB
MAX_PARSE = 128 * MiB
GRPC_MESSAGE = 4 * MiB
GRPC_CALLS = 8
SLACK = 96 * MiB
ATTACK_S = 6.0


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (40, 90, 160)).save(buffer, "JPEG")
    return buffer.getvalue()


GOOD = jpeg()


@dataclass
class Siege:
    """Counts of what the attack, the valid clients and the prober saw."""

    attack: Counter[str] = field(default_factory=Counter)
    valid_during: Counter[int] = field(default_factory=Counter)
    live_worst_s: float = 0.0
    live_failures: int = 0
    #: RSS when the attack began; the peak (VmHWM) is reset to it.
    idle_bytes: int = 0


@pytest.fixture(scope="module")
def server(
    cifar_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("bodies") / "server.log"
    with ServerProcess(
        cifar_repository,
        log,
        api_key=API_KEY,
        max_body_bytes=MAX_BODY,
        max_body_bytes_in_flight=BODY_IN_FLIGHT,
        max_parse_bytes=MAX_PARSE,
        grpc_max_message_bytes=GRPC_MESSAGE,
        grpc_max_concurrent_rpcs=GRPC_CALLS,
    ) as process:
        yield process


def classify_ok(url: str) -> int:
    try:
        response = httpx.post(
            f"{url}/classify",
            content=GOOD,
            headers={"X-API-Key": API_KEY, "Content-Type": "image/jpeg"},
            timeout=10,
        )
    except httpx.HTTPError:
        return 0
    return response.status_code


def siege(server: ServerProcess, attack: Callable[[], str], *, attackers: int = 2) -> Siege:
    """Run ``attack`` (returns an outcome label) repeatedly for ATTACK_S while the prober
    and valid clients run; then check every valid request succeeds again."""
    result = Siege(idle_bytes=current_rss(server.process.pid))
    reset_peak(server.process.pid)
    stop = threading.Event()
    lock = threading.Lock()

    def attacker() -> None:
        while not stop.is_set():
            outcome = attack()
            with lock:
                result.attack[outcome] += 1

    def prober() -> None:
        with httpx.Client(base_url=server.url, timeout=5) as client:
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    ok = client.get("/health/live").status_code == 200
                except httpx.HTTPError:
                    ok = False
                took = time.perf_counter() - started
                with lock:
                    result.live_worst_s = max(result.live_worst_s, took)
                    result.live_failures += 0 if ok else 1
                time.sleep(0.1)

    def valid() -> None:
        while not stop.is_set():
            status = classify_ok(server.url)
            with lock:
                result.valid_during[status] += 1
            time.sleep(0.05)

    threads = [threading.Thread(target=attacker) for _ in range(attackers)]
    threads += [threading.Thread(target=prober), threading.Thread(target=valid)]
    for thread in threads:
        thread.start()
    time.sleep(ATTACK_S)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive(), "a load thread did not stop"
    return result


def check(server: ServerProcess, result: Siege, *, allowed: set[str]) -> None:
    idle = result.idle_bytes
    peak = peak_rss(server.process.pid)
    bound = idle + BODY_IN_FLIGHT + MAX_PARSE + 2 * GRPC_CALLS * GRPC_MESSAGE + SLACK
    print(
        f"attack {dict(result.attack)} valid {dict(result.valid_during)} "
        f"live worst {result.live_worst_s * 1000:.0f} ms, peak +{(peak - idle) / MiB:.0f} MiB "
        f"(bound +{(bound - idle) / MiB:.0f})"
    )
    assert peak <= bound, f"peak {peak / MiB:.0f} MiB over the bound {bound / MiB:.0f} MiB"
    assert result.live_failures == 0 and result.live_worst_s < 1.0, result
    assert set(result.attack) <= allowed, result.attack
    valid = sum(result.valid_during.values())
    assert valid > 0 and result.valid_during[200] >= valid / 2, result.valid_during
    assert all(classify_ok(server.url) == 200 for _ in range(5))
    log = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]


def rest(server: ServerProcess, body: bytes, *, headers: dict[str, str] | None = None) -> str:
    try:
        response = httpx.post(
            f"{server.url}/v2/models/{MODEL}/infer",
            content=body,
            headers={"X-API-Key": API_KEY, "Content-Type": "application/json", **(headers or {})},
            timeout=30,
        )
    except httpx.HTTPError as exc:
        return type(exc).__name__
    assert "error" in response.json(), response.text[:200]
    return str(response.status_code)


def document(inputs: str, *, parameters: str = "{}") -> bytes:
    return f'{{"parameters": {parameters}, "inputs": {inputs}}}'.encode()


def tensor(data: str, *, shape: str = "[1]", datatype: str = "BYTES") -> str:
    return f'[{{"name": "image", "datatype": "{datatype}", "shape": {shape}, "data": {data}}}]'


#: JSON bodies: each is either refused before it is parsed, or parsed off the loop.
REST_ATTACKS: dict[str, bytes] = {
    # ~31 MiB of tiny elements under max_body_bytes: one Python object per 3 bytes.
    "tiny-lists": document(tensor("[" + "[]," * (10 * MiB) + "[]]")),
    "empty-strings": document(tensor("[" + '"",' * (10 * MiB) + '""]')),
    "deep-nesting": document(tensor("[" * 100_000 + "]" * 100_000)),
    "huge-integer": document(tensor("[" + "9" * 5000 + "]", datatype="FP32")),
    "huge-timeout": document(tensor('["AA=="]'), parameters='{"timeout": 1e400}'),
    "huge-int-timeout": document(tensor('["AA=="]'), parameters='{"timeout": ' + "9" * 400 + "}"),
    # A shape of many huge dimensions: 2.3 MiB that used to cost a million-digit product.
    "huge-shape": document(
        tensor('["AA=="]', shape="[" + ",".join(["1099511627776"] * 180_000) + "]")
    ),
}


def grpc_call(server: ServerProcess, raw: bytes, *, timeout: float = 30) -> str:
    channel = grpc.insecure_channel(
        f"127.0.0.1:{server.grpc_port}",
        options=[("grpc.max_send_message_length", -1)],
    )
    infer = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=None,
        response_deserializer=None,
    )
    try:
        infer(raw, metadata=(("x-api-key", API_KEY),), timeout=timeout)
        return "OK"
    except grpc.RpcError as exc:
        code = exc.code()
        assert code != grpc.StatusCode.INTERNAL and code != grpc.StatusCode.UNKNOWN, exc
        return str(code.name)
    finally:
        channel.close()


def grpc_message(build: Callable[[service_pb2.ModelInferRequest], None]) -> bytes:
    message = service_pb2.ModelInferRequest(model_name=MODEL)
    build(message)
    return message.SerializeToString()


def _empty_bytes(message: service_pb2.ModelInferRequest) -> None:
    tensor = message.inputs.add(name="image", datatype="BYTES", shape=[1_000_000])
    tensor.contents.bytes_contents.extend([b""] * 1_000_000)


def _huge_shape(message: service_pb2.ModelInferRequest) -> None:
    message.inputs.add(name="image", datatype="BYTES", shape=[2**40] * 45_000)


GRPC_ATTACKS: dict[str, bytes] = {
    "million-empty-bytes": grpc_message(_empty_bytes),
    "huge-shape": grpc_message(_huge_shape),
    "malformed": b"\x0a\xff\xff\xff\xff\x0f" + b"\x00" * 64,
}


#: (door, attack, the only answers it may get): JSON bodies refused before they are
#: parsed or parsed off the loop; protobuf messages parsed off the loop and checked on
#: their containers before anything is copied.
BODY_ATTACKS = [
    *(("rest", name, {"400", "413", "503"}) for name in REST_ATTACKS),
    *(("grpc", name, {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}) for name in GRPC_ATTACKS),
]


@pytest.mark.parametrize(
    ("door", "name", "allowed"), BODY_ATTACKS, ids=[f"{d}-{n}" for d, n, _ in BODY_ATTACKS]
)
def test_body_attacks_cost_neither_memory_nor_the_loop(
    server: ServerProcess, door: str, name: str, allowed: set[str]
) -> None:
    if door == "rest":
        body = REST_ATTACKS[name]
        assert len(body) < MAX_BODY
        result = siege(server, lambda: rest(server, body))
    else:
        raw = GRPC_ATTACKS[name]
        assert len(raw) < GRPC_MESSAGE
        result = siege(server, lambda: grpc_call(server, raw))
    check(server, result, allowed=allowed)


def test_a_flood_of_maximal_grpc_messages_is_bounded_and_retryable(server: ServerProcess) -> None:
    """Many more maximal calls at once than the server serves: past the pipeline's limit
    they get UNAVAILABLE (retryable, counted), past gRPC's own twice that RESOURCE_EXHAUSTED;
    memory stays within what the formula gives for gRPC messages."""
    image = GOOD + b"\x00" * (GRPC_MESSAGE - len(GOOD) - 1024)  # a JPEG with trailing bytes

    def _one(message: service_pb2.ModelInferRequest) -> None:
        tensor = message.inputs.add(name="image", datatype="BYTES", shape=[1])
        tensor.contents.bytes_contents.append(image)

    raw = grpc_message(_one)
    result = siege(server, lambda: grpc_call(server, raw), attackers=4 * GRPC_CALLS)
    check(
        server,
        result,
        allowed={
            "OK",
            "UNAVAILABLE",
            "RESOURCE_EXHAUSTED",
            "INVALID_ARGUMENT",
            "DEADLINE_EXCEEDED",
        },
    )
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    counted = [
        line
        for line in metrics.splitlines()
        if line.startswith("resnet_serve_requests_total{") and 'protocol="v2-grpc"' in line
    ]
    assert counted, "gRPC calls were not counted"


def test_json_attack_figures_are_in_one_line_each(server: ServerProcess) -> None:
    """The refusals say what was wrong and what is allowed (the client cannot see logs)."""
    answers = {}
    for name in ("tiny-lists", "huge-shape", "huge-integer", "deep-nesting"):
        response = httpx.post(
            f"{server.url}/v2/models/{MODEL}/infer",
            content=REST_ATTACKS[name],
            headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
            timeout=30,
        )
        answers[name] = (response.status_code, json.loads(response.text)["error"])
    assert answers["tiny-lists"][0] == 413 and "at most" in answers["tiny-lists"][1]
    assert answers["huge-shape"][0] == 400 and "at most 8" in answers["huge-shape"][1]
    assert answers["huge-integer"][0] == 400
    assert answers["deep-nesting"][0] in (400, 413)


def test_expensive_decodes_cannot_starve_cheap_images(server: ServerProcess) -> None:
    """Progressive JPEGs of 2000x2000 with as many scans as the bound allows (each decode
    about a second here) run in the heavy lane: cheap valid images keep the cheap lane.
    Past the bound, from the header, 413 without a decode."""
    from tests.reliability import images

    heavy = images.hostile_progressive_jpeg(scans=480)  # under max_jpeg_scans (500)
    beyond = images.hostile_progressive_jpeg(scans=3000)

    def attack() -> str:
        body = heavy if time.monotonic() % 2 < 1 else beyond
        try:
            response = httpx.post(
                f"{server.url}/classify",
                content=body,
                headers={"X-API-Key": API_KEY, "Content-Type": "image/jpeg"},
                timeout=30,
            )
        except httpx.HTTPError as exc:
            return type(exc).__name__
        return str(response.status_code)

    result = siege(server, attack, attackers=4)
    check(server, result, allowed={"200", "413", "503", "504"})
    assert result.attack["413"] > 0  # the one beyond the bound never decoded
