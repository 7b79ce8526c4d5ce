"""An in-process door: a call made from Python (benchmarks, tests, tools), no transport.

It has no body to read (the inputs are already in memory, so nothing is charged to the
body budget) and no client to lose; everything else is the same call as on any door:
resolution, deadline, admission, decode, batch, engine, counting under ``door``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from service.pipeline.call import Door, Head, Inputs, Outcome, Parsed, never
from service.pool import ServedModel


class LocalCall:
    """One in-process call; :meth:`Pipeline.serve` returns its :class:`Outcome`."""

    def __init__(
        self,
        inputs: Inputs,
        *,
        model: str | None = None,
        version: int | str | None = None,
        door: Door = "classify",
        timeout_s: float | None = None,
        api_key: str | None = None,
    ) -> None:
        self.inputs = inputs
        self.door = door
        self.request_id = uuid.uuid4().hex
        self._head = Head(
            model=model,
            version=None if version is None else str(version),
            api_key=api_key,
            timeout_s=timeout_s,
        )

    async def head(self) -> Head:
        return self._head

    async def chunks(self) -> AsyncIterator[bytes]:
        return
        yield b""  # an async generator with no chunks

    async def disconnected(self) -> None:
        await never()

    def parser(self, served: ServedModel) -> _Ready:
        return _Ready(self.inputs)

    def encode(self, parsed: Parsed[None], outcome: Outcome) -> Outcome:
        return outcome


class _Ready:
    """The inputs as given: nothing to parse."""

    heavy = False

    def __init__(self, inputs: Inputs) -> None:
        self._inputs = inputs

    def feed(self, chunk: bytes) -> None:
        pass

    def cost_bytes(self) -> int:
        return 0

    def finish(self) -> Parsed[None]:
        return Parsed(self._inputs, None)
