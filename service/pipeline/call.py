"""What a front door hands the pipeline: one call, transport-neutral.

A door is three things: its transport (how the head and the body arrive, how a hang-up
shows), a parse/encode pair, and its error table. It describes one request as a
:class:`Call` and hands it to :meth:`service.pipeline.Pipeline.serve`, which runs the
whole call (key, model, deadline, admission, the budgeted read, the door's parse,
decode, batch, engine, counting, logging, tracing) and returns what ``encode`` made, or
raises a typed error the door answers through its table. A door never touches budgets,
reservations or metrics.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Literal, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from service.pool import ServedModel

Door = Literal["classify", "v2-rest", "v2-grpc"]
X = TypeVar("X")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


@dataclass(frozen=True)
class EncodedImage:
    """One image as the client sent it; ``name`` (a file name) only labels errors."""

    data: bytes | bytearray
    name: str | None = None


@dataclass(frozen=True)
class Inputs:
    """What a parsed body asks the model to run: encoded images, or a ready tensor."""

    images: Sequence[EncodedImage] = ()
    #: Preprocessed pixels, float32 (N, C, H, W), when the client sent no images.
    tensor: npt.NDArray[np.float32] | None = None
    #: A client timeout found inside the body (V2's ``timeout`` parameter): only shortens.
    timeout_s: float | None = None


@dataclass(frozen=True)
class Parsed(Generic[X]):
    """A parsed body: the inputs for the model, and what the door needs to answer."""

    inputs: Inputs
    extra: X


@dataclass(frozen=True)
class Head:
    """What a door reads from its transport before the body, raw: the pipeline checks it."""

    model: str | None
    #: The version as sent (a path segment, a protobuf string); empty: the default one.
    version: str | None
    api_key: str | bytes | None
    #: The client's own deadline in seconds, already parsed by the door; only shortens ours.
    timeout_s: float | None = None
    #: The body length the client declared, None when it streams without one.
    content_length: int | None = None


class BodyParser(Protocol[X]):
    """One body, parsed as it streams.

    ``feed`` runs on the event loop once per received chunk, so its work must be bounded
    by the chunk's size (a streaming multipart parser, or just keeping the chunk);
    ``finish`` may be proportional to the whole body: the pipeline runs it in the parse
    thread, after :meth:`cost_bytes` was checked against the parse budget.
    """

    #: True when ``finish`` (and ``cost_bytes``) do work that grows with the body (a JSON
    #: document): then a large body is finished in the parse thread. False when the body
    #: was parsed as it streamed (multipart, a raw image, a protobuf parsed with its head).
    heavy: bool

    def feed(self, chunk: bytes) -> None: ...

    def cost_bytes(self) -> int:
        """An upper bound on the memory ``finish`` will build, known before building it."""
        ...

    def finish(self) -> Parsed[X]: ...


class Call(Protocol[X, R_co]):
    """One request as its door presents it to the pipeline."""

    @property
    def door(self) -> Door: ...

    @property
    def request_id(self) -> str: ...

    async def head(self) -> Head:
        """Parse the transport's head; raises a typed error for a malformed one.

        Async for transports whose head is inside the message (gRPC carries the model
        name in the protobuf): such a door parses it off the event loop.
        """
        ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive; raises :class:`ClientGone` on a hang-up."""
        ...

    async def disconnected(self) -> None:
        """Returns once the client has gone (never, if the transport cannot tell)."""
        ...

    def parser(self, served: ServedModel) -> BodyParser[X]: ...

    def encode(self, parsed: Parsed[X], outcome: Outcome) -> R_co:
        """The door's answer for a successful call (runs on the event loop: small work)."""
        ...


async def never() -> None:
    """A ``disconnected`` for a transport that cannot see the client go (or whose server
    cancels the call itself, as grpc.aio does): it never returns."""
    await asyncio.Event().wait()


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
