"""Opt-in OpenTelemetry tracing: ``span("decode")`` costs nothing unless it is turned on.

Turned on by ``RESNET_SERVE_TRACING=true`` (``--tracing``); everything else comes from
the standard ``OTEL_*`` environment variables, read by opentelemetry-sdk itself:
``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` (the service name defaults to
``resnet-serve``), ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``,
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, headers and
timeouts, ``OTEL_BSP_*`` for batching and ``OTEL_PROPAGATORS`` for the incoming
``traceparent``. ``OTEL_TRACES_EXPORTER`` picks ``otlp`` (default, http/protobuf),
``console`` or ``none``.

The tracer is process-wide, like OpenTelemetry's own context: call sites deep in the
request path (:func:`span`) have no app to ask. It lives in our own provider, not the
global one, so tests can install an in-memory exporter and remove it again. Server spans
are the instrumentation packages' (``opentelemetry-instrumentation-asgi`` and ``-grpc``,
wired in ``service/app.py`` and ``service/v2/grpc_server.py`` with this provider): they
continue the caller's ``traceparent`` on every door; the pipeline's stage spans (read,
parse, decode, queue, inference) are their children.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer

SERVICE_NAME = "resnet-serve"
#: Reused for every call while tracing is off: no allocation, no import.
_NOOP: AbstractContextManager[None] = nullcontext()


@dataclass
class _State:
    tracer: Tracer | None = None
    provider: TracerProvider | None = None


_state = _State()


def enabled() -> bool:
    return _state.tracer is not None


def span(name: str, **attributes: Any) -> AbstractContextManager[None]:
    """A child span of the current one while tracing is on; a shared no-op otherwise."""
    tracer = _state.tracer
    if tracer is None:
        return _NOOP
    return _child(tracer, name, attributes)


def finished_span(name: str, start_ns: int, end_ns: int, **attributes: Any) -> None:
    """Record a child span that already happened (epoch nanoseconds), e.g. a request's
    time in the batch queue, known only once its batch has run."""
    tracer = _state.tracer
    if tracer is not None:
        tracer.start_span(name, start_time=start_ns, attributes=attributes).end(end_time=end_ns)


@contextmanager
def _child(tracer: Tracer, name: str, attributes: dict[str, Any]) -> Iterator[None]:
    with tracer.start_as_current_span(name, attributes=attributes):
        yield


def annotate(**attributes: Any) -> None:
    """Attributes on the current span (the request's server span), if tracing is on."""
    if _state.tracer is None:
        return
    from opentelemetry import trace

    current = trace.get_current_span()
    if current.is_recording():
        current.set_attributes(attributes)


def rename(name: str, **attributes: Any) -> None:
    """Name the current span (the server span, once the route is known)."""
    if _state.tracer is None:
        return
    from opentelemetry import trace

    current = trace.get_current_span()
    if current.is_recording():
        current.update_name(name)
        current.set_attributes(attributes)


def current_trace_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span as hex, for log lines; None when off."""
    if _state.tracer is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def provider() -> TracerProvider | None:
    """The tracer provider while tracing is on: the server spans of every door come from
    the OpenTelemetry instrumentations (ASGI, gRPC) given this provider."""
    return _state.provider


def configure_tracing(exporter: SpanExporter | None = None) -> None:
    """Start exporting spans: to ``exporter`` (tests) or the one the OTEL_* vars name."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    if exporter is not None:
        # Synchronous: a test reads the spans right after the request returns.
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif (configured := _exporter_from_env()) is not None:
        provider.add_span_processor(BatchSpanProcessor(configured))
    shutdown_tracing()
    _state.provider = provider
    _state.tracer = provider.get_tracer("service")


def _exporter_from_env() -> SpanExporter | None:
    kind = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if kind == "none":
        return None
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if kind != "otlp":
        raise ValueError(f"OTEL_TRACES_EXPORTER={kind!r}: use otlp, console or none")
    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
    )
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()  # type: ignore[no-any-return]
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter()


def shutdown_tracing() -> None:
    """Flush what is buffered and turn tracing off (at exit, or between tests)."""
    provider, _state.provider, _state.tracer = _state.provider, None, None
    if provider is not None:
        provider.shutdown()
