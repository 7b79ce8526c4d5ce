"""The V2 gRPC door: ``inference.GRPCInferenceService`` on ``grpc.aio``.

It runs in the same process and on the same event loop as uvicorn (started and stopped
from the app's lifespan). ``ModelInfer`` is a :class:`GrpcInferCall` served by the same
:class:`~service.pipeline.Pipeline` as HTTP: its head is inside the protobuf, so the
message is parsed in the pipeline's parse thread (a malformed one is INVALID_ARGUMENT).
The client's gRPC deadline becomes the request's timeout; ``x-request-id`` metadata is
the request id (echoed back), and a caller's ``traceparent`` continues in the server
span the OpenTelemetry interceptor opens when tracing is on.

Transport bounds (what gRPC holds before the servicer sees it): messages of at most
``grpc_max_message_bytes``; calls admitted by gRPC at most twice the pipeline's limit
``grpc_max_concurrent_rpcs`` (calls past the pipeline's limit are answered UNAVAILABLE,
retryable, and counted); at most ``grpc_max_connections`` connections; per-stream
flow-control windows of 64 KiB without BDP growth. Each connection takes at most
``grpc_max_streams_per_connection`` streams, by default every call gRPC admits: gRPC's
server refuses a stream past that cap (``REFUSED_STREAM``, UNAVAILABLE to the client)
rather than the client waiting for room, and it counts a finished stream a moment
longer than the client does, so a cap below what one channel may send refuses calls
within the service's limits (tritonclient sends every call on one channel).

Health (ServerLive, ServerReady, ModelReady) needs no API key, as ``/health/*`` does
not, so orchestrators can probe it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from service import tracing
from service.errors import ServiceError, UnknownModel
from service.lifecycle import ADMIN_KEY_METADATA
from service.logs import request_id_from, request_id_var
from service.pipeline import Door, Head, Outcome, Parsed, Pipeline, let_go, never
from service.pool import ServedModel
from service.security import check_api_key
from service.settings import Settings
from service.v2 import metadata, proto
from service.v2.errors import grpc_code, public_message, retry_after
from service.v2.infer import Reply, limits_of, to_inputs
from service.v2.repository import Action, control

logger = logging.getLogger(__name__)
API_KEY_METADATA = "x-api-key"
REQUEST_ID_METADATA = "x-request-id"
#: Per-stream HTTP/2 flow-control window: what one stream may send before we read it.
STREAM_WINDOW_BYTES = 64 * 1024
T = TypeVar("T")


class GrpcInferCall:
    """One ``ModelInfer`` call, as the pipeline sees it."""

    door: Door = "v2-grpc"

    def __init__(self, raw: bytes, context: Any, pipeline: Pipeline, request_id: str) -> None:
        self._raw = raw
        self._context = context
        self._pipeline = pipeline
        self._metadata = dict(context.invocation_metadata() or ())
        self.request_id = request_id
        self._message: Any = None

    async def head(self) -> Head:
        self._message = await self._pipeline.intake.offload(proto.parse_infer_request, self._raw)
        return Head(
            model=self._message.model_name or None,
            version=self._message.model_version,
            api_key=self._metadata.get(API_KEY_METADATA),
            timeout_s=self._context.time_remaining(),
            content_length=len(self._raw),
        )

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self._raw  # gRPC received the whole message before the call began

    async def disconnected(self) -> None:
        await never()  # grpc.aio cancels the handler task itself when the client goes

    def parser(self, served: ServedModel) -> _MessageParser:
        limits = limits_of(served, self._pipeline.settings.max_images_per_request)
        return _MessageParser(
            self._message, lambda m: to_inputs(proto.request_from_proto(m, limits), served)
        )

    def encode(self, parsed: Parsed[Reply], outcome: Outcome) -> Any:
        served, reply = outcome.model, parsed.extra
        return proto.infer_response(
            served.name, served.number, reply.id, reply.outputs_for(outcome)
        )


class _MessageParser:
    """The already-parsed message's inputs, checked against the model."""

    heavy = False

    def __init__(self, message: Any, check: Callable[[Any], tuple[Any, Reply]]) -> None:
        self._message = message
        self._check = check

    def feed(self, chunk: bytes) -> None:
        pass  # the message was parsed with the head

    def cost_bytes(self) -> int:
        return 0  # the typed copies are bounded by the element limits as they are made

    def finish(self) -> Parsed[Reply]:
        inputs, reply = self._check(self._message)
        return Parsed(inputs, reply)


