"""README.md's Quick start and examples, run as written in a clean clone.

Every ```bash block of the README carries a marker comment just above it:

* ``<!-- readme-test: serve -->``: the Quick start command (``make serve``), started in
  the background in a fresh ``git clone`` of this repository (its committed HEAD);
* ``<!-- readme-test: run -->``: an example, run with bash in the clone once the server
  is ready, in README order; it must exit 0 and print no error body;
* ``<!-- readme-test: answer -->`` (a ```json block after a ``run`` block): the answer
  shown must have the shape of the real one (same keys, same model and engine);
* ``<!-- readme-test: skip, <why> -->``: not run (``make test``, the whole suite).

A block without a marker fails the test, so a new example cannot go untested.

Bounded: loopback only, free ports instead of 8000/8001 (the only change made to the
commands: ``127.0.0.1:8000`` is rewritten to the port chosen), and a deadline for every
step. Installing PyTorch and the serving packages afresh takes minutes and gigabytes, so
the clone's two environments (``.venv``, ``.cache/export-venv``) are pre-made as empty
virtualenvs that see the packages of the environment running this test (a ``.pth``
line): ``make serve``'s recipes still all run (the PyTorch source probe with its
fallback, both ``pip install`` commands, which find everything already satisfied and
install the clone itself, the export, the server), without the downloads.
``tests/test_importer.py`` covers a fresh serving-only install.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.harness import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(
    r"<!-- readme-test: (serve|run|answer|skip)\b[^>]*-->\s*\n```(\w+)\n(.*?)```", re.S
)
FENCE = re.compile(r"^```(\w+)\n", re.M)
#: Export (PyTorch on 2 shared cores) plus load and warm-up of resnet50.
READY_TIMEOUT_S = 420
EXAMPLE_TIMEOUT_S = 60


@dataclass(frozen=True)
class Block:
    kind: str
    language: str
    text: str


def blocks(readme: str) -> list[Block]:
    return [Block(kind, lang, text) for kind, lang, text in MARKER.findall(readme)]


def test_every_shell_block_of_the_readme_says_how_it_is_tested() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    marked = sum(1 for b in blocks(readme) if b.language == "bash")
    assert marked == FENCE.findall(readme).count("bash"), "a ```bash block has no marker"
    kinds = [b.kind for b in blocks(readme)]
    assert kinds.count("serve") == 1 and kinds.index("serve") < kinds.index("run")


def shape(value: Any) -> Any:
    """Keys and types, not values: what an answer shown in the README must share."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return (
        "number"
        if isinstance(value, int | float) and not isinstance(value, bool)
        else type(value).__name__
    )


def clean_environment() -> dict[str, str]:
    """This shell's environment without what would bend the clone: a developer's
    ``RESNET_SERVE_*`` settings, or a PYTHONPATH that imports another checkout."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RESNET_SERVE_") and k not in ("PYTHONPATH", "PYTHONHOME")
    }


def json_values(text: str) -> list[Any]:
    """The JSON objects an output is made of (curl prints them back to back), or []."""
    decoder, values, index = json.JSONDecoder(), [], 0
    text = text.strip()
    while index < len(text) and text[index] == "{":
        value, index = decoder.raw_decode(text, index)
        values.append(value)
        while index < len(text) and text[index].isspace():
            index += 1
    return values


def reuse_packages(venv: Path) -> None:
    """An empty virtualenv that sees this test environment's packages (not its .pth files:
    the clone's own editable install must be the ``service`` imported there)."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60
    )
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    site = venv / "lib" / version / "site-packages"
    paths = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "zz-reuse-test-environment.pth").write_text("\n".join(paths) + "\n")


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    for tool in ("git", "make", "curl", "bash"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    inside = subprocess.run(
        ["git", "rev-parse", "--is-inside-work-tree"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    if inside.stdout.strip() != "true":
        pytest.skip("not a git checkout: nothing to clone")
    target = tmp_path / "resnet-serve"
    subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(target)], check=True, timeout=120)
    reuse_packages(target / ".venv")
    reuse_packages(target / ".cache" / "export-venv")
    return target


@pytest.fixture
def ports() -> tuple[int, int]:
    return free_port(), free_port()


@pytest.fixture
def quick_start(clone: Path, ports: tuple[int, int], tmp_path: Path) -> Iterator[str]:
    """README's serve block, as written, in the clone; yields the server's URL."""
    readme = (clone / "README.md").read_text(encoding="utf-8")
    (serve,) = [b for b in blocks(readme) if b.kind == "serve"]
    env = clean_environment()
    env.update(PORT=str(ports[0]), GRPC_PORT=str(ports[1]))
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", serve.text],
        cwd=clone,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # make, pip, the exporter and the server: one group to stop
    )
    url = f"http://127.0.0.1:{ports[0]}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"`{serve.text.strip()}` exited {process.returncode}:\n{tail(tmp_path)}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"not ready within {READY_TIMEOUT_S} s:\n{tail(tmp_path)}")
            try:
                if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)  # polling another process: there is no event to wait on
        yield url
    finally:
        stop(process)
        log.close()


def tail(tmp_path: Path, lines: int = 40) -> str:
    return "\n".join((tmp_path / "serve.log").read_text(errors="replace").splitlines()[-lines:])


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.mark.slow
def test_quick_start_and_examples_run_as_written(
    quick_start: str, clone: Path, ports: tuple[int, int]
) -> None:
    readme = (clone / "README.md").read_text(encoding="utf-8")
    examples = [b for b in blocks(readme) if b.kind in ("run", "answer")]
    assert len([b for b in examples if b.kind == "run"]) >= 4
    env = clean_environment()
    last_json: Any = None
    for block in examples:
        if block.kind == "answer":
            shown = json.loads(block.text)
            assert shape(shown) == shape(last_json), (shown, last_json)
            for key in ("model", "version", "engine", "precision"):
                assert shown[key] == last_json[key], key
            continue
        command = block.text.replace("127.0.0.1:8000", f"127.0.0.1:{ports[0]}")
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=EXAMPLE_TIMEOUT_S,
        )
        where = f"{block.text.strip()}\nstdout: {result.stdout}\nstderr: {result.stderr}"
        assert result.returncode == 0 and result.stdout.strip(), where
        answers = json_values(result.stdout)
        for answer in answers:
            assert "error" not in answer, where
        if answers:
            last_json = answers[0]
        if "--port abc" in command:  # the one example that shows a refusal
            assert "exit status 2" in result.stdout, where
            (line,) = result.stderr.strip().splitlines()
            assert line.startswith("resnet-serve: invalid setting: --port / RESNET_SERVE_PORT")
