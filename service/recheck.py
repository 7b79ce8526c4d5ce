"""The gate, again, on versions already serving (``gate_recheck_secs``; off by default).

A version that passed its gate at load can still go wrong later: a GPU whose memory
develops faults, a driver reset that brings the provider back in another mode. Every
interval, each serving version's golden images are submitted *through its batcher*,
like any request (so the engine is only ever entered from its own thread, and the check
sees exactly the serving path), and compared with the recorded logits.

The result is exposed, not acted on: ``resnet_serve_gate_outcome`` and the version's
index reason say ``refused`` and why, and an error is logged, so an alert (or an
operator reloading the version) decides. A busy version (queue full) is skipped that
round rather than competing with real requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol

import numpy as np

from service.errors import ServiceError
from service.gate import GoldenSetError, compare, effective_bound, execution_of, read_images
from service.metrics import Metrics
from service.served import ServedModel

logger = logging.getLogger(__name__)
#: How long one version's check may wait for its batch (it queues like a request).
RECHECK_TIMEOUT_S = 30.0


class CheckedPool(Protocol):
    """What the re-checker reads from the pool: its versions and the metrics that the
    outcome goes to; it never loads or unloads, so it depends on nothing more."""

    @property
    def metrics(self) -> Metrics: ...

    def all(self) -> list[ServedModel]: ...


class GateRechecker:
    """One task re-running the gate; ``start()`` and ``stop()`` are a pair."""

    def __init__(self, pool: CheckedPool, interval_s: float) -> None:
        self._pool = pool
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="gate-recheck")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()  # a check waiting on a batch has nothing worth finishing
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval_s)
            if self._stopping.is_set():
                return
            try:
                await self.recheck_once()
            except Exception:  # one bad round must not end the checks
                logger.exception("gate re-check failed; trying again next time")

    async def recheck_once(self) -> dict[str, bool]:
        """Check every serving version that has a golden set; ``name:version`` -> passed."""
        results = {}
        for model in self._pool.all():
            if model.status == "ready" and model.version.info.golden is not None:
                passed = await self._check(model)
                if passed is not None:
                    results[f"{model.name}:{model.number}"] = passed
        return results

    async def _check(self, model: ServedModel) -> bool | None:
        golden = model.version.info.golden
        batcher = model.batcher
        if golden is None or batcher is None:
            return None
        started = time.monotonic()
        try:
            images = await asyncio.to_thread(read_images, model.version.path, golden)
            pre = model.preprocessor
            tensors = await asyncio.to_thread(lambda: [pre.decode(pre.open(d)) for d in images])
            with batcher.reserve(len(tensors)) as reservation:
                answers = await reservation.submit(tensors, time.monotonic() + RECHECK_TIMEOUT_S)
        except GoldenSetError as exc:
            return self._record(model, False, str(exc), started)
        except ServiceError as exc:  # busy, draining, deadline: not a verdict
            logger.info("gate re-check of %s:%d skipped: %s", model.name, model.number, exc)
            return None
        fmt = "torchscript" if model.engine_name == "torchscript" else "onnx"
        rows = golden.logits.get(fmt) or next(iter(golden.logits.values()))
        provider = model.provider
        bound = effective_bound(
            golden, execution_of(model.entry.config, provider, model.version.info.precision)
        )
        report = compare(
            np.asarray(rows, dtype=np.float64),
            np.stack([np.asarray(a.logits, dtype=np.float64) for a in answers]),
            bound,
        )
        return self._record(model, report.passed, report.reason, started)

    def _record(self, model: ServedModel, passed: bool, reason: str, started: float) -> bool:
        metrics = self._pool.metrics
        metrics.gate_duration.labels(model.name).observe(time.monotonic() - started)
        model.gate = "passed" if passed else "refused"
        model.gate_reason = "" if passed else f"gate re-check refused: {reason}"
        metrics.gate_outcome.labels(*model.key).state(model.gate)
        if not passed:
            logger.error("model %s v%d %s", model.name, model.number, model.gate_reason)
        return passed
