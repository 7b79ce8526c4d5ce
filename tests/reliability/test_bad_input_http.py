"""Bad input over HTTP: each case gets its documented 4xx JSON error, odd images get 200.

The table below is the source of docs/LIMITS.md ("Limits and errors"); a test checks
that it lists every code.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.harness import ServerProcess
from tests.reliability import images

LIMITS_DOC = Path(__file__).resolve().parents[2] / "docs" / "LIMITS.md"
GOOD = images.encode(images.photo_like(), "JPEG")
GOOD_PNG = images.encode(images.photo_like(), "PNG")


def files(name: str, data: bytes) -> dict[str, Any]:
    return {"files": [("file", (name, data, "application/octet-stream"))]}


def raw(data: bytes, content_type: str = "image/jpeg") -> dict[str, Any]:
    return {"content": data, "headers": {"content-type": content_type}}


#: case -> (request keyword arguments, status, error code)
BAD: dict[str, tuple[dict[str, Any], int, str]] = {
    "empty file": (files("a.jpg", b""), 400, "bad_image"),
    "empty raw body": (raw(b""), 400, "bad_image"),
    "not an image": (files("a.txt", b"hello, world\n" * 20), 415, "unsupported_media_type"),
    "format not allowed (TIFF)": (
        files("a.tif", images.encode(images.photo_like(), "TIFF")),
        415,
        "unsupported_media_type",
    ),
    "truncated JPEG": (files("a.jpg", GOOD[: len(GOOD) // 2]), 400, "bad_image"),
    "truncated PNG": (files("a.png", GOOD_PNG[: len(GOOD_PNG) // 2]), 400, "bad_image"),
    "corrupt PNG chunk": (files("a.png", images.corrupt_idat(GOOD_PNG)), 400, "bad_image"),
    "pixel bomb 8000x8000": (
        files("b.png", images.png_claiming(8000, 8000)),
        413,
        "image_too_large",
    ),
    "pixel bomb 100000x100000": (
        files("b.png", images.png_claiming(100_000, 100_000)),
        413,
        "image_too_large",
    ),
    "body over byte limit (declared)": (raw(b"\0" * (32 * 2**20 + 1)), 413, "payload_too_large"),
    "too many images": (
        {"files": [("file", (f"{i}.jpg", GOOD)) for i in range(65)]},
        413,
        "too_many_images",
    ),
    "malformed multipart": (
        raw(
            b'--xx\r\nContent-Disposition: form-data; name="file"\r\n\r\nab',
            "multipart/form-data; boundary=xx",
        ),
        400,
        "bad_request",
    ),
    "multipart without boundary": (raw(b"abc", "multipart/form-data"), 400, "bad_request"),
    "multipart without a file": (
        {"files": [("other", ("x.jpg", GOOD))], "data": {"note": "hi"}},
        400,
        "bad_request",
    ),
    "wrong content type": (raw(b"{}", "application/json"), 415, "unsupported_media_type"),
    "form-urlencoded": (
        raw(b"file=abc", "application/x-www-form-urlencoded"),
        415,
        "unsupported_media_type",
    ),
    "unknown model": ({**files("a.jpg", GOOD), "params": {"model": "nope"}}, 404, "unknown_model"),
    "path-like model name": (
        {**files("a.jpg", GOOD), "params": {"model": "../../etc/passwd"}},
        404,
        "unknown_model",
    ),
    "unknown version": ({**files("a.jpg", GOOD), "params": {"version": 99}}, 404, "unknown_model"),
    "version not a positive integer": (
        {**files("a.jpg", GOOD), "params": {"version": "x1"}},
        404,
        "unknown_model",
    ),
    "top_k 0": ({**files("a.jpg", GOOD), "params": {"top_k": 0}}, 422, "invalid_parameter"),
    "top_k 101": ({**files("a.jpg", GOOD), "params": {"top_k": 101}}, 422, "invalid_parameter"),
    "top_k not a number": (
        {**files("a.jpg", GOOD), "params": {"top_k": "abc"}},
        422,
        "invalid_parameter",
    ),
    "bad timeout header": (
        {**files("a.jpg", GOOD), "headers": {"X-Request-Timeout-Ms": "soon"}},
        400,
        "bad_request",
    ),
}


def post(url: str, kwargs: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}/classify", timeout=60, **kwargs)


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gets_its_4xx_json_error(server: ServerProcess, case: str) -> None:
    kwargs, status, code = BAD[case]
    response = post(server.url, kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]


@pytest.mark.parametrize("name", list(images.ODD_VALID))
def test_odd_but_valid_image_is_classified(server: ServerProcess, name: str) -> None:
    response = post(server.url, files(name, images.ODD_VALID[name]))
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert result["filename"] == name and len(result["predictions"]) == 5


def test_non_utf8_filename_is_classified(server: ServerProcess) -> None:
    # Raw multipart bytes: the filename is Latin-1 0xFF 0xFE, invalid as UTF-8.
    body = (
        b'--b0\r\nContent-Disposition: form-data; name="file"; filename="\xff\xfe.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + GOOD + b"\r\n--b0--\r\n"
    )
    response = post(server.url, raw(body, "multipart/form-data; boundary=b0"))
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["predictions"]


def test_chunked_body_over_limit_is_refused_while_streaming(server: ServerProcess) -> None:
    """No Content-Length: the server must stop at the limit, not read 256 MiB first."""
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        chunk = b"\0" * 2**20
        for _ in range(256):
            sent += len(chunk)
            yield chunk

    try:
        response = post(server.url, raw(body()))  # type: ignore[arg-type]
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "payload_too_large"
    except httpx.TransportError:
        pass  # the server may close before the client reads the 413; it did stop reading
    assert sent < 128 * 2**20, f"the server read {sent} bytes of a 256 MiB body"
    assert httpx.get(f"{server.url}/health/live", timeout=5).status_code == 200


def test_bad_input_does_not_disturb_concurrent_good_requests(server: ServerProcess) -> None:
    alone = post(server.url, files("good.jpg", GOOD)).json()["results"][0]["predictions"]

    def good(_: int) -> list[dict[str, Any]]:
        response = post(server.url, files("good.jpg", GOOD))
        assert response.status_code == 200, response.text
        return response.json()["results"][0]["predictions"]

    def bad(case: str) -> int:
        return post(server.url, BAD[case][0]).status_code

    with ThreadPoolExecutor(8) as pool:
        goods = [pool.submit(good, i) for i in range(16)]
        bads = [pool.submit(bad, case) for case in BAD for _ in range(1)]
        answers = [g.result(timeout=120) for g in goods]
        statuses = [b.result(timeout=120) for b in bads]
    assert statuses == [BAD[case][1] for case in BAD]
    for predictions in answers:
        assert [p["index"] for p in predictions] == [p["index"] for p in alone]
        for got, want in zip(predictions, alone, strict=True):
            assert got["score"] == pytest.approx(want["score"], abs=1e-5)


def test_limits_doc_lists_every_case_and_code() -> None:
    text = LIMITS_DOC.read_text(encoding="utf-8")
    for case, (_, status, code) in BAD.items():
        assert case in text, f"docs/LIMITS.md lacks the case {case!r}"
        assert f"{status} `{code}`" in text, f"docs/LIMITS.md lacks {status} `{code}`"
    for name in images.ODD_VALID:
        assert name in text, f"docs/LIMITS.md lacks the odd-but-valid image {name!r}"
