"""The decode stage: encoded images -> model inputs, in the decode lanes, in budget.

Each image's header is opened in the cheap lane (:mod:`.lanes`). A cheap image is
decoded in the same hop when the decode budget has room for its cost, bounded from its
header; a heavy one (estimated work above ``heavy_decode_work``) is decoded in the heavy
lane, so a few expensive images never take every decode thread from cheap ones. When
the budget is full, the request waits on the event loop for room (bounded by its
deadline) and decodes then. Every byte taken
from the budget is given back in a ``finally`` in the thread that decoded, or here if
the decode never ran (cancelled before it started).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from prometheus_client import Histogram

from service.budgets import Budget
from service.errors import BadImage, DeadlineExceeded, ServiceError
from service.pipeline.call import EncodedImage
from service.pipeline.lanes import DecodeLanes
from service.preprocess import Decoded, OpenedImage, Preprocessor

T = TypeVar("T")


class Decoder:
    """The decode lanes and the decode-memory budget, shared by every request."""

    def __init__(self, lanes: DecodeLanes, budget: Budget) -> None:
        self.lanes = lanes
        self.budget = budget

    async def decode_all(
        self,
        images: Sequence[EncodedImage],
        preprocessor: Preprocessor,
        deadline: float,
        observe: Histogram,
    ) -> list[Decoded]:
        """Decode in parallel; the first bad image ends the wait and names itself.

        GPU preprocessing (``preprocess_device: cuda``): a JPEG comes back undecoded
        (:class:`~service.preprocess.PendingJpeg`, header checked) and is decoded with its
        batch in the engine thread (:mod:`service.preprocess_torch`).
        """
        jobs = [
            asyncio.ensure_future(self._decode_one(image.data, preprocessor, deadline))
            for image in images
        ]
        try:
            _, pending = await asyncio.wait(
                jobs,
                timeout=max(deadline - time.monotonic(), 0.0),
                return_when=asyncio.FIRST_EXCEPTION,
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
        tensors: list[Decoded] = []
        for job in jobs:
            tensor, seconds = job.result()
            observe.observe(seconds)
            tensors.append(tensor)
        return tensors

    async def _decode_one(
        self, data: bytes | bytearray, preprocessor: Preprocessor, deadline: float
    ) -> tuple[Decoded, float]:
        """Header, decode budget, pixels: in one decode-thread hop when the budget has room."""
        budget, lanes = self.budget, self.lanes

        def open_and_decode() -> tuple[OpenedImage, Decoded | None, float]:
            if time.monotonic() >= deadline:
                raise DeadlineExceeded("the request's deadline passed before its decode began")
            started = time.perf_counter()
            opened = preprocessor.open(data)
            if lanes.is_heavy(opened) or not budget.try_take(opened.cost_bytes):
                return opened, None, time.perf_counter() - started
            try:
                return opened, preprocessor.decode(opened), time.perf_counter() - started
            finally:
                budget.give(opened.cost_bytes)

        opened, decoded, seconds = await self._in_lane(open_and_decode, heavy=False)
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

        tensor, more = await self._in_lane(
            decode_held, heavy=lanes.is_heavy(opened), if_never_run=lambda: budget.give(cost)
        )
        return tensor, seconds + more

    async def _in_lane(
        self,
        job: Callable[[], T],
        *,
        heavy: bool,
        if_never_run: Callable[[], None] | None = None,
    ) -> T:
        """Run ``job`` in a lane's thread; cancelled before it starts, it never runs.

        A cheap job is counted in flight meanwhile, so that a CPU batch about to start lets it join
        (:meth:`~service.batching.turns.CpuTurns.decodes_settled`)."""
        turns = self.lanes.turns
        future = self.lanes.submit(job, heavy=heavy)
        counted = not heavy  # a heavy job takes no turns (DecodeLanes.submit): none waits
        if counted:
            turns.decode_submitted()
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if future.cancel() and if_never_run is not None:
                if_never_run()
            raise
        finally:
            if counted:
                turns.decode_finished()
