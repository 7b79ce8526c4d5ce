"""The command line: one-line errors, grouped help, the API key off argv, no benchmarks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from service.cli import (
    SETTING_SECTIONS,
    SUBCOMMAND_MODULES,
    build_parser,
    main,
    missing_extra_line,
    sections,
)
from service.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real entry point in a child process: what a user sees on stderr."""
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


@pytest.mark.parametrize(
    ("args", "env", "names"),
    [
        (["--port", "abc"], {}, ("--port", "RESNET_SERVE_PORT", "valid integer")),
        (["--max-batch-size", "0"], {}, ("--max-batch-size", "greater than or equal to 1")),
        ([], {"RESNET_SERVE_MAX_BATCH_SIZE": "0"}, ("RESNET_SERVE_MAX_BATCH_SIZE",)),
    ],
)
def test_bad_setting_is_one_line_naming_flag_and_env_exit_2(
    args: list[str], env: dict[str, str], names: tuple[str, ...]
) -> None:
    result = run_cli("serve", *args, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("resnet-serve: invalid setting:")
    for name in names:
        assert name in lines[0]


def test_export_without_torch_names_the_extra_to_install(tmp_path: Path) -> None:
    # torch blocked in the child: the export handler's lazy import fails as on a
    # serving-only install.
    code = (
        "import sys; sys.modules['torch'] = None; from service.cli import main; "
        f"sys.exit(main(['export', 'resnet18', '--weights', 'random', '--repository', "
        f"{str(tmp_path)!r}]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "resnet-serve export: needs the 'export' extra (module 'torch' is not installed): "
        "pip install '.[export]' (or 'resnet-serve[export]')"
    ]


def test_unknown_missing_module_is_not_hidden() -> None:
    assert missing_extra_line("serve", ModuleNotFoundError(name="nonexistent_pkg")) is None
    assert "'quantize' extra" in str(
        missing_extra_line("quantize", ModuleNotFoundError(name="onnx"))
    )


def test_every_setting_is_placed_in_exactly_one_help_section() -> None:
    placed = [name for names in SETTING_SECTIONS.values() for name in names]
    assert len(placed) == len(set(placed)), "a setting is in two sections"
    assert not set(placed) - set(Settings.model_fields), "a section names a removed setting"
    unplaced = set(Settings.model_fields) - set(placed)
    assert not unplaced, f"place these settings in service/cli.py SETTING_SECTIONS: {unplaced}"


def test_unplaced_setting_goes_to_other_instead_of_crashing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    network = tuple(n for n in SETTING_SECTIONS["network"] if n != "port")
    monkeypatch.setitem(SETTING_SECTIONS, "network", network)  # "port" now unplaced
    grouped = sections()
    assert grouped["other"] == ["port"]
    assert sorted(n for names in grouped.values() for n in names) == sorted(Settings.model_fields)


def test_serve_help_is_grouped_by_section(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    text = capsys.readouterr().out
    positions = [text.index(f"\n{title}:\n") for title in SETTING_SECTIONS]
    assert positions == sorted(positions)
    for title, names in SETTING_SECTIONS.items():
        start = text.index(f"\n{title}:\n")
        following = [p for p in positions if p > start]
        block = text[start : following[0] if following else len(text)]
        for name in names:
            assert f"--{name.replace('_', '-')}" in block, (title, name)
    api_key_help = text[text.index("\n  --api-key API_KEY") :].split("--api-key-file")[0]
    assert "`ps`" in " ".join(api_key_help.split())


def test_api_key_from_file_is_stripped_and_never_needs_argv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "api-key"
    secret.write_text("s3cret-key\n")
    monkeypatch.setenv("RESNET_SERVE_API_KEY_FILE", str(secret))
    from service.settings import load_settings

    assert load_settings().api_key == "s3cret-key"
    monkeypatch.setenv("RESNET_SERVE_API_KEY", "other")
    with pytest.raises(ValueError, match="not both"):
        load_settings()


@pytest.mark.parametrize("content", [None, "  \n"])
def test_unusable_api_key_file_is_one_line_exit_2(tmp_path: Path, content: str | None) -> None:
    secret = tmp_path / "api-key"
    if content is not None:
        secret.write_text(content)
    result = run_cli("serve", "--api-key-file", str(secret), "--repository", str(tmp_path))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert str(secret) in line and "Traceback" not in line


def test_the_product_does_not_import_the_benchmarks() -> None:
    assert not any(m.startswith("benchmarks") for m in SUBCOMMAND_MODULES)
    assert "bench" not in build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    assert 'include = ["service*"]' in pyproject


def test_broken_repository_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "models" / "broken"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"name": "broken"}')
    assert main(["serve", "--repository", str(tmp_path / "models"), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "broken/config.json" in err and "Traceback" not in err
