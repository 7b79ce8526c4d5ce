"""The read stage for HTTP: a request body into encoded images, bounded in bytes and time.

Bytes are charged to the process-wide body budget (:meth:`RequestScope.hold_body`)
*before* they are read: from ``Content-Length`` when the client declares one, chunk by
chunk when it streams without. Multipart bodies are parsed as they stream, straight
into one in-memory buffer per image: nothing is spooled to disk (a spool directory is
a disk budget nobody set) and the body is never held twice.

Time: every receive waits at most until the request's deadline; a body still arriving
then is cut off with 408. A client that hangs up mid-body ends the request (499).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, TypeVar, cast

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from service import tracing
from service.errors import (
    BadImage,
    BadRequest,
    ClientGone,
    RequestTimeout,
    TooManyImages,
    UnsupportedMediaType,
)
from service.pipeline import EncodedImage, RequestScope

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

RAW_IMAGE_TYPES = ("image/", "application/octet-stream")
#: The multipart field that carries images (repeat it for several).
FILE_FIELD = b"file"
#: Other multipart fields are tolerated (and ignored) up to this many.
MAX_OTHER_FIELDS = 16
T = TypeVar("T")


async def read_images(request: Request, call: RequestScope, max_images: int) -> list[EncodedImage]:
    """Encoded images from multipart ``file`` fields, or from a raw image body."""
    with tracing.span("read"):
        return await _read_images(request, call, max_images)


async def _read_images(request: Request, call: RequestScope, max_images: int) -> list[EncodedImage]:
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    kind = content_type.decode("latin-1").lower()
    if kind == "multipart/form-data":
        boundary = params.get(b"boundary")
        if not boundary:
            raise BadRequest("multipart/form-data body without a boundary parameter")
        parts = _Parts(max_images)
        parser = MultipartParser(boundary, cast("MultipartCallbacks", parts.callbacks()))
        try:
            async for chunk in _chunks(request, call):
                parser.write(chunk)
            parser.finalize()
        except MultipartParseError as exc:
            raise BadRequest(
                f"malformed multipart body: {exc}",
                allowed="multipart/form-data with 'file' fields holding images",
            ) from None
        return parts.images()
    if kind.startswith(RAW_IMAGE_TYPES):
        body = await _read_body(request, call)
        if not body:
            raise BadImage("empty request body: send the image bytes", allowed="one image")
        return [EncodedImage(body)]
    raise UnsupportedMediaType(
        f"content type {kind or '(none)'!r} is not accepted",
        allowed="multipart/form-data with 'file' fields, or a raw body with an image/* "
        "or application/octet-stream content type",
    )


async def read_body(request: Request, call: RequestScope) -> bytearray:
    """The whole body in one buffer, charged to the body budget, read until the deadline."""
    with tracing.span("read"):
        return await _read_body(request, call)


async def _read_body(request: Request, call: RequestScope) -> bytearray:
    body = bytearray()
    async for chunk in _chunks(request, call):
        body += chunk
    return body


async def _chunks(request: Request, call: RequestScope) -> AsyncIterator[bytes]:
    """The body's chunks, charged to the body budget, each awaited until the deadline."""
    declared = _content_length(request)
    if declared is not None:
        call.hold_body(declared)
    stream = request.stream().__aiter__()
    received = 0
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), max(call.remaining_s(), 0.0))
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            raise RequestTimeout(
                f"the request body did not arrive within the request's deadline "
                f"({received} bytes received)",
            ) from None
        except ClientDisconnect:
            raise ClientGone("the client hung up while sending the body") from None
        received += len(chunk)
        if declared is None:
            call.hold_body(len(chunk))
        if chunk:
            yield chunk


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``, cancelling it if the client hangs up first (then :class:`ClientGone`).

    Once the body is read, the server's ``receive`` only returns when the client
    disconnects (or the response is sent), so a watcher on it costs nothing per request.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
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


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise BadRequest(f"Content-Length {value!r} is not a number") from None
    if length < 0:
        raise BadRequest(f"Content-Length {value!r} is negative")
    return length


class _Parts:
    """Collects multipart parts as they stream: ``file`` parts into buffers, others counted."""

    def __init__(self, max_images: int) -> None:
        self._max_images = max_images
        self._images: list[EncodedImage] = []
        self._other_fields: list[str] = []
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._data: bytearray | None = None
        self._name = b""
        self._filename: str | None = None

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._header_field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._header_value.extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def images(self) -> list[EncodedImage]:
        if not self._images:
            sent = (
                f" (fields sent: {sorted(set(self._other_fields))})" if self._other_fields else ""
            )
            raise BadRequest(
                f"multipart body has no file in a field named 'file'{sent}",
                allowed="one or more 'file' fields holding images",
            )
        return self._images

    def _part_begin(self) -> None:
        self._headers = {}
        self._data = None
        self._name, self._filename = b"", None

    def _header_end(self) -> None:
        self._headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = params.get(b"name", b"")
        filename = params.get(b"filename")
        self._filename = filename.decode("utf-8", "replace") if filename is not None else None
        if self._name == FILE_FIELD:
            if len(self._images) >= self._max_images:
                raise TooManyImages(
                    f"more than {self._max_images} images in one request",
                    max_images_per_request=self._max_images,
                )
            self._data = bytearray()
        else:
            self._other_fields.append(self._name.decode("utf-8", "replace"))
            if len(self._other_fields) > MAX_OTHER_FIELDS:
                raise BadRequest(
                    f"more than {MAX_OTHER_FIELDS} multipart fields besides 'file'",
                    allowed="'file' fields holding images",
                )

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._data is not None:
            self._data += data[start:end]

    def _part_end(self) -> None:
        if self._data is not None:
            self._images.append(EncodedImage(self._data, self._filename))
            self._data = None
