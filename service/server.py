"""Run the app under uvicorn with a drain on SIGTERM.

On SIGTERM/SIGINT uvicorn stops listening and waits for open requests; we first mark
the app draining so /health/ready turns 503 for whoever still asks, and give the wait
``drain_timeout_s``. The lifespan shutdown then drains the batchers (answering anything
left) before the process exits 0.
"""

from __future__ import annotations

import logging
import math
import signal
from types import FrameType

import uvicorn
from fastapi import FastAPI

from service.api import create_app
from service.settings import Settings

logger = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """uvicorn.Server that flips the app to draining before shutting down."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self._app.state.draining:
            logger.info("signal %d: draining (not ready; finishing accepted requests)", sig)
        self._app.state.draining = True
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM:
            # uvicorn re-raises captured signals after a graceful shutdown, so the process
            # would die of SIGTERM (status -15). A completed drain is a clean exit: 0.
            captured: list[int] = getattr(self, "_captured_signals", [])
            captured[:] = [s for s in captured if s != signal.SIGTERM]


def run_server(settings: Settings) -> int:
    logging.getLogger().setLevel(settings.log_level.upper())
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # Never None (that waits forever): drain_timeout_s=0.5 used to become int 0 -> None.
        timeout_graceful_shutdown=math.ceil(settings.drain_timeout_s),
        # Request logs carry method, path and status only, never bodies.
        access_log=settings.log_level == "debug",
        server_header=False,
    )
    DrainingServer(config, app).run()
    return 0
