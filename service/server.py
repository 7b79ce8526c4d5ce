"""Run the app under uvicorn: strict start-up checks, a drain on the first signal, a cut on
the second.

Signals, on purpose:

* **First SIGTERM/SIGINT: drain.** The app is marked draining so ``/health/ready`` turns
  503 for whoever still asks, uvicorn stops listening and waits (at most
  ``drain_timeout_s``) for open requests; the lifespan shutdown then drains the batchers,
  answering anything left. Exit status 0 after SIGTERM.
* **Second signal during the drain: cut it.** Whoever sends it wants the process gone now
  (an operator pressing Ctrl-C twice, a supervisor escalating before SIGKILL). Every
  request still in the server (queued for a batch, decoding, reading its body) is
  cancelled and answered 503 ``model_unavailable`` (retryable elsewhere) instead of a
  reset connection; the batch already in the engine finishes, nothing else runs; the
  lifespan shutdown then closes the engines and the process exits with
  :data:`EXIT_DRAIN_CUT`. If connections still hang on after :data:`CUT_GRACE_S`, or on
  a third signal, uvicorn stops waiting for them (``force_exit``).

Strict mode (``strict``, Triton's exit-on-error): once background loading ends, if any
model failed to load or runs on another provider than the GPU one it asked for (ONNX
Runtime falls back to the CPU silently when CUDA cannot start), one line per model says
why and the server shuts down with :data:`EXIT_STARTUP_FAILED`, so a supervisor restarts
it or reports the failure instead of a pod serving on the wrong device.

Ports are opened before anything else: the HTTP socket is bound here and handed to
uvicorn, and the V2 gRPC port is probed the way gRPC will bind it (no ``SO_REUSEPORT``).
A port that is taken is one line on stderr naming it and the flag / variable that moves
it, and exit status :data:`EXIT_PORT_IN_USE`, before models load (left to uvicorn and the
lifespan, it was a 40-line traceback and the strict mode's status).
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import socket
import sys
from types import FrameType

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.config import LOGGING_CONFIG

from service.api.errors import service_error_response
from service.app import create_app
from service.errors import ModelUnavailable
from service.http_limits import bounded_http_protocol
from service.logs import configure_logging
from service.ports import LISTEN_BACKLOG, PortUnavailable, check_grpc_port, listen_http
from service.process import freeze_startup_heap, return_large_frees_to_the_os
from service.settings import Settings
from service.tracing import configure_tracing, shutdown_tracing

logger = logging.getLogger(__name__)

#: Exit status of a strict server whose models did not all come up as asked.
EXIT_STARTUP_FAILED = 3
#: Exit status when a second signal cut the drain short.
EXIT_DRAIN_CUT = 4
#: Exit status when a port the server needs is in use (or cannot be opened at all).
EXIT_PORT_IN_USE = 5
#: After a cut, how long connections may take to close before uvicorn stops waiting.
CUT_GRACE_S = 2.0


class CutResponder:
    """Outermost ASGI wrapper: a request cancelled by a drain cut is answered 503.

    uvicorn answers a cancelled request task with a 500 and an error log; after a cut the
    truth is "shutting down, retry elsewhere", the same answer a closing batcher gives.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.cut = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except asyncio.CancelledError:
            if not self.cut or started:
                raise
            await _send_shutting_down(scope, receive, send)


async def _send_shutting_down(scope: Scope, receive: Receive, send: Send) -> None:
    response = service_error_response(
        ModelUnavailable("the server is shutting down; retry elsewhere")
    )
    response.headers["connection"] = "close"
    await response(scope, receive, send)


