"""The kserve SDK's own REST and gRPC clients against the real server.

The SDK does not install beside the project (it pins psutil 5, the load tests use 7),
so it runs from its own environment: set ``RESNET_SERVE_KSERVE_PYTHON`` to a Python with
``kserve`` installed (``python -m venv /tmp/kserve-venv && /tmp/kserve-venv/bin/pip
install kserve``). Without it the test is skipped with that reason.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.v2.conftest import V2Server

PROBE = Path(__file__).with_name("kserve_probe.py")


def test_kserve_sdk_rest_and_grpc_clients_get_our_answers(
    v2_server: V2Server, cifar_sample_dir: Path
) -> None:
    python = os.environ.get("RESNET_SERVE_KSERVE_PYTHON")
    if not python:
        pytest.skip("RESNET_SERVE_KSERVE_PYTHON is not set (a Python with the kserve SDK)")
    image = cifar_sample_dir / "cat" / "0000.jpg"
    done = subprocess.run(
        [python, str(PROBE), v2_server.process.url, v2_server.grpc, "resnet20", str(image)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["rest_live"] and answer["rest_ready"] and answer["rest_model_ready"]
    assert answer["grpc_ready"]
    tensor = grpcclient.InferInput("image", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[image.read_bytes()]], dtype=object))
    expected = grpcclient.InferenceServerClient(v2_server.grpc).infer("resnet20", [tensor])
    for door in ("rest", "grpc"):
        for name in ("logits", "probabilities"):
            np.testing.assert_allclose(
                answer[door][name], expected.as_numpy(name), rtol=0, atol=1e-6, err_msg=door
            )
