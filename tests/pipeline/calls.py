"""Fake doors for driving :meth:`Pipeline.serve` without a server.

:class:`BodyCall` has a body: each chunk it sends is one image (a real door's parser
would split a body its own way), optionally declared up front, optionally trickled,
and a client that can hang up (``gone``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence

from service.errors import ClientGone
from service.pipeline import EncodedImage, Head, Inputs, Outcome, Parsed
from service.pool import ServedModel


class BodyCall:
    door = "classify"

    def __init__(
        self,
        chunks: Sequence[bytes],
        *,
        declare: bool = True,
        model: str | None = None,
        timeout_s: float | None = None,
        pause_s: float = 0.0,
    ) -> None:
        self._chunks = list(chunks)
        self._declare = declare
        self._model = model
        self._timeout_s = timeout_s
        self._pause_s = pause_s
        self.request_id = uuid.uuid4().hex
        self.gone = asyncio.Event()
        self.sent = 0

    async def head(self) -> Head:
        length = sum(len(c) for c in self._chunks) if self._declare else None
        return Head(
            model=self._model,
            version=None,
            api_key=None,
            timeout_s=self._timeout_s,
            content_length=length,
        )

    async def chunks(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            if self.gone.is_set():
                raise ClientGone("the client hung up while sending the body")
            if self._pause_s:
                await asyncio.sleep(self._pause_s)
            self.sent += len(chunk)
            yield chunk

    async def disconnected(self) -> None:
        await self.gone.wait()

    def parser(self, served: ServedModel) -> ChunkImages:
        return ChunkImages()

    def encode(self, parsed: Parsed[None], outcome: Outcome) -> Outcome:
        return outcome


class ChunkImages:
    heavy = False

    def __init__(self) -> None:
        self.images: list[EncodedImage] = []

    def feed(self, chunk: bytes) -> None:
        self.images.append(EncodedImage(chunk))

    def cost_bytes(self) -> int:
        return 0

    def finish(self) -> Parsed[None]:
        return Parsed(Inputs(images=self.images), None)
