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
