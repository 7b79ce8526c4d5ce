"""The ``/classify`` door's parse: a body into encoded images, as it streams.

Multipart bodies are parsed chunk by chunk (python-multipart's streaming parser, work
bounded by each chunk), straight into one buffer per image: nothing is spooled to disk
(a spool directory is a disk budget nobody set) and the body is never held twice, so
what the parse builds is the body bytes the pipeline already charged (``cost_bytes``
is 0). A raw image body is kept as it arrives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from service.errors import BadImage, BadRequest, TooManyImages, UnsupportedMediaType
from service.pipeline import EncodedImage, Inputs, Parsed

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

RAW_IMAGE_TYPES = ("image/", "application/octet-stream")
#: The multipart field that carries images (repeat it for several).
FILE_FIELD = b"file"
#: Other multipart fields are tolerated (and ignored) up to this many.
MAX_OTHER_FIELDS = 16
#: Bytes of one multipart part header (name and value) we keep.
MAX_PART_HEADER_BYTES = 8 * 1024

Names = list[str | None]


def image_parser(content_type: str | None, max_images: int) -> RawImage | MultipartImages:
    """The parser for this content type; anything else is 415 naming what is accepted."""
    kind_bytes, params = parse_options_header(content_type or "")
    kind = kind_bytes.decode("latin-1").lower()
    if kind == "multipart/form-data":
        boundary = params.get(b"boundary")
        if not boundary:
            raise BadRequest("multipart/form-data body without a boundary parameter")
        return MultipartImages(boundary, max_images)
    if kind.startswith(RAW_IMAGE_TYPES):
        return RawImage()
    raise UnsupportedMediaType(
        f"content type {kind[:64] or '(none)'!r} is not accepted",
        allowed="multipart/form-data with 'file' fields, or a raw body with an image/* "
        "or application/octet-stream content type",
    )


class RawImage:
    """A raw image body: one image, the body itself."""

    heavy = False

    def __init__(self) -> None:
        self._body = bytearray()

    def feed(self, chunk: bytes) -> None:
        self._body += chunk

    def cost_bytes(self) -> int:
        return 0

    def finish(self) -> Parsed[Names]:
        if not self._body:
            raise BadImage("empty request body: send the image bytes", allowed="one image")
        return Parsed(Inputs(images=[EncodedImage(self._body)]), [None])


class MultipartImages:
    """Collects multipart parts as they stream: ``file`` parts into buffers, others counted."""

    heavy = False

    def __init__(self, boundary: bytes, max_images: int) -> None:
        self._max_images = max_images
        self._images: list[EncodedImage] = []
        self._other_fields: list[str] = []
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._data: bytearray | None = None
        self._filename: str | None = None
        self._parser = MultipartParser(boundary, cast("MultipartCallbacks", self._callbacks()))

    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise _malformed(exc) from None

    def cost_bytes(self) -> int:
        return 0

    def finish(self) -> Parsed[Names]:
        try:
            self._parser.finalize()
        except MultipartParseError as exc:
            raise _malformed(exc) from None
        if not self._images:
            sent = sorted(set(self._other_fields))
            raise BadRequest(
                "multipart body has no file in a field named 'file'"
                + (f" (fields sent: {sent})" if sent else ""),
                allowed="one or more 'file' fields holding images",
            )
        return Parsed(Inputs(images=self._images), [image.name for image in self._images])

    def _callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._header_bytes(self._header_field, d[s:e]),
            "on_header_value": lambda d, s, e: self._header_bytes(self._header_value, d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _header_bytes(self, into: bytearray, data: bytes) -> None:
        into.extend(data)
        if len(into) > MAX_PART_HEADER_BYTES:
            raise BadRequest(
                f"a multipart part header passed {MAX_PART_HEADER_BYTES} bytes",
                allowed="short Content-Disposition and Content-Type part headers",
            )

    def _part_begin(self) -> None:
        self._headers = {}
        self._data = None
        self._filename = None

    def _header_end(self) -> None:
        if len(self._headers) >= MAX_OTHER_FIELDS:
            raise BadRequest(f"a multipart part has more than {MAX_OTHER_FIELDS} headers")
        self._headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"")
        filename = params.get(b"filename")
        self._filename = filename.decode("utf-8", "replace")[:256] if filename is not None else None
        if name == FILE_FIELD:
            if len(self._images) >= self._max_images:
                raise TooManyImages(
                    f"more than {self._max_images} images in one request",
                    max_images_per_request=self._max_images,
                )
            self._data = bytearray()
            return
        self._other_fields.append(name.decode("utf-8", "replace")[:64])
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


def _malformed(exc: MultipartParseError) -> BadRequest:
    return BadRequest(
        f"malformed multipart body: {str(exc)[:200]}",
        allowed="multipart/form-data with 'file' fields holding images",
    )
