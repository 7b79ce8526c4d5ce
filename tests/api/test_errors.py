"""The one mapping from typed errors to HTTP (service/api/errors.py)."""

from __future__ import annotations

import json

import pytest

from service import errors
from service.api.errors import error_response, service_error_response


def body(response: object) -> dict[str, object]:
    return json.loads(response.body)  # type: ignore[attr-defined,no-any-return]


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.BadImage("broken"), 400),
        (errors.Unauthorized("no key"), 401),
        (errors.UnknownModel("nope"), 404),
        (errors.RequestTimeout("slow"), 408),
        (errors.TooManyImages("many"), 413),
        (errors.UnsupportedMediaType("tiff"), 415),
        (errors.ClientGone("gone"), 499),
        (errors.Overloaded("full"), 503),
        (errors.ModelUnavailable("loading"), 503),
        (errors.DeadlineExceeded("late"), 504),
    ],
)
def test_each_error_keeps_its_status_code_and_message(
    error: errors.ServiceError, status: int
) -> None:
    response = service_error_response(error)
    assert response.status_code == status
    assert body(response) == {"error": {"code": error.code, "message": error.message}}


def test_retry_after_comes_from_the_error_itself() -> None:
    assert service_error_response(errors.Overloaded("full")).headers["Retry-After"] == "1"
    assert service_error_response(errors.ModelUnavailable("x")).headers["Retry-After"] == "5"
    assert "Retry-After" not in service_error_response(errors.BadImage("x")).headers


def test_details_are_shown_but_cannot_replace_code_or_message() -> None:
    error = errors.BadImage("broken", image_index=2, code="sneaky", message="sneaky")
    assert body(service_error_response(error)) == {
        "error": {"code": "bad_image", "message": "broken", "image_index": 2}
    }


def test_internal_errors_hide_their_message() -> None:
    error = errors.ServiceError("secret path /srv/x failed")
    response = service_error_response(error)
    assert response.status_code == 500
    assert "secret" not in response.body.decode()


def test_error_response_takes_status_code_message_positionally() -> None:
    response = error_response(409, "conflict", "busy", None, status="failed")
    assert body(response) == {"error": {"code": "conflict", "message": "busy", "status": "failed"}}
