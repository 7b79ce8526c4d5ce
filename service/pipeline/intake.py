"""The read and parse stages: a body into parsed inputs, bounded in bytes, memory and time.

Read: body bytes are charged to the process-wide body budget *before* they are held:
from the declared length when the client sends one, chunk by chunk when it streams
without. No body may pass ``max_body_bytes``. Time is bounded twice: every chunk waits
at most until the request's deadline, and the body as a whole must keep up a minimum
rate (``min_body_rate_bytes_per_s``, after a grace of ``body_rate_grace_s``), so a
client trickling a byte a second cannot hold a request, its reservation and its budget
for the whole deadline. Either way the answer is 408.

Parse: the door's parser is fed each chunk on the event loop (work bounded by the
chunk), and finished in the one parse thread when the body is large, so the event loop
never runs work proportional to a request's size. Before ``finish`` builds anything, the
parser's own bound on what it will build (:meth:`BodyParser.cost_bytes`, computed in the
parse thread at C speed) is checked against ``max_parse_bytes``: a body whose parsed form
could not fit is refused (413) before one object of it exists. One parse thread means at
most one parse's memory is alive at a time, whatever arrives at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

from service.budgets import Budget
from service.errors import (
    BadRequest,
    DeadlineExceeded,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    ServiceError,
)
from service.pipeline.call import BodyParser, Call, Head, Parsed
from service.settings import Settings
from service.threads import named_executor

X = TypeVar("X")
A = TypeVar("A")
T = TypeVar("T")
#: A body smaller than this is parsed on the event loop: the hop to the parse thread
#: would cost more than the parse (a raw image, a multipart form, a small JSON header).
INLINE_PARSE_BYTES = 64 * 1024


class BodyHold:
    """The body bytes one call holds in the budget; given back by :meth:`release`."""

    def __init__(self, budget: Budget) -> None:
        self._budget = budget
        self.held = 0

    def take(self, nbytes: int) -> None:
        """Charge ``nbytes`` more, or refuse at once (503 + Retry-After)."""
        if nbytes <= 0:
            return
        if not self._budget.try_take(nbytes):
            raise Overloaded(
                f"the server holds {self._budget.used} bytes of request bodies and takes at "
                f"most {self._budget.capacity}; this request needs {nbytes} more. Retry shortly.",
                body_bytes_in_flight=self._budget.used,
                max_body_bytes_in_flight=self._budget.capacity,
            )
        self.held += nbytes

    def release(self) -> None:
        if self.held:
            self._budget.give(self.held)
            self.held = 0


class Intake:
    """Reads and parses bodies for every door, under the process-wide body budget."""

    def __init__(self, settings: Settings, body_budget: Budget) -> None:
        self.settings = settings
        self.body_budget = body_budget
        self._parse_thread = named_executor(1, "parse")

    def close(self) -> None:
        self._parse_thread.shutdown(wait=True, cancel_futures=True)

    async def read(
        self,
        call: Call[X, object],
        head: Head,
        parser: BodyParser[X],
        hold: BodyHold,
        deadline: float,
    ) -> int:
        """Feed the whole body to ``parser``; returns its length in bytes."""
        limit = self.settings.max_body_bytes
        declared = head.content_length
        if declared is not None:
            if declared > limit:
                raise PayloadTooLarge(
                    f"request body is {declared} bytes; at most {limit} are accepted",
                    max_body_bytes=limit,
                )
            hold.take(declared)
        rate = self.settings.min_body_rate_bytes_per_s
        grace = self.settings.body_rate_grace_s
        started = time.monotonic()
        if started >= deadline:  # a client deadline already spent (in transit)
            raise DeadlineExceeded("the request's deadline passed before its body was read")
        received = 0
        loop = asyncio.get_running_loop()

        def latest_next_byte() -> float:
            """When the next byte must have come, on the loop's clock: the deadline, or
            when the average rate since the body began would fall under the minimum."""
            rate_limit_at = started + max(grace, (received + 1) / rate)
            return loop.time() + min(deadline, rate_limit_at) - time.monotonic()

        # One timeout rescheduled per chunk (no task per chunk, and no exception kept
        # alive by one, holding the body in its traceback's frames).
        try:
            async with asyncio.timeout_at(latest_next_byte()) as timeout:
                async for chunk in call.chunks():
                    received += len(chunk)
                    if received > limit:
                        raise PayloadTooLarge(
                            f"request body passed {limit} bytes, the most accepted",
                            max_body_bytes=limit,
                        )
                    if declared is None:
                        hold.take(len(chunk))
                    elif received > declared:
                        raise BadRequest(
                            f"the body is longer than its declared Content-Length ({declared})"
                        )
                    if chunk:
                        parser.feed(chunk)
                    timeout.reschedule(latest_next_byte())
        except TimeoutError:
            if time.monotonic() >= deadline:
                raise RequestTimeout(
                    f"the request body did not arrive within the request's deadline "
                    f"({received} bytes received)"
                ) from None
            raise RequestTimeout(
                f"the request body arrived slower than {rate} bytes/s "
                f"({received} bytes in {time.monotonic() - started:.1f}s)",
                min_body_rate_bytes_per_s=rate,
            ) from None
        return received

    async def parse(self, parser: BodyParser[X], size: int) -> Parsed[X]:
        """``parser.finish()``, off the event loop when the body is large, within budget."""
        if size < INLINE_PARSE_BYTES or not parser.heavy:
            return self._checked_finish(parser)
        return await self.offload(self._checked_finish, parser)

    async def offload(self, work: Callable[[A], T], argument: A) -> T:
        """``work(argument)`` in the parse thread: for a door whose head must be parsed
        from the whole message (gRPC). Cancelled before it starts, it never runs."""
        future = self._parse_thread.submit(work, argument)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()
            raise

    def _checked_finish(self, parser: BodyParser[X]) -> Parsed[X]:
        limit = self.settings.max_parse_bytes
        cost = parser.cost_bytes()
        if cost > limit:
            raise PayloadTooLarge(
                f"the request's parsed form would take about {cost} bytes; at most {limit} "
                "are accepted (send images, or tensors with the binary tensor extension)",
                max_parse_bytes=limit,
            )
        try:
            return parser.finish()
        except ServiceError:
            raise
        except RecursionError:
            raise BadRequest("the request body is nested too deeply") from None
        except (ValueError, TypeError, OverflowError, UnicodeError) as exc:
            # Parsing is pure work on the client's bytes: what it cannot take is the
            # client's fault (e.g. an integer of 5000 digits in JSON).
            reason = str(exc)[:200]
            raise BadRequest(f"malformed request body: {type(exc).__name__}: {reason}") from None
