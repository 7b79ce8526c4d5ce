"""Schemathesis against the service's own OpenAPI schema: no input may produce a 5xx.

Positive and negative cases for every operation, each a Hypothesis run bounded by
``RESNET_SERVE_SCHEMA_EXAMPLES`` (default 50 per operation and mode); the longer run is
documented in README.md (Limits and errors). (Schemathesis' own pytest plugin does not work with
pytest 9, so the strategies are driven with ``@given`` directly.)
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from benchmarks.harness import ServerProcess

EXAMPLES = int(os.environ.get("RESNET_SERVE_SCHEMA_EXAMPLES", "50"))


def check_operation(operation: schemathesis.APIOperation, mode: GenerationMode, url: str) -> int:
    calls = 0

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def call(case: schemathesis.Case) -> None:
        nonlocal calls
        response = case.call(base_url=url, timeout=30)
        calls += 1
        # A request that set its own deadline of microseconds gets its 504 (the deadline
        # passed): the client's choice, not a server fault.
        own_deadline = response.status_code == 504 and "X-Request-Timeout-Ms" in (
            case.headers or {}
        )
        assert response.status_code < 500 or own_deadline, (
            case.as_curl_command(),
            response.text[:300],
        )
        if response.status_code >= 400 and operation.path != "/metrics":
            assert "error" in response.json(), response.text[:300]

    try:
        call()
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            raise  # an operation without parameters has no negative cases, only these
    return calls


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_input_from_the_schema_causes_a_server_error(
    server: ServerProcess, mode: GenerationMode
) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    paths = {op.path for op in operations}
    assert {"/classify", "/models", "/health/live", "/health/ready"} <= paths
    calls = {op.label: check_operation(op, mode, server.url) for op in operations}
    assert calls["POST /classify"] >= EXAMPLES // 2, calls
    if mode is GenerationMode.POSITIVE:
        assert all(count > 0 for count in calls.values()), calls
    assert server.process.poll() is None, "the server died"