class InferenceServicer:
    """The V2 gRPC methods; inference through the pipeline, the rest from its parts."""

    def __init__(self, pipeline: Pipeline, settings: Settings) -> None:
        self._pipeline = pipeline
        self._settings = settings

    def handlers(self) -> dict[str, Callable[..., Awaitable[Any]]]:
        return {
            "ServerLive": self.ServerLive,
            "ServerReady": self.ServerReady,
            "ModelReady": self.ModelReady,
            "ServerMetadata": self.ServerMetadata,
            "ModelMetadata": self.ModelMetadata,
            "ModelConfig": self.ModelConfig,
            "ModelStatistics": self.ModelStatistics,
            "RepositoryIndex": self.RepositoryIndex,
            "ModelInfer": self.ModelInfer,
            "RepositoryModelLoad": self.RepositoryModelLoad,
            "RepositoryModelUnload": self.RepositoryModelUnload,
        }

    # -- helpers -----------------------------------------------------------------------
    def _authorize(self, context: Any) -> None:
        presented = dict(context.invocation_metadata() or ()).get(API_KEY_METADATA)
        check_api_key(self._settings.api_key, presented)

    def _resolve(self, name: str, version: str) -> ServedModel:
        if not name:
            raise UnknownModel("model name is empty")
        return self._pipeline.resolve(name, version)

    async def _answer(
        self, context: Any, work: Callable[[], Awaitable[T]], response: str
    ) -> T | Any:
        """Run ``work``; an error becomes the status the table says (one place).

        The status is set on the context and an empty ``response`` returned, rather than
        ``context.abort()`` raising: gRPC keeps an abort's exception with the call's
        state, and with it every frame of the call (the message, its parsed form) until
        the cyclic GC runs, which does not see native memory (measured: +35 MiB kept
        per refused 2 MiB message).
        """
        try:
            return await work()
        except Exception as exc:
            if not isinstance(exc, ServiceError):
                logger.error("V2 gRPC call failed", exc_info=exc)
            wait = retry_after(exc)
            if wait:
                context.set_trailing_metadata((("retry-after", wait),))
            context.set_code(grpc_code(exc))
            context.set_details(public_message(exc))
            let_go(exc)
        return proto.message(response)

    # -- health ------------------------------------------------------------------------
    async def ServerLive(self, request: Any, context: Any) -> Any:
        return proto.message("ServerLiveResponse", live=self._pipeline.readiness.live().ok)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return proto.message("ServerReadyResponse", ready=self._pipeline.readiness.ready().ok)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        """An unknown model is not ready (not an error), as Triton answers it."""
        try:
            served = self._resolve(request.name, request.version)
        except UnknownModel:
            return proto.message("ModelReadyResponse", ready=False)
        ready = self._pipeline.readiness.model_ready(served.name, served.number)
        return proto.message("ModelReadyResponse", ready=ready)

    # -- metadata ----------------------------------------------------------------------
    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        async def work() -> Any:
            self._authorize(context)
            return metadata.server_metadata()

        return await self._answer(context, work, "ServerMetadataResponse")

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        async def work() -> Any:
            self._authorize(context)
            served = self._resolve(request.name, request.version)
            versions = self._pipeline.models.versions_of(served.name)
            return metadata.model_metadata(served, versions)

        return await self._answer(context, work, "ModelMetadataResponse")

    async def ModelConfig(self, request: Any, context: Any) -> Any:
        async def work() -> Any:
            self._authorize(context)
            served = self._resolve(request.name, request.version)
            config = metadata.model_config(served, self._settings.max_queue_delay_ms)
            return proto.message("ModelConfigResponse", config=config)

        return await self._answer(context, work, "ModelConfigResponse")

    async def ModelStatistics(self, request: Any, context: Any) -> Any:
        async def work() -> Any:
            self._authorize(context)
            models = self._pipeline.models.all()
            if request.name:
                served = self._resolve(request.name, request.version)
                same = self._pipeline.models.versions_of(served.name)
                models = [served] if request.version else same
            return metadata.model_statistics(models, self._pipeline.metrics.registry)

        return await self._answer(context, work, "ModelStatisticsResponse")

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        async def work() -> Any:
            self._authorize(context)
            versions = self._pipeline.models.index(ready=request.ready)
            return metadata.repository_index(versions)

        return await self._answer(context, work, "RepositoryIndexResponse")

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        return await self._control(request, context, "load", "RepositoryModelLoadResponse")

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        return await self._control(request, context, "unload", "RepositoryModelUnloadResponse")

    async def _control(self, request: Any, context: Any, action: Action, response: str) -> Any:
        metadata_ = dict(context.invocation_metadata() or ())
        token = request_id_var.set(request_id_from(metadata_.get(REQUEST_ID_METADATA)))

        async def work() -> Any:
            await control(
                self._pipeline.models,
                self._settings.admin_api_key,
                metadata_.get(ADMIN_KEY_METADATA),
                action,
                request.model_name,
                list(request.parameters),
            )
            return proto.message(response)

        try:
            return await self._answer(context, work, response)
        finally:
            request_id_var.reset(token)

    # -- inference ---------------------------------------------------------------------
    async def ModelInfer(self, raw: bytes, context: Any) -> Any:
        metadata_ = dict(context.invocation_metadata() or ())
        request_id = request_id_from(metadata_.get(REQUEST_ID_METADATA))
        await context.send_initial_metadata(((REQUEST_ID_METADATA, request_id),))
        call = GrpcInferCall(raw, context, self._pipeline, request_id)
        return await self._answer(context, lambda: self._pipeline.serve(call), "ModelInferResponse")


