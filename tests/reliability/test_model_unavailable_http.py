"""A model whose session cannot be created: the service stays up, readiness names it."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from benchmarks.harness import ServerProcess
from service.repository import VERSION_FILE, VersionInfo, artifact_info, write_json
from tests.reliability import images

BROKEN = "resnet18-broken"


def broken_copy(source: Path, target: Path) -> None:
    """``source``'s config, with an artifact that is garbage but matches its checksum."""
    (target / "1").mkdir(parents=True)
    config = json.loads((source / "config.json").read_text())
    config["name"] = target.name
    (target / "config.json").write_text(json.dumps(config))
    artifact = target / "1" / "model.onnx"
    artifact.write_bytes(b"this is not an ONNX model\n" * 64)
    info = VersionInfo.model_validate_json((source / "1" / VERSION_FILE).read_text())
    info = info.model_copy(update={"artifacts": {"onnx": artifact_info(artifact)}})
    write_json(target / "1" / VERSION_FILE, info)


def test_model_that_cannot_load_is_reported_unavailable_and_others_serve(
    start_server, model_repository: Path, tmp_path: Path
) -> None:
    repository = tmp_path / "repo"
    repository.mkdir()
    (repository / "resnet18").symlink_to(model_repository / "resnet18")
    broken_copy(model_repository / "resnet18", repository / BROKEN)
    srv: ServerProcess = start_server(repository)

    ready = httpx.get(f"{srv.url}/health/ready", timeout=10)
    assert ready.status_code == 200
    assert ready.json()["unavailable"] == {f"{BROKEN}:1": "failed"}
    models = {m["name"]: m for m in httpx.get(f"{srv.url}/models", timeout=10).json()["models"]}
    assert models[BROKEN]["status"] == "failed" and models[BROKEN]["error"]
    assert models["resnet18"]["status"] == "ready"

    image = [("file", ("a.jpg", images.encode(images.photo_like(), "JPEG")))]
    refused = httpx.post(f"{srv.url}/classify", params={"model": BROKEN}, files=image, timeout=60)
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "model_unavailable"
    assert "Retry-After" in refused.headers
    served = httpx.post(f"{srv.url}/classify", files=image, timeout=60)
    assert served.status_code == 200 and served.json()["model"] == "resnet18"
    assert srv.metric("resnet_serve_model_ready", model=BROKEN) == 0
    assert f"model {BROKEN} v1 failed to load" in srv.logs()
