"""API key, CORS, no user-supplied paths, and logs that never hold image bytes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from benchmarks.harness import ServerProcess
from tests.fakes import GRAY, build_app, running
from tests.reliability import images

KEY = "k3y-for-tests"
MARKER = b"IMAGE-BYTES-MARKER-7f3a9c"


def marked_png() -> bytes:
    """A valid PNG that carries MARKER in a text chunk (so inside the image bytes)."""
    data = images.encode(images.photo_like(), "PNG")
    end = data.rfind(b"IEND") - 4
    return data[:end] + images.png_chunk(b"tEXt", b"Comment\0" + MARKER) + data[end:]


def test_api_key_guards_classify_and_models_only(start_server, model_repository: Path) -> None:
    srv: ServerProcess = start_server(model_repository, api_key=KEY, log_level="debug")
    image = [("file", ("a.png", marked_png()))]
    for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}):
        response = httpx.post(f"{srv.url}/classify", files=image, headers=headers, timeout=60)
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "unauthorized"
        assert httpx.get(f"{srv.url}/models", headers=headers, timeout=10).status_code == 401
    good = {"X-API-Key": KEY}
    assert (
        httpx.post(f"{srv.url}/classify", files=image, headers=good, timeout=60).status_code == 200
    )
    assert httpx.get(f"{srv.url}/models", headers=good, timeout=10).status_code == 200
    for path in ("/health/live", "/health/ready", "/metrics"):
        assert httpx.get(f"{srv.url}{path}", timeout=10).status_code == 200, path

    # Request logs (access log on at debug) and error bodies never carry image bytes.
    not_image = MARKER * 10
    bad = httpx.post(
        f"{srv.url}/classify", files=[("file", ("x", not_image))], headers=good, timeout=60
    )
    truncated = marked_png()[:-40]
    cut = httpx.post(
        f"{srv.url}/classify", files=[("file", ("y.png", truncated))], headers=good, timeout=60
    )
    assert bad.status_code == 415 and cut.status_code == 400
    assert MARKER.decode() not in bad.text + cut.text
    srv.stop()  # flushes everything the server logged
    logs = srv.log_path.read_text(errors="replace")
    assert "POST /classify" in logs  # the access log was on
    assert MARKER.decode() not in logs


def test_api_key_is_off_by_default(server: ServerProcess) -> None:
    image = [("file", ("a.png", images.encode(images.photo_like(), "PNG")))]
    assert httpx.post(f"{server.url}/classify", files=image, timeout=60).status_code == 200
    assert httpx.get(f"{server.url}/models", timeout=10).status_code == 200


def test_cors_is_off_by_default(server: ServerProcess) -> None:
    origin = {"Origin": "https://evil.example"}
    response = httpx.get(f"{server.url}/models", headers=origin, timeout=10)
    assert "access-control-allow-origin" not in response.headers
    preflight = httpx.options(
        f"{server.url}/classify",
        headers={**origin, "Access-Control-Request-Method": "POST"},
        timeout=10,
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_allows_only_configured_origins(tmp_path: Path) -> None:
    app, _ = build_app(tmp_path, cors_origins="https://app.example")

    async def scenario() -> None:
        async with running(app) as client:
            allowed = await client.get("/models", headers={"Origin": "https://app.example"})
            assert allowed.headers["access-control-allow-origin"] == "https://app.example"
            other = await client.get("/models", headers={"Origin": "https://evil.example"})
            assert "access-control-allow-origin" not in other.headers
            posted = await client.post(
                "/classify",
                files=[("file", ("g.png", GRAY))],
                headers={"Origin": "https://app.example"},
            )
            assert posted.status_code == 200

    asyncio.run(scenario())


def test_no_endpoint_takes_a_path(server: ServerProcess) -> None:
    """Only these query parameters exist; a model name is a lookup key, never a path."""
    schema = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    parameters = {
        p["name"]
        for operations in schema["paths"].values()
        for operation in operations.values()
        for p in operation.get("parameters", [])
    }
    allowed = {"top_k", "model", "version", "x-api-key", "X-API-Key", "X-Request-Timeout-Ms"}
    assert parameters <= allowed, parameters
    image = images.encode(images.photo_like(), "JPEG")
    response = httpx.post(
        f"{server.url}/classify",
        files=[("file", ("../../../../tmp/written-by-upload", image))],
        timeout=60,
    )
    assert response.status_code == 200
    assert not Path("/tmp/written-by-upload").exists()
    for name in ("/etc/passwd", "..", "resnet18/../resnet18", "%2e%2e"):
        refused = httpx.post(
            f"{server.url}/classify",
            params={"model": name},
            files=[("file", ("a", image))],
            timeout=60,
        )
        assert refused.status_code in (404, 422), (name, refused.text)
