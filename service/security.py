"""The API key check, shared by every front door (HTTP header, gRPC metadata)."""

from __future__ import annotations

import hmac

from service.errors import Unauthorized


def check_api_key(expected: str | None, presented: str | bytes | None) -> None:
    """Raise :class:`Unauthorized` unless ``presented`` equals ``expected``.

    Compared as bytes in constant time: ``hmac.compare_digest`` raises on a non-ASCII
    ``str``, which turned a client's ``X-API-Key: \\xff`` into a 500 with a traceback.
    HTTP header values arrive as latin-1 text, gRPC metadata as text or bytes; both
    are encoded the way they arrived on the wire.
    """
    if expected is None:
        return
    if presented is None:
        raise Unauthorized("missing API key: send it in the X-API-Key header")
    given = presented if isinstance(presented, bytes) else presented.encode("latin-1", "replace")
    if not hmac.compare_digest(given, expected.encode("utf-8")):
        raise Unauthorized("wrong API key in the X-API-Key header")
