"""The pipeline: one entry, :meth:`Pipeline.serve`, runs a whole call for every door.

In order, for ``/classify``, V2 REST and V2 gRPC alike::

    head -> API key -> calls at once (per door) -> model and version -> deadline
      -> queue room for one image -> read the body (budgeted, deadline and rate bound)
      -> the door's parse (parse thread, parse budget) -> images counted (queue room)
      -> decode (decode threads, decode budget) -> batch -> engine -> the door's encode

Every outcome, refusals before the model is known included, is counted once in
``resnet_serve_requests_total`` with its door label, timed, logged (5xx with the
traceback, once) and left on the request's span; every budget taken is given back on
every path (result, error, deadline, client gone), in one ``finally``. Stages live in
their own modules (:mod:`.intake`, :mod:`.decoding`, :mod:`service.batching`,
:mod:`service.engines`); this module only sequences them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Sequence
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from service import tracing
from service.batching import ItemResult, Reservation
from service.budgets import Budget
from service.errors import (
    BadRequest,
    ClientGone,
    Overloaded,
    ServiceError,
    SettingsError,
    TooManyImages,
    UnknownModel,
    status_of,
)
from service.logs import request_id_var
from service.metrics import Metrics
from service.pipeline.call import Call, Door, Head, Inputs, Outcome, Timings
from service.pipeline.decoding import Decoder
from service.pipeline.intake import BodyHold, Intake
from service.pipeline.lanes import DecodeLanes
from service.pool import ModelPool, ServedModel
from service.preprocess import Decoded, worst_cost_bytes
from service.readiness import Readiness
from service.security import check_api_key
from service.settings import Settings

logger = logging.getLogger(__name__)
X = TypeVar("X")
R = TypeVar("R")
T = TypeVar("T")
#: Metric label values of a request whose model could not be resolved: an unknown name
#: must never become a label value (unbounded cardinality).
UNRESOLVED = ("_unknown", "")
#: Longest model name looked up (and so echoed in an error): repository folder names.
MAX_MODEL_NAME = 255


def parse_version(text: str | None) -> int | None:
    """A version from a path, a query or a message field: empty means the default one."""
    if not text:
        return None
    # isascii: str.isdigit() also accepts "²" and other digits int() refuses; the length
    # bound keeps int() linear and the number sane.
    if not (text.isascii() and text.isdigit()) or len(text) > 9 or int(text) < 1:
        raise UnknownModel(f"model version must be a positive integer, got {text[:32]!r}")
    return int(text)


class Pipeline:
    """The served models, the stages and the process-wide budgets, for every door."""

    def __init__(
        self,
        models: ModelPool,
        settings: Settings,
        metrics: Metrics,
        lanes: DecodeLanes | None = None,
    ) -> None:
        self.models = models
        self.settings = settings
        self.metrics = metrics
        self.readiness = Readiness(models, settings)
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
        lanes = lanes or DecodeLanes.from_settings(settings, turns=models.turns)
        self.decoder = Decoder(lanes, self.decode_budget)
        self.intake = Intake(settings, self.body_budget)
        #: Calls at once per door, where the transport cannot bound them itself.
        self._door_limits: dict[Door, int] = {"v2-grpc": settings.grpc_max_concurrent_rpcs}
        self._door_calls: Counter[Door] = Counter()

    def close(self) -> None:
        """Stop the stage threads (after the batchers drained: nothing waits on them)."""
        self.intake.close()
        self.decoder.lanes.shutdown(wait=True, cancel_futures=True)

    def resolve(self, model: str | None, version: str | int | None) -> ServedModel:
        """The served version a name and an optional version (text or number) ask for."""
        if model is not None and len(model) > MAX_MODEL_NAME:
            raise UnknownModel(
                f"model name of {len(model)} characters; names have at most {MAX_MODEL_NAME}"
            )
        number = version if isinstance(version, int) else parse_version(version)
        return self.models.get(model, number)

    # -- the one entry ------------------------------------------------------------------
    async def serve(self, call: Call[X, R]) -> R:
        """Run ``call`` from its head to its answer; raises a typed error for the door."""
        started = time.perf_counter()
        token = request_id_var.set(call.request_id)
        tracing.annotate(request_id=call.request_id, door=call.door)
        head: Head | None = None
        labels: tuple[str, str] | None = None
        hold = BodyHold(self.body_budget)
        reservation: Reservation | None = None
        door_admitted = False
        in_flight = None
        error: BaseException | None = None
        try:
            head = await call.head()
            check_api_key(self.settings.api_key, head.api_key)
            self._admit_door(call.door)
            door_admitted = True
            served = self.resolve(head.model, head.version)
            labels = served.key
            in_flight = self.metrics.in_flight.labels(*labels, call.door)
            in_flight.inc()
            deadline = self._deadline(head.timeout_s)
            # Queue room for one image before the body is read: a full queue refuses
            # here, before a byte of the body costs anything.
            reservation = served.require_batcher().reserve(1)
            parser = call.parser(served)
            with tracing.span("read"):
                size = await self.intake.read(call, head, parser, hold, deadline)
            with tracing.span("parse", bytes=size):
                parsed = await self.intake.parse(parser, size)
            del parser  # the raw body is not needed any more
            work = self._run(served, parsed.inputs, reservation, deadline, call.door, started)
            outcome = await _unless_gone(call, work)
            return call.encode(parsed, outcome)
        except BaseException as exc:
            error = exc
            raise
        finally:
            if reservation is not None:
                reservation.release()
            hold.release()
            if door_admitted:
                self._door_calls[call.door] -= 1
            if in_flight is not None:
                in_flight.dec()
            if labels is None:  # refused before its version was resolved
                labels = UNRESOLVED if head is None else self._labels_for(head.model)
            self._observe(call.door, labels, error, started)
            request_id_var.reset(token)
            if error is not None:
                let_go(error)
                error = None

    # -- admission ----------------------------------------------------------------------
    def _labels_for(self, model: str | None) -> tuple[str, str]:
        """Labels for a call refused before its version is known: the model's default
        version when the name exists, else :data:`UNRESOLVED`."""
        try:
            return self.resolve(model, None).key
        except UnknownModel:
            return UNRESOLVED

    def _admit_door(self, door: Door) -> None:
        limit = self._door_limits.get(door)
        if limit is not None and self._door_calls[door] >= limit:
            raise Overloaded(
                f"{self._door_calls[door]} {door} calls are being served, the most at once "
                f"({limit}). Retry shortly.",
                max_concurrent_calls=limit,
            )
        self._door_calls[door] += 1

    def _deadline(self, timeout_s: float | None) -> float:
        # A client's own timeout only shortens ours; one already spent (a gRPC deadline
        # that passed in transit: 0 or less) leaves no time at all, never unlimited time.
        asked = math.inf if timeout_s is None else max(timeout_s, 0.0)
        return time.monotonic() + min(self.settings.request_timeout_s, asked)

    # -- the work -----------------------------------------------------------------------
    async def _run(
        self,
        served: ServedModel,
        inputs: Inputs,
        reservation: Reservation,
        deadline: float,
        door: Door,
        started: float,
    ) -> Outcome:
        if inputs.timeout_s is not None:  # a timeout found inside the body
            deadline = min(deadline, time.monotonic() + max(inputs.timeout_s, 0.0))
        decode_s = 0.0
        if inputs.tensor is not None:
            tensors: Sequence[Decoded] = _checked_tensor(inputs.tensor, served)
            self._admit_images(len(tensors), reservation)
        else:
            self._admit_images(len(inputs.images), reservation)
            decode_started = time.perf_counter()
            with tracing.span("decode", images=len(inputs.images)):
                tensors = await self.decoder.decode_all(
                    inputs.images,
                    served.preprocessor,
                    deadline,
                    self.metrics.preprocess_duration.labels(*served.key),
                )
            decode_s = time.perf_counter() - decode_started
        results: list[ItemResult] = await reservation.submit(tensors, deadline)
        self.metrics.images.labels(*served.key, door).inc(len(results))
        timings = Timings(
            decode_s=decode_s,
            queue_s=max(r.queue_s for r in results),
            inference_s=max(r.inference_s for r in results),
            total_s=time.perf_counter() - started,
            batch_size=max(r.batch_size for r in results),
        )
        if tracing.enabled():
            _trace_batch(timings)
        return Outcome(model=served, logits=np.stack([r.logits for r in results]), timings=timings)

    def _admit_images(self, count: int, reservation: Reservation) -> None:
        limit = self.settings.max_images_per_request
        if count < 1:
            raise BadRequest("the request holds no image", allowed="1 or more images")
        if count > limit:
            raise TooManyImages(
                f"{count} images in one request; at most {limit} are accepted",
                max_images_per_request=limit,
            )
        reservation.resize(count)

    # -- the outcome --------------------------------------------------------------------
    def _observe(
        self, door: Door, labels: tuple[str, str], error: BaseException | None, started: float
    ) -> None:
        status = 200 if error is None else status_of(error)
        seconds = time.perf_counter() - started
        self.metrics.requests.labels(*labels, door, str(status)).inc()
        self.metrics.request_duration.labels(*labels, door).observe(seconds)
        tracing.annotate(**{"http.response.status_code": status})
        if status >= 500 and not (isinstance(error, ServiceError) and status != 500):
            # A real server fault: logged once, here, with its traceback; the door's
            # error table shows the client no internals.
            logger.error("%s request failed (%s)", door, status, exc_info=error)
        elif error is not None:
            logger.debug("%s request answered %d: %s", door, status, error)


def let_go(error: BaseException) -> None:
    """Drop the finished frames an error's traceback holds, with their locals.

    A traceback keeps every frame it passed through alive, and with them the request's
    body, parsed message and decoded tensors; a frame that also holds the error (a
    variable, a list of failed jobs) makes a cycle that only the cyclic GC frees, which
    does not count native memory (a parsed protobuf's arena): measured, +35 MiB kept per
    refused 2 MiB gRPC message. Once the outcome is observed (5xx logged with its
    traceback), the door needs only the error's message and details.
    """
    seen = 0
    current: BaseException | None = error
    while current is not None and seen < 8:
        if current.__traceback__ is not None:
            traceback.clear_frames(current.__traceback__)
        current = current.__cause__ or current.__context__
        seen += 1


def _checked_tensor(batch: npt.NDArray[np.float32], served: ServedModel) -> list[Decoded]:
    """Preprocessed inputs, float32 (N, 3, H, W), as the model takes them."""
    expected = served.input_shape
    if batch.ndim != 4 or tuple(batch.shape[1:]) != expected or batch.dtype != np.float32:
        raise BadRequest(
            f"input tensor is {batch.dtype} {list(batch.shape)[:8]}; model {served.name} "
            f"takes float32 [N, {', '.join(map(str, expected))}]",
            expected_shape=[-1, *expected],
        )
    if not np.isfinite(batch).all():
        raise BadRequest("input tensor holds NaN or infinite values; all must be finite")
    return list(batch)


async def _unless_gone(call: Call[X, R], work: Awaitable[T]) -> T:
    """Await ``work``, cancelling it if the client hangs up first (then :class:`ClientGone`).

    Once the body is read, an HTTP transport's ``disconnected`` only returns when the
    client disconnects, so the watcher costs nothing per request.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(call.disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.wait({task})  # its budgets are given back before we answer
    if not task.cancelled():
        task.exception()  # retrieved: it lost the race with the hang-up
    raise ClientGone("the client hung up; its images still queued were not run")


def _trace_batch(timings: Timings) -> None:
    """The queue and inference spans, known once the batch has run (it ended just now)."""
    end = time.time_ns()
    ran = end - int(timings.inference_s * 1e9)
    queued = ran - int(timings.queue_s * 1e9)
    tracing.finished_span("queue", queued, ran)
    tracing.finished_span("inference", ran, end, batch_size=timings.batch_size)
