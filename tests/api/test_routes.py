"""POST /classify against the real server over HTTP, with real photos."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from benchmarks.harness import ServerProcess
from service.preprocess import Limits, Preprocessor
from service.repository import scan_repository
from tests.conftest import PHOTOS


def post_files(url: str, files: list[tuple[str, bytes]], **params: object) -> httpx.Response:
    return httpx.post(
        f"{url}/classify",
        files=[("file", (name, data)) for name, data in files],
        params=params,
        timeout=60,
    )


def photo(photos_dir: Path, name: str) -> tuple[str, bytes]:
    return name, (photos_dir / name).read_bytes()


def test_single_image_gets_top_k_with_model_and_weights(
    server: ServerProcess, photos_dir: Path
) -> None:
    response = post_files(server.url, [photo(photos_dir, "chelsea.png")], top_k=3)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "resnet18" and body["version"] == 1
    assert body["weights"] == "random (untrained)"
    assert body["engine"] == "onnxruntime" and body["provider"] == "CPUExecutionProvider"
    (result,) = body["results"]
    assert result["filename"] == "chelsea.png"
    scores = [p["score"] for p in result["predictions"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert all(0 < s < 1 for s in scores)
    assert set(body["timings"]) >= {"decode_ms", "queue_ms", "inference_ms", "total_ms"}


def test_multi_image_request_answers_in_order(server: ServerProcess, photos_dir: Path) -> None:
    names = ["rocket.jpg", "chelsea.png", "edge_rocket_cmyk.jpg"]
    together = post_files(server.url, [photo(photos_dir, n) for n in names]).json()
    assert [r["filename"] for r in together["results"]] == names
    for name, result in zip(names, together["results"], strict=True):
        alone = post_files(server.url, [photo(photos_dir, name)]).json()["results"][0]
        assert alone["predictions"][0]["index"] == result["predictions"][0]["index"]
        assert alone["predictions"][0]["score"] == pytest.approx(
            result["predictions"][0]["score"], abs=1e-5
        )


def test_raw_image_body_is_accepted(server: ServerProcess, photos_dir: Path) -> None:
    data = (photos_dir / "rocket.jpg").read_bytes()
    response = httpx.post(
        f"{server.url}/classify", content=data, headers={"content-type": "image/jpeg"}, timeout=60
    )
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["filename"] is None


def test_concurrent_requests_are_batched_and_answered_like_alone(
    start_server, model_repository: Path, photos_dir: Path
) -> None:
    # A small queue delay lets the batcher top up while other requests are decoding.
    srv: ServerProcess = start_server(model_repository, max_queue_delay_ms=20)
    alone = {
        name: post_files(srv.url, [photo(photos_dir, name)], top_k=1).json()["results"][0]
        for name in PHOTOS
    }
    jobs = [PHOTOS[i % len(PHOTOS)] for i in range(48)]
    with ThreadPoolExecutor(16) as pool:
        responses = list(
            pool.map(lambda n: post_files(srv.url, [photo(photos_dir, n)], top_k=1), jobs)
        )
    for name, response in zip(jobs, responses, strict=True):
        assert response.status_code == 200, response.text
        got = response.json()["results"][0]["predictions"][0]
        want = alone[name]["predictions"][0]
        assert got["index"] == want["index"]
        assert got["score"] == pytest.approx(want["score"], abs=1e-5)
    batches = srv.metric("resnet_serve_batch_size_count", model="resnet18")
    images = srv.metric("resnet_serve_batch_size_sum", model="resnet18")
    assert images == len(PHOTOS) + len(jobs)
    assert batches < images, "no batch of more than one image formed under concurrency"


def test_http_predictions_equal_the_onnx_model_run_directly(
    server: ServerProcess, model_repository: Path, photos_dir: Path
) -> None:
    import onnxruntime as ort

    (entry,) = scan_repository(model_repository)
    version = entry.default_version
    session = ort.InferenceSession(
        str(version.artifact_path("onnx")), providers=["CPUExecutionProvider"]
    )
    pre = Preprocessor(entry.config.preprocessing, Limits(max_pixels=40_000_000))
    for name in ("chelsea.png", "rocket.jpg", "edge_coffee_rgba.png"):
        data = (photos_dir / name).read_bytes()
        (logits,) = session.run(None, {session.get_inputs()[0].name: pre(data)[None]})
        probs = np.exp(logits[0] - logits[0].max())
        probs /= probs.sum()
        expected = np.argsort(-probs, kind="stable")[:5]
        got = post_files(server.url, [(name, data)]).json()["results"][0]["predictions"]
        assert [p["index"] for p in got] == expected.tolist()
        np.testing.assert_allclose([p["score"] for p in got], probs[expected], atol=1e-6)


def test_request_shows_up_in_metrics(server: ServerProcess, photos_dir: Path) -> None:
    before = server.metric("resnet_serve_requests_total", model="resnet18", code="200")
    images_before = server.metric("resnet_serve_images_total", model="resnet18")
    post_files(server.url, [photo(photos_dir, "coffee.png"), photo(photos_dir, "camera.png")])
    assert server.metric("resnet_serve_requests_total", model="resnet18", code="200") == before + 1
    assert server.metric("resnet_serve_images_total", model="resnet18") == images_before + 2
    text = httpx.get(f"{server.url}/metrics").text
    for name in (
        "resnet_serve_request_duration_seconds_bucket",
        "resnet_serve_queue_wait_seconds_bucket",
        "resnet_serve_inference_duration_seconds_bucket",
        "resnet_serve_batch_size_bucket",
        "resnet_serve_queue_depth",
        "resnet_serve_in_flight_requests",
        "resnet_serve_preprocess_duration_seconds_bucket",
    ):
        assert name in text, name
    assert 'weights="random (untrained)"' in text and "resnet_serve_model_info{" in text


def test_full_queue_answers_503_with_retry_after(
    start_server, model_repository: Path, photos_dir: Path
) -> None:
    srv: ServerProcess = start_server(
        model_repository, max_queue_size=2, max_batch_size=1, max_images_per_request=2
    )
    files = [photo(photos_dir, "astronaut.png")] * 2
    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda _: post_files(srv.url, files), range(24)))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503}, codes
    assert 503 in codes and 200 in codes, codes
    refused = next(r for r in responses if r.status_code == 503)
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "overloaded"


def test_ready_only_after_warmup(start_server, model_repository: Path) -> None:
    # Warming up every batch size up to 256 takes a while: long enough to see "not ready".
    srv: ServerProcess = start_server(model_repository, wait=False, max_batch_size=256)
    srv.wait_live()
    early = httpx.get(f"{srv.url}/health/ready")
    assert early.status_code == 503 and early.json()["status"] == "not ready"
    assert httpx.get(f"{srv.url}/health/live").status_code == 200
    srv.wait_ready(timeout_s=120)
    ready = httpx.get(f"{srv.url}/health/ready").json()
    assert ready == {
        "status": "ready",
        "default_model": "resnet18",
        "models": {"resnet18:1": "ready"},
        "unavailable": {},
        "failed": {},
    }


def test_models_lists_weights_origin_and_engine(server: ServerProcess) -> None:
    body = httpx.get(f"{server.url}/models").json()
    assert body["default_model"] == "resnet18"
    (model,) = body["models"]
    assert model["weights"] == "random (untrained)"
    assert model["engine"] == "onnxruntime" and model["status"] == "ready"
    assert model["input_size"] == [3, 224, 224] and model["num_classes"] == 1000
