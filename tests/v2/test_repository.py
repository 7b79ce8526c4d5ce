"""The V2 repository extension driven by Triton's own clients against the real server.

``tritonclient``'s ``load_model``, ``unload_model`` and ``get_model_repository_index``
(HTTP and gRPC) in explicit mode, behind the admin key (never the inference key); poll
mode picking up a new version folder; a version whose recorded answers do not hold
refused by the gate, named in the index, while what served keeps serving.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.v2.conftest import API_KEY, V2Server, start_v2

MODEL = "resnet20"
ADMIN_KEY = "admin-secret"


# A fresh dict per call: tritonclient.http adds its own headers to the one it gets.
def admin() -> dict[str, str]:
    return {"x-admin-key": ADMIN_KEY}


def inference() -> dict[str, str]:
    return {"x-api-key": API_KEY}


def copy_repository(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def add_version(repository: Path, number: int, *, tamper: bool = False) -> None:
    """Version ``number`` as a copy of version 1, staged then renamed into place (as an
    export leaves it); ``tamper`` edits its recorded golden logits."""
    folder = repository / MODEL
    staging = folder / f".staging-{number}"
    shutil.copytree(folder / "1", staging)
    info = json.loads((staging / "version.json").read_text())
    info["version"] = number
    if tamper:
        logits = info["golden"]["logits"]["onnx"]
        logits[0] = [v + 5.0 for v in logits[0]]  # the answers it must give, edited
    (staging / "version.json").write_text(json.dumps(info))
    staging.rename(folder / str(number))


def wait_for(condition: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


def states(client: httpclient.InferenceServerClient) -> dict[tuple[str, str], str]:
    index = client.get_model_repository_index(headers=inference())
    return {(m["name"], m["version"]): m["state"] for m in index}


def infer_version(client: httpclient.InferenceServerClient) -> str:
    tensor = httpclient.InferInput("input", [1, 3, 32, 32], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 3, 32, 32), np.float32))
    result = client.infer(MODEL, [tensor], headers=inference())
    return str(result.get_response()["model_version"])


@pytest.fixture(scope="module")
def explicit(
    cifar_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[V2Server]:
    folder = tmp_path_factory.mktemp("explicit")
    repository = copy_repository(cifar_repository, folder / "models")
    server = start_v2(
        repository,
        folder / "server.log",
        api_key=API_KEY,
        model_control_mode="explicit",
        admin_api_key=ADMIN_KEY,
    )
    server.repository = repository  # type: ignore[attr-defined]
    yield server
    server.process.stop()


def test_load_unload_and_index_over_both_clients(explicit: V2Server) -> None:
    http = httpclient.InferenceServerClient(explicit.rest)
    grpc = grpcclient.InferenceServerClient(explicit.grpc)
    assert states(http)[(MODEL, "1")] == "READY"
    assert grpc.get_model_repository_index(headers=inference()).models[0].state == "READY"

    http.unload_model(MODEL, headers=admin())
    wait_for(lambda: not http.is_model_ready(MODEL))
    assert states(http)[(MODEL, "1")] == "UNAVAILABLE"
    assert not grpc.is_model_ready(MODEL)

    grpc.load_model(MODEL, headers=admin())
    assert http.is_model_ready(MODEL) and grpc.is_model_ready(MODEL)
    assert infer_version(http) == "1"

    http.unload_model(MODEL, headers=admin())
    http.load_model(MODEL, headers=admin())
    assert infer_version(http) == "1"


@pytest.mark.parametrize("headers", [{}, {"x-api-key": API_KEY}, {"x-admin-key": "wrong"}])
def test_the_repository_api_needs_the_admin_key_not_the_inference_key(
    explicit: V2Server, headers: dict[str, str]
) -> None:
    http = httpclient.InferenceServerClient(explicit.rest)
    grpc = grpcclient.InferenceServerClient(explicit.grpc)
    with pytest.raises(InferenceServerException) as rest:
        http.unload_model(MODEL, headers=dict(headers))  # (the client adds to the dict)
    assert rest.value.status() == "401"
    with pytest.raises(InferenceServerException) as over_grpc:
        grpc.unload_model(MODEL, headers=dict(headers))
    assert over_grpc.value.status() == "StatusCode.UNAUTHENTICATED"
    assert http.is_model_ready(MODEL)


def test_a_load_from_a_sent_config_is_refused(explicit: V2Server) -> None:
    http = httpclient.InferenceServerClient(explicit.rest)
    with pytest.raises(InferenceServerException) as refused:
        http.load_model(MODEL, headers=admin(), config=json.dumps({"max_batch_size": 4}))
    assert refused.value.status() == "400" and "repository only" in str(refused.value.message())


def test_a_new_version_is_swapped_in_and_a_tampered_one_refused(
    explicit: V2Server,
) -> None:
    http = httpclient.InferenceServerClient(explicit.rest)
    repository: Path = explicit.repository  # type: ignore[attr-defined]
    add_version(repository, 2)
    http.load_model(MODEL, headers=admin())
    assert infer_version(http) == "2"
    add_version(repository, 3, tamper=True)
    with pytest.raises(InferenceServerException) as refused:
        http.load_model(MODEL, headers=admin())
    assert refused.value.status() == "400"
    index = {
        (m["name"], m["version"]): m for m in http.get_model_repository_index(headers=inference())
    }
    assert index[(MODEL, "3")]["state"] == "UNAVAILABLE"
    assert "golden" in index[(MODEL, "3")]["reason"] or "gate" in index[(MODEL, "3")]["reason"]
    assert infer_version(http) == "2"  # what served keeps serving


def test_poll_mode_picks_up_a_new_version(cifar_repository: Path, tmp_path: Path) -> None:
    repository = copy_repository(cifar_repository, tmp_path / "models")
    server = start_v2(
        repository,
        tmp_path / "server.log",
        api_key=API_KEY,
        model_control_mode="poll",
        admin_api_key=ADMIN_KEY,
        repository_poll_secs=0.5,
    )
    try:
        http = httpclient.InferenceServerClient(server.rest)
        assert infer_version(http) == "1"
        add_version(repository, 2)
        wait_for(lambda: states(http).get((MODEL, "2")) == "READY")
        wait_for(lambda: infer_version(http) == "2")
    finally:
        server.process.stop()
