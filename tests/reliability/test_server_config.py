"""How run_server configures uvicorn: a bounded drain, no access log with bodies."""

from __future__ import annotations

from pathlib import Path

import pytest
import uvicorn

from service.server import DrainingServer, run_server
from service.settings import Settings


def configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **settings: object
) -> uvicorn.Config:
    seen: list[uvicorn.Config] = []
    monkeypatch.setattr(DrainingServer, "run", lambda self, sockets=None: seen.append(self.config))
    assert run_server(Settings(repository=tmp_path, **settings)) == 0
    (config,) = seen
    return config


@pytest.mark.parametrize(("drain_s", "bound_s"), [(0.5, 1), (20.0, 20), (0.0, 0)])
def test_drain_timeout_is_always_a_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, drain_s: float, bound_s: int
) -> None:
    # None would make uvicorn wait for open requests forever.
    config = configured(tmp_path, monkeypatch, drain_timeout_s=drain_s)
    assert config.timeout_graceful_shutdown == bound_s


def test_access_log_is_off_unless_debug(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert configured(tmp_path, monkeypatch).access_log is False
    assert configured(tmp_path, monkeypatch, log_level="debug").access_log is True
