"""Run the app under uvicorn: strict start-up checks, a drain on the first signal, a cut on
the second.

Signals, on purpose:

* **First SIGTERM/SIGINT: drain.** The app is marked draining so ``/health/ready`` turns
  503 for whoever still asks, uvicorn stops listening and waits (at most
  ``drain_timeout_s``) for open requests; the lifespan shutdown then drains the batchers,
  answering anything left. Exit status 0 after SIGTERM.
* **Second signal during the drain: cut it.** Whoever sends it wants the process gone now
  (an operator pressing Ctrl-C twice, a supervisor escalating before SIGKILL). Every
  batcher stops at once: images still queued, and the batch in the engine, are answered
  503 ``model_unavailable`` (retryable elsewhere) rather than a reset connection; those
  answers get :data:`CUT_GRACE_S` to be written, then the process exits with
  :data:`EXIT_DRAIN_CUT`. A third signal stops waiting even for that.

Strict mode (``strict``, Triton's exit-on-error): once background loading ends, if any
model failed to load or runs on another provider than the GPU one it asked for (ONNX
Runtime falls back to the CPU silently when CUDA cannot start), one line per model says
why and the server shuts down with :data:`EXIT_STARTUP_FAILED`, so a supervisor restarts
it or reports the failure instead of a pod serving on the wrong device.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import time
from types import FrameType

import uvicorn
from fastapi import FastAPI
from uvicorn.config import LOGGING_CONFIG

from service.api import create_app
from service.api.health import startup_problems
from service.logs import configure_logging
from service.settings import Settings
from service.tracing import configure_tracing, shutdown_tracing

logger = logging.getLogger(__name__)

#: Exit status of a strict server whose models did not all come up as asked.
EXIT_STARTUP_FAILED = 3
#: Exit status when a second signal cut the drain short.
EXIT_DRAIN_CUT = 4
#: After a cut, how long the 503 answers may take to reach their clients.
CUT_GRACE_S = 1.0


class DrainingServer(uvicorn.Server):
    """uvicorn.Server with the signal policy and strict check described above."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app
        self.exit_code = 0
        self._signalled = False
        self._cutting = False
        self._strict_pending = bool(app.state.settings.strict)
        self._cut_task: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._signalled:
            self._cut_drain(sig)
            return
        self._signalled = True
        logger.info("signal %d: draining (not ready; finishing accepted requests)", sig)
        self._app.state.draining = True
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM:
            # uvicorn re-raises captured signals after a graceful shutdown, so the process
            # would die of SIGTERM (status -15). A completed drain is a clean exit: 0.
            self._captured_signals[:] = [s for s in self._captured_signals if s != sig]

    def _cut_drain(self, sig: int) -> None:
        """Runs in the signal handler: only flags and a callback scheduled on the loop."""
        self._captured_signals.clear()  # the exit status says what happened, not a signal
        self.exit_code = EXIT_DRAIN_CUT
        if self._cutting:
            self.force_exit = True
            return
        self._cutting = True
        logger.warning(
            "signal %d during the drain: cutting it; queued requests get 503, exit status %d",
            sig,
            EXIT_DRAIN_CUT,
        )
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not serving yet (or any more): nothing to answer
            self.force_exit = True
            return
        loop.call_soon_threadsafe(self._start_cut)

    def _start_cut(self) -> None:
        self._cut_task = asyncio.ensure_future(self._cut())

    async def _cut(self) -> None:
        batchers = [m.batcher for m in self._app.state.pool.all() if m.batcher is not None]
        # stop(0): no more waiting for queued work; everything left is answered 503.
        await asyncio.gather(*(b.stop(0) for b in batchers), return_exceptions=True)
        deadline = time.monotonic() + CUT_GRACE_S
        # Bounded wait for the 503s above to be written; uvicorn has no "connections
        # closed" event, it polls its connection set the same way.
        while self.server_state.connections and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        self.force_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self._strict_pending and self._app.state.pool.loaded:
            self._strict_pending = False
            self._check_strict()
        return await super().on_tick(counter)

    def _check_strict(self) -> None:
        problems = startup_problems(self._app.state.pool, self._app.state.settings)
        if not problems:
            return
        for model, reason in problems.items():
            logger.error("strict mode: model %s %s; exiting", model, reason)
        self.exit_code = EXIT_STARTUP_FAILED
        self.should_exit = True


def run_server(settings: Settings) -> int:
    """Serve until a signal (or a failed strict check); returns the exit status."""
    configure_logging(settings.log_level, settings.log_format)
    if settings.tracing:
        configure_tracing()
    app = create_app(settings)
    config = uvicorn.Config(
        app,
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
    )
    server = DrainingServer(config, app)
    try:
        server.run()
    finally:
        shutdown_tracing()
    return server.exit_code
