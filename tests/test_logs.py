"""JSON log lines and request ids: made or taken, echoed, and stamped on log lines."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import httpx
import pytest

from service.api.request_id import RequestIdMiddleware
from service.logs import JsonFormatter, request_id_var
from tests.fakes import build_app, run, running

HEX_ID = re.compile(r"^[0-9a-f]{32}$")


def record(message: str, *, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            exc_info = sys.exc_info()
    return logging.LogRecord("service.x", logging.ERROR, __file__, 1, message, (), exc_info)


def test_json_line_has_the_stable_keys_request_id_and_traceback() -> None:
    token = request_id_var.set("req-1")
    try:
        line = JsonFormatter().format(record("it failed", exc=True))
    finally:
        request_id_var.reset(token)
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["level"] == "ERROR" and entry["logger"] == "service.x"
    assert entry["message"] == "it failed" and entry["request_id"] == "req-1"
    assert entry["exc_info"].startswith("Traceback") and "RuntimeError: boom" in entry["exc_info"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$", entry["time"])
    assert "request_id" not in json.loads(JsonFormatter().format(record("outside")))


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        (b"client-id-42", True),
        (b"x" * 128, True),
        (b"x" * 129, False),
        (b"caf\xc3\xa9", False),  # not ASCII
        (b"tab\there", False),  # a control character
        (None, False),
    ],
)
def test_request_id_is_taken_when_usable_and_always_echoed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sent: bytes | None, kept: bool
) -> None:
    app, _ = build_app(tmp_path)

    async def scenario() -> None:
        async with running(app) as client:
            headers = {"X-Request-ID": sent} if sent is not None else {}
            response = await client.get("/health/live", headers=headers)
            echoed = response.headers["x-request-id"]
            if kept:
                assert echoed.encode() == sent
            else:
                assert HEX_ID.match(echoed), echoed

    run(scenario)


def test_log_lines_written_while_handling_a_request_carry_its_id() -> None:
    seen: list[str | None] = []

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        logging.getLogger("service.test").warning("handling")
        seen.append(request_id_var.get())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=RequestIdMiddleware(app))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/", headers={"X-Request-ID": "abc"})
            assert response.headers["x-request-id"] == "abc"

    run(scenario)
    assert seen == ["abc"]
    assert request_id_var.get() is None  # reset after the request


def test_json_server_log_carries_the_request_id(start_server, model_repository: Path) -> None:
    srv = start_server(model_repository, log_format="json", log_level="debug", max_batch_size=1)
    response = httpx.get(f"{srv.url}/health/ready", headers={"X-Request-ID": "trace-me-7"})
    assert response.headers["x-request-id"] == "trace-me-7"
    srv.stop()
    entries = []
    for line in srv.logs().splitlines():
        if line.strip():
            entries.append(json.loads(line))  # every line is one JSON object
    mine = [e for e in entries if e.get("request_id") == "trace-me-7"]
    assert mine and "/health/ready" in mine[0]["message"], entries[-5:]
    assert {"time", "level", "logger", "message"} <= set(mine[0])


def test_json_lines_carry_the_trace_and_span_ids_while_tracing() -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from service import tracing

    record = logging.LogRecord("service", logging.INFO, __file__, 1, "inside", None, None)
    assert "trace_id" not in json.loads(JsonFormatter().format(record))  # tracing off
    tracing.configure_tracing(InMemorySpanExporter())
    try:
        with tracing.span("decode"):
            line = json.loads(JsonFormatter().format(record))
        assert re.fullmatch(r"[0-9a-f]{32}", line["trace_id"])
        assert re.fullmatch(r"[0-9a-f]{16}", line["span_id"])
    finally:
        tracing.shutdown_tracing()
