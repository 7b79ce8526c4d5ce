"""The servicer's wiring, in-process: deadline, API key and the error table."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from tritonclient.grpc import service_pb2

from service.errors import Overloaded
from service.settings import Settings
from service.v2.grpc_server import InferenceServicer


class Aborted(Exception):
    pass


class FakeContext:
    def __init__(self, metadata: tuple[tuple[str, str], ...] = (), remaining: float | None = None):
        self.metadata = metadata
        self.remaining = remaining
        self.trailing: tuple[tuple[str, str], ...] = ()
        self.code: grpc.StatusCode | None = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def time_remaining(self) -> float | None:
        return self.remaining

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.trailing = metadata

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        raise Aborted(details)


class RefusingPipeline:
    """Records what ModelInfer asked of the pipeline, then refuses as a full queue does."""

    def __init__(self) -> None:
        self.asked: dict[str, Any] = {}

    def request(self, door: str, **kwargs: Any) -> Any:
        self.asked = {"door": door, **kwargs}
        raise Overloaded("the queue is full")


def servicer(pipeline: Any, **settings: Any) -> InferenceServicer:
    state = SimpleNamespace(settings=Settings(**settings), pipeline=pipeline, draining=False)
    return InferenceServicer(SimpleNamespace(state=state))  # type: ignore[arg-type]


def infer_request() -> service_pb2.ModelInferRequest:
    return service_pb2.ModelInferRequest(model_name="m", model_version="2")


def test_the_grpc_deadline_becomes_the_requests_timeout() -> None:
    pipeline = RefusingPipeline()
    context = FakeContext(remaining=0.25)
    with pytest.raises(Aborted, match="queue is full"):
        asyncio.run(servicer(pipeline).ModelInfer(infer_request(), context))
    assert pipeline.asked == {"door": "v2-grpc", "model": "m", "version": 2, "timeout_s": 0.25}
    assert context.code == grpc.StatusCode.UNAVAILABLE
    assert context.trailing == (("retry-after", "1"),)


def test_a_missing_key_is_refused_before_the_pipeline_sees_the_call() -> None:
    pipeline = RefusingPipeline()
    context = FakeContext()
    with pytest.raises(Aborted):
        asyncio.run(servicer(pipeline, api_key="k").ModelInfer(infer_request(), context))
    assert context.code == grpc.StatusCode.UNAUTHENTICATED and pipeline.asked == {}


def test_server_bounds_message_size_and_calls_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """gRPC reads a message before the budget sees it: both bounds must reach grpc."""
    from service.v2 import grpc_server

    seen: dict[str, Any] = {}

    class Server:
        def add_insecure_port(self, address: str) -> int:
            return 1

        async def start(self) -> None:
            pass

    def server(**kwargs: Any) -> Server:
        seen.update(kwargs)
        return Server()

    monkeypatch.setattr(grpc_server.grpc.aio, "server", server)
    monkeypatch.setattr(grpc_server.proto, "add_servicer", lambda servicer, srv: None)
    monkeypatch.setattr(grpc_server, "InferenceServicer", lambda app: None)
    settings = Settings(grpc_port=1234, grpc_max_message_bytes=65536, grpc_max_concurrent_rpcs=7)
    asyncio.run(grpc_server.start_grpc_server(SimpleNamespace(), settings))  # type: ignore[arg-type]
    assert seen["maximum_concurrent_rpcs"] == 7
    assert ("grpc.max_receive_message_length", 65536) in seen["options"]
