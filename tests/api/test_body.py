"""The HTTP read stage (service/api/body.py) through the app, over the fake engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes import GRAY, build_app, run, running


def multipart(body: bytes) -> dict[str, object]:
    return {"content": body, "headers": {"content-type": "multipart/form-data; boundary=xx"}}


PART = b'--xx\r\nContent-Disposition: form-data; name="file"; filename="g.png"\r\n\r\n'


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (PART + GRAY + b"\r\n--xx--\r\n", 200, None),
        (PART + GRAY + b"\r\n--xx\r\n" + PART[6:] + GRAY + b"\r\n--xx--\r\n", 200, None),
        (b"--xx\r\nBad Header Line\r\n\r\nab", 400, "bad_request"),
        (b"garbage before any boundary", 400, "bad_request"),
        (b"--xx\r\n" + b"H: v\r\n" * 20 + b"\r\nab\r\n--xx--\r\n", 400, "bad_request"),
        (PART + GRAY[:10], 400, "bad_request"),  # never closed: no complete file part
        (b"--xx--\r\n", 400, "bad_request"),
    ],
    ids=["one", "two", "bad-header", "no-boundary", "many-headers", "unclosed", "empty"],
)
def test_multipart_bodies_are_parsed_in_memory_or_refused_with_400(
    tmp_path: Path, body: bytes, status: int, code: str | None
) -> None:
    app, _ = build_app(tmp_path)

    async def scenario() -> None:
        async with running(app) as client:
            response = await client.post("/classify", **multipart(body))  # type: ignore[arg-type]
            assert response.status_code == status, response.text
            if code is not None:
                assert response.json()["error"]["code"] == code
            else:
                assert len(response.json()["results"]) == body.count(b'name="file"')
            pipeline = app.state.pipeline
            assert pipeline.body_budget.used == 0  # given back on every path

    run(scenario)


def test_more_files_than_allowed_is_413_while_parsing(tmp_path: Path) -> None:
    app, _ = build_app(tmp_path, max_images_per_request=2)
    body = b"".join(PART + GRAY + b"\r\n" for _ in range(3)) + b"--xx--\r\n"

    async def scenario() -> None:
        async with running(app) as client:
            response = await client.post("/classify", **multipart(body))  # type: ignore[arg-type]
            assert response.status_code == 413
            assert response.json()["error"]["code"] == "too_many_images"

    run(scenario)


def test_chunked_body_is_charged_as_it_streams_and_refused_when_the_budget_is_full(
    tmp_path: Path,
) -> None:
    app, _ = build_app(
        tmp_path, max_body_bytes=4096, max_body_bytes_in_flight=4096, grpc_max_message_bytes=4096
    )

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(8):
            yield b"\0" * 1000

    async def scenario() -> None:
        async with running(app) as client:
            app.state.pipeline.body_budget.try_take(3500)  # others hold most of it
            response = await client.post(
                "/classify", content=chunks(), headers={"content-type": "image/png"}
            )
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1"
            app.state.pipeline.body_budget.give(3500)
            assert app.state.pipeline.body_budget.used == 0

    run(scenario)
