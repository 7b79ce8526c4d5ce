"""Tracing: free when off; server and child spans exported when on, OTEL_* honoured."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from service import tracing
from service.api.request_id import RequestIdMiddleware
from tests.fakes import GRAY, build_app, classify, run, running

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    tracing.configure_tracing(memory)
    yield memory
    tracing.shutdown_tracing()


def test_span_is_one_shared_no_op_while_tracing_is_off() -> None:
    assert not tracing.enabled()
    first = tracing.span("decode", images=3)
    assert first is tracing.span("inference")  # nothing allocated per call
    with first:
        pass


def test_request_gets_a_server_span_under_the_callers_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exporter: InMemorySpanExporter
) -> None:
    app, _ = build_app(tmp_path)

    async def scenario() -> None:
        async with running(app) as client:
            headers = {"traceparent": TRACEPARENT, "X-Request-ID": "req-9"}
            assert (await client.get("/health/live", headers=headers)).status_code == 200

    run(scenario)
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "GET /health/live"]
    assert span.kind == SpanKind.SERVER
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT_ID
    assert span.attributes["request_id"] == "req-9"
    assert span.attributes["http.response.status_code"] == 200
    assert span.resource.attributes["service.name"] == "resnet-serve"


def test_pipeline_spans_are_children_of_the_request_span(exporter: InMemorySpanExporter) -> None:
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        with tracing.span("decode", images=2):
            pass
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=RequestIdMiddleware(app))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            await client.get("/classify")

    run(scenario)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    decode, server = spans["decode"], spans["GET /classify"]
    assert decode.attributes["images"] == 2
    assert decode.parent is not None and decode.parent.span_id == server.context.span_id


def test_otel_service_name_is_honoured(
    monkeypatch: pytest.MonkeyPatch, exporter: InMemorySpanExporter
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "classifier-eu")
    memory = InMemorySpanExporter()
    tracing.configure_tracing(memory)
    with tracing.span("x"):
        pass
    (span,) = memory.get_finished_spans()
    assert span.resource.attributes["service.name"] == "classifier-eu"


def test_exporter_is_chosen_by_otel_traces_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    tracing.configure_tracing()
    try:
        assert tracing.enabled()
    finally:
        tracing.shutdown_tracing()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin-typo")
    with pytest.raises(ValueError, match="otlp, console or none"):
        tracing.configure_tracing()
    assert not tracing.enabled()


def test_classify_exports_read_decode_queue_inference_under_its_request_span(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    app, _ = build_app(tmp_path)

    async def scenario() -> None:
        async with running(app) as client:
            response = await classify(client, GRAY, headers={"traceparent": TRACEPARENT})
            assert response.status_code == 200

    run(scenario)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    server = spans["POST /classify"]
    for stage in ("read", "decode", "queue", "inference"):
        child = spans[stage]
        assert child.context.trace_id == server.context.trace_id, stage
        assert child.parent is not None and child.parent.span_id == server.context.span_id
        assert server.start_time <= child.start_time <= child.end_time <= server.end_time
    assert spans["queue"].end_time <= spans["inference"].start_time
    assert spans["inference"].attributes["batch_size"] == 1
