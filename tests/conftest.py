"""Shared fixtures: the data in ../shared, exported models, and running servers.

Data in ``../shared`` is read in place, never copied into the repo. Point
``RESNET_SERVE_SHARED_DIR`` elsewhere to move it. Without it, tests that need it skip
with the reason, except when ``RESNET_SERVE_REQUIRE_SHARED=1`` (as in CI), where they fail.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.harness import REPO_ROOT, ServerProcess

PHOTOS = (
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "astronaut.png",
    "kodim03.png",
    "camera.png",
    "edge_chelsea_gray.jpg",
    "edge_coffee_rgba.png",
    "edge_rocket_cmyk.jpg",
)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    path = Path(os.environ.get("RESNET_SERVE_SHARED_DIR", REPO_ROOT.parent / "shared"))
    if not (path / "data").is_dir() or not (path / "models").is_dir():
        reason = f"shared data not found at {path} (set RESNET_SERVE_SHARED_DIR)"
        if os.environ.get("RESNET_SERVE_REQUIRE_SHARED") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def photos_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "photos"


@pytest.fixture(scope="session")
def cifar_sample_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "cifar10-sample"


@pytest.fixture(scope="session")
def cifar_checkpoint(shared_dir: Path) -> Path:
    return shared_dir / "models" / "cifar10-resnet" / "resnet20-12fca82f.th"


def export(repository: Path, *args: str) -> None:
    from service.cli import main

    assert main(["export", *args, "--repository", str(repository)]) == 0


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with ``resnet18`` (ImageNet layout, random weights), ONNX only."""
    repository = tmp_path_factory.mktemp("models")
    export(repository, "resnet18", "--weights", "random")
    return repository


@pytest.fixture(scope="session")
def cifar_repository(tmp_path_factory: pytest.TempPathFactory, cifar_checkpoint: Path) -> Path:
    """A repository with the pretrained CIFAR-10 ``resnet20`` in both formats."""
    repository = tmp_path_factory.mktemp("cifar-models")
    export(
        repository,
        "resnet20",
        "--checkpoint",
        str(cifar_checkpoint),
        "--format",
        "onnx",
        "--format",
        "torchscript",
    )
    return repository


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Factory: ``start_server(repository, wait=True, grpc_port=None, **settings)``.

    Every server it started is stopped at teardown. See :class:`ServerProcess`.
    """
    started: list[ServerProcess] = []

    def start(repository: Path, *, wait: bool = True, **settings: Any) -> ServerProcess:
        server = ServerProcess(repository, tmp_path / f"server-{len(started)}.log", **settings)
        started.append(server)
        if wait:
            server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def server(
    model_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One resnet18 server shared by a test module (default settings)."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    with ServerProcess(model_repository, log) as proc:
        yield proc
