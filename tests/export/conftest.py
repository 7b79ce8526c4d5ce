"""Fixtures for the export tests.

``shared_dir``, ``cifar_sample_dir`` and ``cifar_checkpoint`` come from
``tests/conftest.py`` (skip, or fail under ``RESNET_SERVE_REQUIRE_SHARED=1``, when the
shared data is missing). Here: isolation from the network and from the user's torch hub
cache, so a test never downloads 100 MB and never passes only because a file happens
to be cached on the developer's machine.
"""

from __future__ import annotations

import csv
import urllib.error
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch.hub


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty ``$TORCH_HOME`` and a torch.hub that fails at once instead of downloading."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise urllib.error.URLError("network disabled in tests")

    torch_home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setattr(torch.hub, "urlopen", refuse)
    return torch_home


@pytest.fixture(scope="session")
def cifar_labelled_images(cifar_sample_dir: Path) -> list[tuple[Path, int]]:
    """(image path, class index) for the 300 CIFAR-10 test JPEGs."""
    with (cifar_sample_dir / "labels.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [(cifar_sample_dir / row["path"], int(row["label_index"])) for row in rows]


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """``run_cli(*argv)`` -> (exit code, stdout, stderr) of ``resnet-serve``."""
    from service.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run
