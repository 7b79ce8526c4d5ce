"""Queue room held for a request's images, and what a batch gives back.

A :class:`Reservation` is taken before a request's body is read (one image) and resized
once its images are counted, always before any decoding; submitting it queues the items
and waits for their results. Items are opaque to the batcher: a ``collate`` function
(the model's preprocessor's) turns them into one engine batch, a :class:`Collated`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt


class Queue(Protocol):
    """What a reservation asks of its batcher's queue (:class:`~.batcher.Batcher`)."""

    def check_room(self, count: int = 1, *, admitted: bool = False) -> None: ...

    def hold(self, count: int) -> None:
        """Count ``count`` more images as reserved (negative: give room back)."""
        ...

    async def enqueue(self, items: Sequence[Any], deadline: float) -> list[ItemResult]: ...


@dataclass(frozen=True)
class ItemResult:
    """One image's logits and what its batch cost, for the response's timings."""

    logits: npt.NDArray[np.float32]
    queue_s: float
    inference_s: float
    batch_size: int


class Reservation:
    """Queue room held for one request's images while they are decoded."""

    def __init__(self, queue: Queue, count: int) -> None:
        self._queue = queue
        self.count = count
        self._open = True

    async def submit(self, items: Sequence[Any], deadline: float) -> list[ItemResult]:
        """Queue the decoded images and wait for their results, in order."""
        if len(items) != self.count:
            raise ValueError(f"reserved {self.count} images, submitted {len(items)}")
        self._close()
        return await self._queue.enqueue(items, deadline)

    def resize(self, count: int) -> None:
        """Hold room for ``count`` images instead (once the request's images are counted).

        Growing checks for room like :meth:`Batcher.reserve` (503 at once when full);
        shrinking gives room back.
        """
        if not self._open:
            raise RuntimeError("the reservation was already used or released")
        if count > self.count:
            # Admitted already: a drain (swap, unload, shutdown) lets it grow, so a
            # request reserved before the swap finishes on the version it was admitted to.
            self._queue.check_room(count - self.count, admitted=True)
        self._queue.hold(count - self.count)
        self.count = count

    @property
    def open(self) -> bool:
        """Still holding room: not yet submitted or released."""
        return self._open

    def release(self) -> None:
        """Give the room back (idempotent; ``submit`` releases it too)."""
        self._close()

    def _close(self) -> None:
        if self._open:
            self._open = False
            self._queue.hold(-self.count)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close()


@dataclass(frozen=True)
class Collated:
    """One engine batch made from queued items, and the items refused while making it.

    ``batch`` holds the accepted items' rows in order; ``rejected`` maps an item's index
    to its error (a JPEG the GPU and the CPU both failed to decode): only that request
    fails, not its neighbours in the batch.
    """

    batch: Any
    rejected: dict[int, Exception]


def stack_arrays(items: Sequence[Any]) -> Collated:
    """The default collate: the items are arrays of one shape, stacked."""
    return Collated(np.stack(items), {})
