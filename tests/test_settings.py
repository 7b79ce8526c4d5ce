"""Settings come from the environment, a settings file, then CLI flags (which win)."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.cli import build_parser
from service.settings import Settings, load_settings


def test_environment_and_settings_file_and_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_file = tmp_path / "serve.env"
    settings_file.write_text("RESNET_SERVE_MAX_BATCH_SIZE=8\nRESNET_SERVE_PORT=9001\n")
    monkeypatch.setenv("RESNET_SERVE_SETTINGS_FILE", str(settings_file))
    monkeypatch.setenv("RESNET_SERVE_PORT", "9002")  # environment beats the file
    # None means "flag not given".
    settings = load_settings(max_queue_size=7, max_images_per_request=7, host=None)
    assert settings.max_batch_size == 8
    assert settings.port == 9002
    assert settings.max_queue_size == 7
    assert settings.host == "127.0.0.1"


def test_invalid_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESNET_SERVE_MAX_BATCH_SIZE", "0")
    with pytest.raises(ValueError, match="max_batch_size"):
        load_settings()


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"max_images_per_request": 65, "max_queue_size": 64}, "max_images_per_request"),
        ({"max_body_bytes": 2**20, "max_body_bytes_in_flight": 2**19}, "max_body_bytes"),
    ],
)
def test_contradicting_settings_are_refused_naming_both(
    overrides: dict[str, int], named: str
) -> None:
    with pytest.raises(ValueError, match=named) as info:
        Settings(**overrides)
    assert "could never" in str(info.value)


def test_serve_help_documents_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    text = capsys.readouterr().out
    for name in Settings.model_fields:
        assert f"--{name.replace('_', '-')}" in text
        assert f"RESNET_SERVE_{name.upper()}" in text


def test_configuration_table_lists_every_setting() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "CONFIGURATION.md").read_text()
    missing = [n for n in Settings.model_fields if f"`{n.upper()}`" not in doc]
    assert not missing, f"docs/CONFIGURATION.md's table lacks {missing}"


def test_broken_repository_stops_serve_with_a_message_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.cli import main

    folder = tmp_path / "models" / "broken"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"name": "broken"}')
    code = main(["serve", "--repository", str(tmp_path / "models"), "--port", "0"])
    assert code == 2
    err = capsys.readouterr().err
    assert "broken/config.json" in err and "preprocessing" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("name", "value"),
    [("head_timeout_s", 0), ("head_timeout_s", -1), ("keep_alive_timeout_s", 0)],
)
def test_connection_timeouts_must_be_positive(name: str, value: float) -> None:
    # 0 would close every connection at once (or, to uvicorn, never time it out).
    with pytest.raises(ValueError, match=name):
        Settings(**{name: value})


def test_connection_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (Settings().head_timeout_s, Settings().keep_alive_timeout_s) == (5.0, 5)
    monkeypatch.setenv("RESNET_SERVE_HEAD_TIMEOUT_S", "2.5")
    monkeypatch.setenv("RESNET_SERVE_KEEP_ALIVE_TIMEOUT_S", "9")
    settings = load_settings()
    assert (settings.head_timeout_s, settings.keep_alive_timeout_s) == (2.5, 9)


def test_http_and_grpc_on_one_port_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="port and grpc_port are both 9000"):
        Settings(port=9000, grpc_port=9000)
    assert Settings(port=0, grpc_port=0).grpc_port == 0  # both picked by the OS / off


@pytest.mark.parametrize("mode", ["explicit", "poll"])
def test_model_control_without_an_admin_key_is_refused_in_one_line(
    mode: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from service.cli import main

    assert main(["serve", "--repository", str(tmp_path), "--model-control-mode", mode]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"model_control_mode {mode!r} needs an admin key" in err


def test_admin_key_comes_from_its_file_and_must_differ_from_the_api_key(tmp_path: Path) -> None:
    key_file = tmp_path / "admin-key"
    key_file.write_text("s3cret\n")
    settings = Settings(model_control_mode="explicit", admin_api_key_file=key_file)
    assert settings.admin_api_key == "s3cret"
    with pytest.raises(ValueError, match="admin_api_key must differ from api_key"):
        Settings(model_control_mode="poll", admin_api_key="same", api_key="same")
    with pytest.raises(ValueError, match="give the admin key once"):
        Settings(admin_api_key="a", admin_api_key_file=key_file)
    assert Settings().model_control_mode == "none"  # the default needs no key


def test_grpc_streams_per_connection_follow_the_calls_grpc_admits_unless_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A lower cap refuses calls one channel sends within the service's limits."""
    assert Settings().effective_grpc_streams_per_connection() == 2 * 64
    assert Settings(grpc_max_concurrent_rpcs=10).effective_grpc_streams_per_connection() == 20
    monkeypatch.setenv("RESNET_SERVE_GRPC_MAX_STREAMS_PER_CONNECTION", "48")
    assert load_settings().effective_grpc_streams_per_connection() == 48
    with pytest.raises(ValueError, match="grpc_max_streams_per_connection"):
        Settings(grpc_max_streams_per_connection=-1)
