"""The V2 gRPC door: ``inference.GRPCInferenceService`` on ``grpc.aio``.

It runs in the same process and on the same event loop as uvicorn (started and stopped
from the app's lifespan), so a gRPC request goes through the same
:class:`~service.pipeline.Pipeline` as HTTP: same admission, budgets, batchers and
metrics (door ``v2-grpc``). The client's gRPC deadline becomes the request's timeout;
the largest message accepted is ``grpc_max_message_bytes`` (at most ``max_body_bytes``),
and at most ``grpc_max_concurrent_rpcs`` calls are served at once.

Health (ServerLive, ServerReady, ModelReady) needs no API key, as ``/health/*`` does
not, so orchestrators can probe it; every other call needs ``x-api-key`` metadata when
an API key is set. Methods not served (streaming, shared memory, load/unload, trace,
logging) answer UNIMPLEMENTED.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from fastapi import FastAPI

from service.errors import ServiceError, UnknownModel
from service.pipeline import Pipeline
from service.pool import ModelPool, ServedModel
from service.security import check_api_key
from service.settings import Settings
from service.v2 import metadata, proto
from service.v2.errors import grpc_code, public_message, retry_after
from service.v2.infer import parse_version, run

logger = logging.getLogger(__name__)
API_KEY_METADATA = "x-api-key"
T = TypeVar("T")


class InferenceServicer(proto.BaseServicer):  # type: ignore[misc]  # generated base: Any
    def __init__(self, app: FastAPI) -> None:
        self._app = app
        self._settings: Settings = app.state.settings

    # -- helpers -----------------------------------------------------------------------
    @property
    def _pipeline(self) -> Pipeline:
        pipeline: Pipeline = self._app.state.pipeline
        return pipeline

    @property
    def _models(self) -> ModelPool:
        return self._pipeline.models

    def _authorize(self, context: Any) -> None:
        presented = dict(context.invocation_metadata() or ()).get(API_KEY_METADATA)
        check_api_key(self._settings.api_key, presented)

    def _resolve(self, name: str, version: str) -> ServedModel:
        if not name:
            raise UnknownModel("model name is empty")
        return self._pipeline.resolve(name, parse_version(version))

    async def _answer(self, context: Any, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work``; a typed error becomes the status its table says (one place)."""
        try:
            return await work()
        except Exception as exc:
            wait = retry_after(exc)
            if wait:
                context.set_trailing_metadata((("retry-after", wait),))
            await context.abort(grpc_code(exc), public_message(exc))
            raise  # abort raises; this only tells type checkers so

    # -- health ------------------------------------------------------------------------
    async def ServerLive(self, request: Any, context: Any) -> Any:
        return proto.message("ServerLiveResponse", {"live": True})

    async def ServerReady(self, request: Any, context: Any) -> Any:
        ready = metadata.server_ready(self._models, self._app.state.draining)
        return proto.message("ServerReadyResponse", {"ready": ready})

    async def ModelReady(self, request: Any, context: Any) -> Any:
        """An unknown model is not ready (not an error), as Triton answers it."""
        try:
            ready = self._resolve(request.name, request.version).serving
        except UnknownModel:
            ready = False
        return proto.message("ModelReadyResponse", {"ready": ready})

    # -- metadata ----------------------------------------------------------------------
    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        async def work() -> Any:
            self._authorize(context)
            return proto.message("ServerMetadataResponse", metadata.server_metadata())

        return await self._answer(context, work)

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        async def work() -> Any:
            self._authorize(context)
            served = self._resolve(request.name, request.version)
            versions = [m for m in self._models.all() if m.name == served.name]
            body = metadata.model_metadata(served, versions, self._settings)
            return proto.message("ModelMetadataResponse", body)

        return await self._answer(context, work)

    async def ModelConfig(self, request: Any, context: Any) -> Any:
        async def work() -> Any:
            self._authorize(context)
            served = self._resolve(request.name, request.version)
            config = metadata.model_config(served, self._settings)
            return proto.message("ModelConfigResponse", {"config": config})

        return await self._answer(context, work)

    async def ModelStatistics(self, request: Any, context: Any) -> Any:
        async def work() -> Any:
            self._authorize(context)
            models = self._models.all()
            if request.name:
                served = self._resolve(request.name, request.version)
                same = [m for m in models if m.name == served.name]
                models = [served] if request.version else same
            stats = metadata.model_statistics(models, self._pipeline.metrics.registry)
            return proto.message("ModelStatisticsResponse", stats)

        return await self._answer(context, work)

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        async def work() -> Any:
            self._authorize(context)
            index = metadata.repository_index(self._models)
            if request.ready:
                index = [m for m in index if m["state"] == "READY"]
            return proto.message("RepositoryIndexResponse", {"models": index})

        return await self._answer(context, work)

    # -- inference ---------------------------------------------------------------------
    async def ModelInfer(self, request: Any, context: Any) -> Any:
        async def work() -> Any:
            self._authorize(context)
            async with self._pipeline.request(
                "v2-grpc",
                model=request.model_name or None,
                version=parse_version(request.model_version),
                timeout_s=context.time_remaining(),
            ) as scope:
                scope.hold_body(request.ByteSize())
                infer_request = proto.request_from_proto(request)
                outcome, outputs = await run(scope, infer_request)
            served = outcome.model
            return proto.infer_response(served.name, served.number, infer_request.id, outputs)

        return await self._answer(context, work)


async def start_grpc_server(app: FastAPI, settings: Settings) -> Any:
    """Start serving on ``grpc_host:grpc_port`` on the running loop; None when turned off."""
    if settings.grpc_port == 0:
        return None
    server = grpc.aio.server(
        # gRPC reads a whole message before the handler can charge it to the body
        # budget: calls at once x message size bounds what messages can hold.
        maximum_concurrent_rpcs=settings.grpc_max_concurrent_rpcs,
        options=[
            ("grpc.max_receive_message_length", settings.grpc_max_message_bytes),
            ("grpc.max_send_message_length", -1),
            # gRPC sets SO_REUSEPORT by default: a second server on a taken port would
            # start "fine" and silently share the first one's connections.
            ("grpc.so_reuseport", 0),
        ],
    )
    proto.add_servicer(InferenceServicer(app), server)
    address = f"{settings.grpc_host or settings.host}:{settings.grpc_port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ServiceError(f"V2 gRPC cannot listen on {address}: {exc}") from exc
    await server.start()
    logger.info("V2 gRPC listening on %s", address)
    return server
