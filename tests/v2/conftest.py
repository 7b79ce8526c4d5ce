"""Real servers with the V2 gRPC door on a free port, and the CIFAR sample."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from benchmarks.harness import ServerProcess

API_KEY = "v2-secret"


@dataclass
class V2Server:
    """A running server and its two V2 addresses (REST shares the HTTP port)."""

    process: ServerProcess
    grpc_port: int

    @property
    def rest(self) -> str:
        return f"127.0.0.1:{self.process.port}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


def start_v2(repository: Path, log: Path, **settings: Any) -> V2Server:
    process = ServerProcess(repository, log, **settings)  # on a free gRPC port
    try:
        process.wait_ready()
    except BaseException:
        process.stop()
        raise
    return V2Server(process, process.grpc_port)


@pytest.fixture(scope="module")
def v2_server(
    cifar_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[V2Server]:
    """ResNet-20 (pretrained CIFAR-10), default limits. A batch waits up to 50 ms for
    images still being read or decoded, so a burst from several doors shares batches."""
    server = start_v2(
        cifar_repository, tmp_path_factory.mktemp("v2") / "server.log", max_queue_delay_ms=50
    )
    yield server
    server.process.stop()


@pytest.fixture(scope="module")
def strict_server(
    cifar_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[V2Server]:
    """An API key, a small body limit (a CIFAR JPEG fits, an FP32 tensor does not) and a
    queue of one image, so one stalled upload fills it: every refusal can be provoked
    without racing anything."""
    server = start_v2(
        cifar_repository,
        tmp_path_factory.mktemp("v2-strict") / "server.log",
        api_key=API_KEY,
        max_body_bytes=8192,
        grpc_max_message_bytes=8192,
        max_queue_size=1,
        max_images_per_request=1,
    )
    yield server
    server.process.stop()


@pytest.fixture(scope="session")
def cifar_sample(cifar_sample_dir: Path) -> list[tuple[str, bytes, int]]:
    """(relative path, JPEG bytes, label index) of every sample image, in labels.csv order."""
    with (cifar_sample_dir / "labels.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [
        (row["path"], (cifar_sample_dir / row["path"]).read_bytes(), int(row["label_index"]))
        for row in rows
    ]