def _interceptors() -> list[Any]:
    """The OpenTelemetry server interceptor while tracing is on (probes not traced)."""
    provider = tracing.provider()
    if provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

    probes = filters.any_of(*(filters.method_name(m) for m in proto.HEALTH_METHODS))
    untraced = filters.negate(probes)
    return [aio_server_interceptor(tracer_provider=provider, filter_=untraced)]  # type: ignore[no-untyped-call]


async def start_grpc_server(pipeline: Pipeline, settings: Settings) -> Any:
    """Start serving on ``grpc_host:grpc_port`` on the running loop; None when turned off."""
    if settings.grpc_port == 0:
        return None
    server = grpc.aio.server(
        interceptors=_interceptors(),
        # gRPC reads a whole message before the servicer sees it; past twice the
        # pipeline's limit it refuses on its own (RESOURCE_EXHAUSTED, uncounted), below
        # that the pipeline answers UNAVAILABLE and counts. The bound on what messages
        # can hold is this times grpc_max_message_bytes.
        maximum_concurrent_rpcs=settings.grpc_calls_admitted(),
        options=[
            ("grpc.max_receive_message_length", settings.grpc_max_message_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.max_metadata_size", 16 * 1024),
            ("grpc.max_concurrent_streams", settings.effective_grpc_streams_per_connection()),
            ("grpc.max_allowed_incoming_connections", settings.grpc_max_connections),
            ("grpc.http2.lookahead_bytes", STREAM_WINDOW_BYTES),
            ("grpc.http2.bdp_probe", 0),
            ("grpc.max_connection_idle_ms", int(settings.grpc_idle_timeout_s * 1000)),
            ("grpc.server_handshake_timeout_ms", 5000),
            # gRPC sets SO_REUSEPORT by default: a second server on a taken port would
            # start "fine" and silently share the first one's connections.
            ("grpc.so_reuseport", 0),
        ],
    )
    server.add_generic_rpc_handlers(
        (proto.generic_handler(InferenceServicer(pipeline, settings).handlers()),)
    )
    address = f"{settings.grpc_host or settings.host}:{settings.grpc_port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ServiceError(f"V2 gRPC cannot listen on {address}: {exc}") from exc
    await server.start()
    logger.info("V2 gRPC listening on %s", address)
    return server
