"""The request path, once, for every front door.

``/classify``, V2 REST and V2 gRPC each parse their own wire format, then hand the
pipeline encoded images (or ready tensors) inside one :class:`RequestScope`::

    async with pipeline.request("classify", model=name, version=v, timeout_s=t) as call:
        call.hold_body(n)                      # body bytes, charged before reading them
        outcome = await call.classify_images(images)

and shape ``outcome.logits`` into their own response. Everything between is here, in
order: resolve the model, take the deadline, admit (queue room before the body is read,
body bytes, decode memory), decode in the decode threads, batch, run, and observe every
per-request metric, labelled by model, version and door. Each stage lives in its own
module (:mod:`service.budgets`, :mod:`service.preprocess`, :mod:`service.batching`,
:mod:`service.engines`); this module only sequences them and owns their budgets.

Every budget taken is given back on every path (result, error, deadline, client gone):
the scope's exit releases the queue reservation and the body bytes; each decode gives
its pixels back in a ``finally`` in the thread that decoded, or here if it never ran.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, TypeVar

import numpy as np
import numpy.typing as npt
from prometheus_client import Gauge

from service import tracing
from service.batching import ItemResult, Reservation
from service.budgets import Budget
from service.errors import (
    BadImage,
    BadRequest,
    ClientGone,
    DeadlineExceeded,
    Overloaded,
    ServiceError,
    SettingsError,
    TooManyImages,
)
from service.metrics import Metrics
from service.pool import ModelPool, ServedModel
from service.preprocess import Decoded, OpenedImage, worst_cost_bytes
from service.settings import Settings

Door = Literal["classify", "v2-rest", "v2-grpc"]
#: Metric label values of a request whose model could not be resolved: an unknown name
#: must never become a label value (unbounded cardinality).
UNRESOLVED = ("_unknown", "")
T = TypeVar("T")


@dataclass(frozen=True)
class EncodedImage:
    """One image as the client sent it; ``name`` (a file name) only labels errors."""

    data: bytes | bytearray
    name: str | None = None


@dataclass(frozen=True)
class Timings:
    """Where a request's time went; per-image stages are the slowest image's."""

    decode_s: float
    queue_s: float
    inference_s: float
    total_s: float
    batch_size: int


@dataclass(frozen=True)
class Outcome:
    """Logits of every input, in order: row i belongs to input i."""

    model: ServedModel
    logits: npt.NDArray[np.float32]
    timings: Timings


class Pipeline:
    """The served models, the decode threads and the process-wide budgets, for all doors."""

    def __init__(
        self, models: ModelPool, settings: Settings, metrics: Metrics, decode_threads: Executor
    ) -> None:
        self.models = models
        self.settings = settings
        self.metrics = metrics
        self.decode_threads = decode_threads
        self.body_budget = Budget(
            "body bytes",
            settings.max_body_bytes_in_flight,
            on_change=metrics.body_bytes_in_flight.set,
        )
        worst = worst_cost_bytes(settings.max_image_pixels)
        if settings.max_decode_bytes_in_flight < worst:
            raise SettingsError(
                f"max_decode_bytes_in_flight ({settings.max_decode_bytes_in_flight}) must be "
                f">= {worst}, what decoding one image of max_image_pixels "
                f"({settings.max_image_pixels}) may take: such an image could never be decoded"
            )
        self.decode_budget = Budget(
            "decode bytes",
            settings.max_decode_bytes_in_flight,
            on_change=metrics.decode_bytes_in_flight.set,
        )
        metrics.body_bytes_budget.set(settings.max_body_bytes_in_flight)
        metrics.decode_bytes_budget.set(settings.max_decode_bytes_in_flight)

    def resolve(self, model: str | None, version: int | None) -> ServedModel:
        return self.models.get(model, version)

    def request(
        self,
        door: Door,
        *,
        model: str | None,
        version: int | None,
        timeout_s: float | None = None,
    ) -> RequestScope:
        """One request through the pipeline; use it as ``async with``."""
        return RequestScope(self, door, model, version, timeout_s)


class RequestScope:
    """One request: its model, deadline, reservations and metrics, from entry to exit."""

    def __init__(
        self,
        pipeline: Pipeline,
        door: Door,
        model: str | None,
        version: int | None,
        timeout_s: float | None,
    ) -> None:
        self._pipeline = pipeline
        self._door = door
        self._wanted = (model, version)
        self._started = time.perf_counter()
        limit = pipeline.settings.request_timeout_s
        # A client's own timeout only shortens ours; one already spent (a gRPC deadline
        # that passed in transit: 0 or less) leaves no time at all, never unlimited time.
        asked = math.inf if timeout_s is None else max(timeout_s, 0.0)
        self.deadline = time.monotonic() + min(limit, asked)
        self._body_bytes = 0
        self._reservation: Reservation | None = None
        self._key = UNRESOLVED
        self._counted = False

    # -- entry and exit --------------------------------------------------------------
    async def __aenter__(self) -> RequestScope:
        try:
            self.served = self._pipeline.resolve(*self._wanted)
            self._key = self.served.key
            # Queue room for one image before the body is read: a full queue refuses
            # here, before a byte of the body costs anything.
            self._reservation = self.served.require_batcher().reserve(1)
        except BaseException as exc:
            self._observe(exc)
            raise
        self._in_flight().inc()
        self._counted = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._reservation is not None:
            self._reservation.release()
        if self._body_bytes:
            self._pipeline.body_budget.give(self._body_bytes)
            self._body_bytes = 0
        if self._counted:
            self._in_flight().dec()
        self._observe(exc)

    def _in_flight(self) -> Gauge:
        return self._pipeline.metrics.in_flight.labels(*self._key, self._door)

    def _observe(self, exc: BaseException | None) -> None:
        metrics = self._pipeline.metrics
        code = "200" if exc is None else str(status_of(exc))
        metrics.requests.labels(*self._key, self._door, code).inc()
        metrics.request_duration.labels(*self._key, self._door).observe(
            time.perf_counter() - self._started
        )

    # -- admission -------------------------------------------------------------------
    def remaining_s(self) -> float:
        return self.deadline - time.monotonic()

    def shorten(self, timeout_s: float | None) -> None:
        """Apply a client timeout learnt late (e.g. inside a V2 body); never lengthens."""
        if timeout_s is not None:
            self.deadline = min(self.deadline, time.monotonic() + timeout_s)

    def hold_body(self, nbytes: int) -> None:
        """Charge ``nbytes`` of request body to the body budget, or refuse at once (503)."""
        if nbytes <= 0:
            return
        budget = self._pipeline.body_budget
        if not budget.try_take(nbytes):
            raise Overloaded(
                f"the server holds {budget.used} bytes of request bodies and takes at most "
                f"{budget.capacity}; this request needs {nbytes} more. Retry shortly.",
                body_bytes_in_flight=budget.used,
                max_body_bytes_in_flight=budget.capacity,
            )
        self._body_bytes += nbytes

    # -- the work --------------------------------------------------------------------
    async def classify_images(self, images: Sequence[EncodedImage]) -> Outcome:
        """Decode every image with the model's preprocessing, then batch and run them."""
        self._admit(len(images))
        decode_started = time.perf_counter()
        with tracing.span("decode", images=len(images)):
            tensors = await self._decode_all(images)
        return await self._run(tensors, time.perf_counter() - decode_started)

    async def classify_tensors(self, batch: npt.NDArray[np.float32]) -> Outcome:
        """Run already preprocessed inputs, float32 (N, 3, H, W), as the model expects."""
        expected = self.served.input_shape
        if batch.ndim != 4 or tuple(batch.shape[1:]) != expected or batch.dtype != np.float32:
            raise BadRequest(
                f"input tensor is {batch.dtype} {list(batch.shape)}; model {self.served.name} "
                f"takes float32 [N, {', '.join(map(str, expected))}]",
                expected_shape=[-1, *expected],
            )
        if not np.isfinite(batch).all():
            raise BadRequest("input tensor holds NaN or infinite values; all must be finite")
        self._admit(batch.shape[0])
        return await self._run(list(batch), 0.0)

    def _admit(self, count: int) -> None:
        limit = self._pipeline.settings.max_images_per_request
        if count < 1:
            raise BadRequest("the request holds no image", allowed="1 or more images")
        if count > limit:
            raise TooManyImages(
                f"{count} images in one request; at most {limit} are accepted",
                max_images_per_request=limit,
            )
        assert self._reservation is not None
        self._reservation.resize(count)

    async def _decode_all(self, images: Sequence[EncodedImage]) -> list[Decoded]:
        """Decode in parallel in the decode threads; a bad image names itself.

        GPU preprocessing (``preprocess_device: cuda``): a JPEG comes back undecoded
        (:class:`~service.preprocess.PendingJpeg`, header checked) and is decoded with its
        batch in the engine thread (:mod:`service.preprocess_torch`).
        """
        jobs = [asyncio.ensure_future(self._decode_one(image.data)) for image in images]
        try:
            # The first bad image ends the wait: the others need not be decoded.
            _, pending = await asyncio.wait(
                jobs, timeout=max(self.remaining_s(), 0.0), return_when=asyncio.FIRST_EXCEPTION
            )
        finally:
            # Deadline, a bad image, or the request cancelled (client gone): decodes not
            # yet started never start; running ones finish and give their budget back.
            for job in jobs:
                job.cancel()
        # Every finished job's exception is read (else asyncio logs it), the first raised.
        errors = [
            (i, error)
            for i, job in enumerate(jobs)
            if job.done() and not job.cancelled() and (error := job.exception()) is not None
        ]
        if errors:
            index, error = errors[0]
            if not isinstance(error, ServiceError):
                raise BadImage(f"image {index} could not be decoded") from error
            if len(images) > 1:
                error.details.setdefault("image_index", index)
                if images[index].name:
                    error.details.setdefault("filename", images[index].name)
            raise error
        if pending:
            raise DeadlineExceeded(
                "the request's deadline passed while its images were being decoded"
            )
        observe = self._pipeline.metrics.preprocess_duration.labels(*self._key).observe
        tensors: list[Decoded] = []
        for job in jobs:
            tensor, seconds = job.result()
            observe(seconds)
            tensors.append(tensor)
        return tensors

    async def _decode_one(self, data: bytes | bytearray) -> tuple[Decoded, float]:
        """Header, decode budget, pixels: in one decode-thread hop when the budget has room."""
        budget = self._pipeline.decode_budget
        preprocessor = self.served.preprocessor
        deadline = self.deadline

        def open_and_decode() -> tuple[OpenedImage, Decoded | None, float]:
            if time.monotonic() >= deadline:
                raise DeadlineExceeded("the request's deadline passed before its decode began")
            started = time.perf_counter()
            opened = preprocessor.open(data)
            if not budget.try_take(opened.cost_bytes):
                return opened, None, time.perf_counter() - started
            try:
                return opened, preprocessor.decode(opened), time.perf_counter() - started
            finally:
                budget.give(opened.cost_bytes)

        opened, decoded, seconds = await self._in_decode_thread(open_and_decode)
        if decoded is not None:
            return decoded, seconds
        # The budget was full: wait for room here (bounded by the deadline), then decode.
        cost = opened.cost_bytes
        await budget.take(cost, deadline)

        def decode_held() -> tuple[Decoded, float]:
            started = time.perf_counter()
            try:
                return preprocessor.decode(opened), time.perf_counter() - started
            finally:
                budget.give(cost)

        tensor, more = await self._in_decode_thread(
            decode_held, if_never_run=lambda: budget.give(cost)
        )
        return tensor, seconds + more

    async def _in_decode_thread(
        self, job: Callable[[], T], *, if_never_run: Callable[[], None] | None = None
    ) -> T:
        """Run ``job`` in a decode thread; cancelled before it starts, it never runs."""
        future = self._pipeline.decode_threads.submit(job)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if future.cancel() and if_never_run is not None:
                if_never_run()
            raise

    async def _run(self, tensors: Sequence[Decoded], decode_s: float) -> Outcome:
        assert self._reservation is not None
        reservation, self._reservation = self._reservation, None
        results: list[ItemResult] = await reservation.submit(tensors, self.deadline)
        self._pipeline.metrics.images.labels(*self._key, self._door).inc(len(results))
        timings = Timings(
            decode_s=decode_s,
            queue_s=max(r.queue_s for r in results),
            inference_s=max(r.inference_s for r in results),
            total_s=time.perf_counter() - self._started,
            batch_size=max(r.batch_size for r in results),
        )
        if tracing.enabled():
            _trace_batch(timings)
        return Outcome(
            model=self.served, logits=np.stack([r.logits for r in results]), timings=timings
        )


def _trace_batch(timings: Timings) -> None:
    """The queue and inference spans, known once the batch has run (it ended just now)."""
    end = time.time_ns()
    ran = end - int(timings.inference_s * 1e9)
    queued = ran - int(timings.queue_s * 1e9)
    tracing.finished_span("queue", queued, ran)
    tracing.finished_span("inference", ran, end, batch_size=timings.batch_size)


def status_of(exc: BaseException) -> int:
    """The HTTP status a request that ended with ``exc`` is counted under."""
    if isinstance(exc, ServiceError):
        return exc.status
    if isinstance(exc, asyncio.CancelledError):
        return ClientGone.status
    return 500
