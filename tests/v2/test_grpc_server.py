"""The servicer's wiring, in-process: deadline, request id, API key, the error table."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from tritonclient.grpc import service_pb2

from service.errors import Overloaded
from service.security import check_api_key
from service.settings import Settings
from service.v2.grpc_server import InferenceServicer


class FakeContext:
    def __init__(self, metadata: tuple[tuple[str, str], ...] = (), remaining: float | None = None):
        self.metadata = metadata
        self.remaining = remaining
        self.trailing: tuple[tuple[str, str], ...] = ()
        self.code: grpc.StatusCode | None = None
        self.details = ""
        self.initial: tuple[tuple[str, str], ...] = ()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def time_remaining(self) -> float | None:
        return self.remaining

    async def send_initial_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.initial = metadata

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.trailing = metadata

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details


class RefusingPipeline:
    """Reads the call's head as the pipeline does, then refuses as a full queue does."""

    def __init__(self, **settings: Any) -> None:
        self.asked: dict[str, Any] = {}
        self.settings = Settings(**settings)
        self.intake = SimpleNamespace(offload=self._inline)

    @staticmethod
    async def _inline(work: Any, argument: Any) -> Any:
        return work(argument)

    async def serve(self, call: Any) -> Any:
        head = await call.head()
        check_api_key(self.settings.api_key, head.api_key)
        self.asked = {
            "door": call.door,
            "model": head.model,
            "version": head.version,
            "timeout_s": head.timeout_s,
            "request_id": call.request_id,
        }
        raise Overloaded("the queue is full")


def servicer(pipeline: RefusingPipeline) -> InferenceServicer:
    return InferenceServicer(pipeline, pipeline.settings)  # type: ignore[arg-type]


def infer_request() -> bytes:
    return service_pb2.ModelInferRequest(model_name="m", model_version="2").SerializeToString()


def test_the_grpc_deadline_and_request_id_reach_the_pipeline() -> None:
    pipeline = RefusingPipeline()
    context = FakeContext(metadata=(("x-request-id", "abc-1"),), remaining=0.25)
    asyncio.run(servicer(pipeline).ModelInfer(infer_request(), context))
    assert "queue is full" in context.details
    assert pipeline.asked == {
        "door": "v2-grpc",
        "model": "m",
        "version": "2",
        "timeout_s": 0.25,
        "request_id": "abc-1",
    }
    assert context.initial == (("x-request-id", "abc-1"),)
    assert context.code == grpc.StatusCode.UNAVAILABLE
    assert context.trailing == (("retry-after", "1"),)


def test_a_missing_key_is_unauthenticated() -> None:
    pipeline = RefusingPipeline(api_key="k")
    context = FakeContext()
    asyncio.run(servicer(pipeline).ModelInfer(infer_request(), context))
    assert context.code == grpc.StatusCode.UNAUTHENTICATED and pipeline.asked == {}


def test_a_malformed_message_is_invalid_argument_not_unknown() -> None:
    context = FakeContext()
    asyncio.run(servicer(RefusingPipeline()).ModelInfer(b"\xff\xff\xff", context))
    assert "malformed ModelInferRequest" in context.details
    assert context.code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(("streams", "announced"), [(None, 14), (5, 5)])
def test_server_bounds_what_grpc_holds_before_the_servicer(
    monkeypatch: pytest.MonkeyPatch, streams: int | None, announced: int
) -> None:
    """gRPC reads a message before the budget sees it: its bounds must reach grpc. Unset,
    the per-connection stream cap is every call gRPC admits (one channel may use them
    all); set, it is honoured."""
    from service.v2 import grpc_server

    seen: dict[str, Any] = {}

    class Server:
        def add_insecure_port(self, address: str) -> int:
            return 1

        def add_generic_rpc_handlers(self, handlers: Any) -> None:
            seen["handlers"] = handlers

        async def start(self) -> None:
            pass

    def server(**kwargs: Any) -> Server:
        seen.update(kwargs)
        return Server()

    monkeypatch.setattr(grpc_server.grpc.aio, "server", server)
    settings = Settings(
        grpc_port=1234,
        grpc_max_message_bytes=65536,
        grpc_max_concurrent_rpcs=7,
        **({} if streams is None else {"grpc_max_streams_per_connection": streams}),
    )
    pipeline = RefusingPipeline()
    asyncio.run(grpc_server.start_grpc_server(pipeline, settings))  # type: ignore[arg-type]
    assert seen["maximum_concurrent_rpcs"] == 14  # the pipeline answers 8..14 UNAVAILABLE
    options = dict(seen["options"])
    assert options["grpc.max_receive_message_length"] == 65536
    assert options["grpc.max_concurrent_streams"] == announced
    assert options["grpc.max_allowed_incoming_connections"] == settings.grpc_max_connections
    assert options["grpc.http2.bdp_probe"] == 0
