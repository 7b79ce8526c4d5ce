"""The one table: every typed error has a gRPC code, and REST bodies are the protocol's."""

from __future__ import annotations

import json

import grpc
import pytest

import service.errors as errors
from service.v2.errors import GRPC_CODES, grpc_code, rest_error


def every_error() -> list[type[errors.ServiceError]]:
    found, queue = [], [errors.ServiceError]
    while queue:
        cls = queue.pop()
        found.append(cls)
        queue.extend(cls.__subclasses__())
    return found


@pytest.mark.parametrize("cls", every_error(), ids=lambda c: c.__name__)
def test_every_typed_error_has_a_grpc_code(cls: type[errors.ServiceError]) -> None:
    assert cls.status in GRPC_CODES


def test_full_queue_is_unavailable_with_retry_after_and_the_message() -> None:
    exc = errors.Overloaded("the queue is full")
    assert grpc_code(exc) == grpc.StatusCode.UNAVAILABLE
    response = rest_error(exc)
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert json.loads(response.body) == {"error": "the queue is full"}


def test_internal_errors_hide_their_message() -> None:
    response = rest_error(RuntimeError("secret path /etc/x"))
    assert response.status_code == 500
    assert "secret" not in response.body.decode()
    assert grpc_code(RuntimeError()) == grpc.StatusCode.INTERNAL
