"""One version's life: engine, warm-up, gate and batcher in; drain and close out.

The pool decides *which* instances serve (its version table, swaps, locks); this
module does the work on one :class:`ServedModel` and keeps its metric series and the
model-memory budget in step.
"""

from __future__ import annotations

import asyncio
import logging
import time

from service.batching import Batcher, BatcherConfig
from service.batching.turns import CpuTurns, runs_on_cpu
from service.engines import select_engine
from service.errors import ModelMemoryExceeded
from service.gate import GoldenSetError, check
from service.lifecycle import ModelMemory
from service.metrics import Metrics
from service.repository import ENGINE_FORMAT
from service.served import EngineFactory, ServedModel
from service.settings import Settings

logger = logging.getLogger(__name__)


class GateRefused(Exception):
    """The version answered its golden set outside the bound."""


class VersionLoader:
    """Starts and closes :class:`ServedModel` instances for one pool."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        memory: ModelMemory,
        engine_factory: EngineFactory,
        turns: CpuTurns,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.memory = memory
        self._engine_factory = engine_factory
        self._turns = turns

    async def start(self, model: ServedModel) -> None:
        """Engine, warm-up, gate, batcher: ``ready``, or ``failed`` with the reason.

        The (model, version) metric series are not touched here: during a swap they
        still describe the instance serving; :meth:`publish` updates them afterwards.
        """
        started = time.monotonic()
        model.status, model.error, model.load_error = "loading", None, None
        outcome = "loaded"
        try:
            model.engine_name = select_engine(model.entry.config, model.version, self.settings)
            fmt = ENGINE_FORMAT[model.engine_name]
            size = self.memory.estimate(model.version.info.artifacts[fmt].bytes)
            self.memory.take(model.name, model.number, id(model), size)
            model.memory_bytes = size
            model.engine = await asyncio.to_thread(
                self._engine_factory, model.entry.config, model.version, self.settings
            )
            if self.settings.warmup:
                await asyncio.to_thread(model.engine.warmup, model.max_batch_size)
            await self._gate(model, fmt)
        except Exception as exc:
            outcome = {GateRefused: "gate_refused", ModelMemoryExceeded: "memory_refused"}.get(
                type(exc), "failed"
            )
            message = exc.message if isinstance(exc, ModelMemoryExceeded) else str(exc)
            if not isinstance(exc, (GateRefused, ModelMemoryExceeded)):
                message = f"{type(exc).__name__}: {exc}"
                logger.exception("model %s v%d failed to load", model.name, model.number)
            else:
                logger.error("model %s v%d refused: %s", model.name, model.number, message)
            model.status, model.error, model.load_error = "failed", message, exc
            if model.engine is not None:
                model.engine.close()
                model.engine = None
            self.memory.give(model.name, model.number, id(model))
            self.metrics.model_loads.labels(model.name, outcome).inc()
            return
        engine = model.engine
        model.batcher = Batcher(
            engine,
            BatcherConfig(
                max_batch_size=model.max_batch_size,
                max_queue_delay_ms=self.settings.max_queue_delay_ms,
                max_queue_size=self.settings.max_queue_size,
            ),
            self.metrics,
            model.key,
            collate=model.preprocessor.collate,
            # Only engines computing on the cores take turns with the decodes.
            turns=self._turns if runs_on_cpu(engine.provider) else None,
        )
        model.batcher.start()
        model.status = "ready"
        self.metrics.model_loads.labels(model.name, outcome).inc()
        self.metrics.model_load_duration.labels(model.name).observe(time.monotonic() - started)
        for unload in ("unloaded", "replaced"):  # exported at 0 before the first: rate() works
            self.metrics.model_unloads.labels(model.name, unload)
        if model.version.info.weights.origin == "random":
            logger.warning(
                "model %s v%d has RANDOM (untrained) weights: its predictions are "
                "meaningless; export pretrained weights for real use",
                model.name,
                model.number,
            )
        logger.info(
            "model %s v%d ready on %s (%s), gate %s",
            model.name,
            model.number,
            model.engine_name,
            engine.provider,
            model.gate,
        )

    async def _gate(self, model: ServedModel, fmt: str) -> None:
        """Run the golden set through the chosen preprocessor and engine; raise if off."""
        info = model.version.info
        if info.golden is None or model.engine is None:
            model.gate = "skipped"
            logger.warning(
                "model %s v%d has no golden set (written before the gate existed): it "
                "loads unchecked; re-export it to have every load checked",
                model.name,
                model.number,
            )
            return
        started = time.monotonic()
        try:
            report = await asyncio.to_thread(
                check,
                info.golden,
                model.version.path,
                fmt,
                model.entry.config,
                model.preprocessor,
                model.engine,
                info.precision,
            )
            passed, reason = report.passed, report.reason
        except GoldenSetError as exc:
            passed, reason = False, str(exc)
        finally:
            self.metrics.gate_duration.labels(model.name).observe(time.monotonic() - started)
        model.gate = "passed" if passed else "refused"
        if not passed:
            raise GateRefused(f"refused by the correctness gate: {reason}")

    async def close(self, model: ServedModel, drain_timeout_s: float) -> None:
        """Drain the batcher (bounded), then close the engine; at most once per load.

        The references are dropped first, not kept on the stopped instance: requests
        still holding this ServedModel must not keep the session (and its memory)
        alive, and a second close (shutdown during a swap) finds nothing to close.
        """
        batcher, engine = model.batcher, model.engine
        model.batcher, model.engine = None, None
        if batcher is not None:
            await batcher.stop(drain_timeout_s)
        if engine is not None:
            engine.close()
        self.memory.give(model.name, model.number, id(model))

    def publish(self, model: ServedModel) -> None:
        """Point the version's metric series at this instance (after a swap or load)."""
        self.publish_state(model)
        self.metrics.model_ready.labels(*model.key).set(1 if model.status == "ready" else 0)
        if model.gate:
            self.metrics.gate_outcome.labels(*model.key).state(model.gate)
        if model.status == "ready" and model.engine is not None:
            info = model.version.info
            self.metrics.model_info.labels(
                *model.key,
                model.engine_name,
                model.engine.provider,
                info.weights.display,
                info.precision,
            ).set(1)

    def publish_state(self, model: ServedModel) -> None:
        self.metrics.model_state.labels(*model.key).state(model.status)
