"""The API key check (service/security.py), shared by the HTTP and gRPC doors."""

from __future__ import annotations

import pytest

from service.errors import Unauthorized
from service.security import check_api_key


def test_no_key_configured_lets_everything_through() -> None:
    check_api_key(None, None)
    check_api_key(None, "anything")


def test_the_right_key_passes_as_text_or_bytes() -> None:
    check_api_key("s3cret", "s3cret")
    check_api_key("s3cret", b"s3cret")
    check_api_key("clé", "clé".encode().decode("latin-1"))  # UTF-8 bytes read as latin-1


@pytest.mark.parametrize("presented", [None, "", "wrong", "s3cre", "\xff\xfe", b"\xff", "é" * 9])
def test_missing_wrong_or_non_ascii_keys_are_401(presented: str | bytes | None) -> None:
    with pytest.raises(Unauthorized) as info:
        check_api_key("s3cret", presented)
    assert info.value.status == 401
