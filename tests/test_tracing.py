"""Tracing: free when off; server and child spans exported when on, OTEL_* honoured."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from service import tracing
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


def test_probes_and_scrapes_are_not_traced(tmp_path: Path, exporter: InMemorySpanExporter) -> None:
    app, _ = build_app(tmp_path)

    async def scenario() -> None:
        async with running(app) as client:
            for path in ("/health/live", "/health/ready", "/v2/health/live", "/metrics"):
                await client.get(path, headers={"traceparent": TRACEPARENT})

    run(scenario)
    assert exporter.get_finished_spans() == ()


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
            headers = {"traceparent": TRACEPARENT, "X-Request-ID": "req-9"}
            response = await classify(client, GRAY, headers=headers)
            assert response.status_code == 200

    run(scenario)
    spans = {s.name: s for s in exporter.get_finished_spans()}

    server = spans["POST /classify"]
    assert server.kind == SpanKind.SERVER
    assert format(server.context.trace_id, "032x") == TRACE_ID  # the caller's trace goes on
    assert server.parent is not None and format(server.parent.span_id, "016x") == PARENT_ID
    assert server.attributes["request_id"] == "req-9"
    assert server.attributes["http.response.status_code"] == 200
    assert server.resource.attributes["service.name"] == "resnet-serve"
    for stage in ("read", "parse", "decode", "queue", "inference"):
        child = spans[stage]
        assert child.context.trace_id == server.context.trace_id, stage
        assert child.parent is not None and child.parent.span_id == server.context.span_id
        assert server.start_time <= child.start_time <= child.end_time <= server.end_time
    assert spans["queue"].end_time <= spans["inference"].start_time
    assert spans["inference"].attributes["batch_size"] == 1