class DrainingServer(uvicorn.Server):
    """uvicorn.Server with the signal policy and strict check described above."""

    def __init__(
        self, config: uvicorn.Config, app: FastAPI, responder: CutResponder | None = None
    ) -> None:
        super().__init__(config)
        self._app = app
        self._responder = responder or CutResponder(app)
        self.exit_code = 0
        self._signalled = False
        #: Start-up work that waits for the initial load to end (see on_tick).
        self._load_pending = True

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._signalled:
            self._cut_drain(sig)
            return
        self._signalled = True
        logger.info("signal %d: draining (not ready; finishing accepted requests)", sig)
        self._app.state.pipeline.readiness.draining = True
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM:
            # uvicorn re-raises captured signals after a graceful shutdown, so the process
            # would die of SIGTERM (status -15). A completed drain is a clean exit: 0.
            self._captured_signals[:] = [s for s in self._captured_signals if s != sig]

    def _cut_drain(self, sig: int) -> None:
        """Runs in the signal handler: only flags and a callback scheduled on the loop."""
        self._captured_signals.clear()  # the exit status says what happened, not a signal
        self.exit_code = EXIT_DRAIN_CUT
        if self._responder.cut:
            self.force_exit = True
            return
        self._responder.cut = True
        logger.warning(
            "signal %d during the drain: cutting it; requests still here get 503, exit status %d",
            sig,
            EXIT_DRAIN_CUT,
        )
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not serving yet (or any more): nothing to answer
            self.force_exit = True
            return
        loop.call_soon_threadsafe(self._cancel_requests, loop)

    def _cancel_requests(self, loop: asyncio.AbstractEventLoop) -> None:
        # Each cancelled request task is answered 503 by CutResponder; their connections
        # then close and uvicorn's wait for them ends by itself, lifespan shutdown included.
        for task in list(self.server_state.tasks):
            task.cancel()
        loop.call_later(CUT_GRACE_S, self._give_up_waiting)

    def _give_up_waiting(self) -> None:
        self.force_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self._load_pending and self._app.state.models.loaded:
            self._load_pending = False
            freeze_startup_heap()
            if self._app.state.settings.strict:
                self._check_strict()
        return await super().on_tick(counter)

    def _check_strict(self) -> None:
        problems = self._app.state.pipeline.readiness.startup_problems()
        if not problems:
            return
        for model, reason in problems.items():
            logger.error("strict mode: model %s %s; exiting", model, reason)
        self.exit_code = EXIT_STARTUP_FAILED
        self.should_exit = True


def run_server(settings: Settings) -> int:
    """Serve until a signal (or a failed strict check); returns the exit status."""
    try:
        check_grpc_port(settings)
        http_socket = listen_http(settings)
    except PortUnavailable as exc:
        print(f"resnet-serve: {exc}", file=sys.stderr)
        return EXIT_PORT_IN_USE
    try:
        return _serve(settings, http_socket)
    finally:
        http_socket.close()


def _serve(settings: Settings, http_socket: socket.socket) -> int:
    return_large_frees_to_the_os()
    configure_logging(settings.log_level, settings.log_format)
    if settings.tracing:
        configure_tracing()
    app = create_app(settings)
    responder = CutResponder(app)
    config = uvicorn.Config(
        responder,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # JSON: uvicorn's loggers propagate to our root handler instead of its own.
        log_config=None if settings.log_format == "json" else LOGGING_CONFIG,
        # Never None (that waits forever): drain_timeout_s=0.5 used to become int 0 -> None.
        timeout_graceful_shutdown=math.ceil(settings.drain_timeout_s),
        # Request logs carry method, path and status only, never bodies.
        access_log=settings.log_level == "debug",
        server_header=False,
        # Heads (size and time) and connections bounded in the protocol, JSON answers;
        # uvicorn's limit_concurrency stays off (see service/http_limits.py for why).
        http=bounded_http_protocol(
            max_header_bytes=settings.max_header_bytes,
            head_timeout_s=settings.head_timeout_s,
            max_connections=settings.max_connections,
        ),
        timeout_keep_alive=settings.keep_alive_timeout_s,
        backlog=LISTEN_BACKLOG,
    )
    server = DrainingServer(config, app, responder)
    host, port = http_socket.getsockname()[:2]
    logger.info("HTTP listening on %s:%d", host, port)
    try:
        server.run(sockets=[http_socket])
    finally:
        shutdown_tracing()
    return server.exit_code
