"""The Dockerfile and .dockerignore as data; hadolint and a real build run in CI."""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from tests.deploy.conftest import REPO_ROOT, SETTING_VARIABLES


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


DOCKERFILE = instructions((REPO_ROOT / "Dockerfile").read_text())


def stages() -> dict[str, list[tuple[str, str]]]:
    found: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for op, args in DOCKERFILE:
        if op == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", args, re.IGNORECASE)
            assert match, args
            current = found.setdefault(match[2] or f"#{len(found)}", [("FROM", match[1])])
        else:
            current.append((op, args))
    return found


def global_args() -> dict[str, str]:
    args = {}
    for op, value in DOCKERFILE:
        if op == "FROM":
            break
        if op == "ARG":
            name, _, default = value.partition("=")
            args[name] = default
    return args


def test_base_image_is_a_build_argument_defaulting_to_python_slim() -> None:
    args = global_args()
    assert args["BASE_IMAGE"].startswith("python:3.11-slim")
    assert stages()["base-cpu"][0] == ("FROM", "${BASE_IMAGE}")


def test_every_selectable_stage_exists() -> None:
    """`FROM <prefix>-${ARG}` needs a stage per documented value of ARG."""
    found = stages()
    choices = {"VARIANT": ("cpu", "gpu"), "WHEELS_SOURCE": ("build", "context")}
    choices["MODEL_SOURCE"] = ("export", "context")
    for name, values in choices.items():
        assert global_args()[name] == values[0]
        refs = [s[0][1] for s in found.values() if s[0][1].endswith("${" + name + "}")]
        assert refs, f"no stage is selected by {name}"
        for ref in refs:
            for value in values:
                assert ref.replace("${" + name + "}", value) in found


def test_runtime_stage_serves_as_non_root_with_exec_form_entrypoint() -> None:
    runtime = stages()["runtime"]
    assert list(stages())[-1] == "runtime", "the default target must be the runtime"
    ops = dict(runtime)
    user = ops["USER"].split(":")[0]
    assert user.isdigit() and int(user) != 0
    entrypoint = json.loads(ops["ENTRYPOINT"])
    assert entrypoint == ["resnet-serve"]
    assert json.loads(ops["CMD"]) == ["serve"]
    assert ops.get("STOPSIGNAL", "SIGTERM") == "SIGTERM"


def test_runtime_stage_installs_offline_and_without_pytorch() -> None:
    runtime = stages()["runtime"]
    runs = " ".join(args for op, args in runtime if op == "RUN")
    assert "--no-index" in runs
    assert "from=wheels" in runs
    assert "torch" not in runs and "export" not in runs
    copies = [args for op, args in runtime if op == "COPY"]
    assert copies == ["--from=models /models /models"]


def test_healthcheck_matches_compose(compose: dict[str, Any]) -> None:
    healthcheck = dict(stages()["runtime"])["HEALTHCHECK"]
    command = json.loads(healthcheck.split("CMD", 1)[1])
    assert "/health/startup" in command[-1]
    assert command == compose["services"]["resnet-serve"]["healthcheck"]["test"][1:]
    options = dict(opt.lstrip("-").split("=") for opt in shlex.split(healthcheck.split("CMD")[0]))
    assert (
        options["start-period"]
        == compose["services"]["resnet-serve"]["healthcheck"]["start_period"]
    )


def test_environment_names_are_real_settings() -> None:
    for op, args in DOCKERFILE:
        if op == "ENV":
            names = {pair.split("=")[0] for pair in shlex.split(args)}
            unknown = {n for n in names if n.startswith("RESNET_SERVE_")} - SETTING_VARIABLES
            assert not unknown, f"not settings (service/settings.py): {unknown}"


def test_dockerignore_sends_what_the_build_copies() -> None:
    allowed = [
        line[1:].rstrip("/")
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    assert "*" in (REPO_ROOT / ".dockerignore").read_text().splitlines()
    for op, args in DOCKERFILE:
        if op == "COPY" and not args.startswith("--from") and "${" not in args:
            for source in shlex.split(args)[:-1]:
                assert source.rstrip("/") in allowed, f"COPY {source} is excluded"
    for arg in ("MODEL_DIR", "WHEELHOUSE"):
        default = next(a for op, a in DOCKERFILE if op == "ARG" and a.startswith(arg + "="))
        path = default.split("=", 1)[1]
        assert any(path == a or path.startswith(a + "/") for a in allowed), f"{arg}={path}"


def test_gpu_image_asks_for_cuda_and_cuda_13() -> None:
    gpu = dict(stages()["base-gpu"])
    assert gpu["ENV"] == "RESNET_SERVE_PROVIDERS=CUDAExecutionProvider"
    # onnxruntime-gpu 1.31 loads libcublas.so.13: a CUDA 12 base would silently run on CPU.
    assert re.search(r"nvidia/cuda:13\.\d+\.\d+-cudnn-runtime-", global_args()["CUDA_BASE_IMAGE"])


def test_runtime_installs_exactly_the_hash_checked_lock() -> None:
    runs = " ".join(args for op, args in stages()["runtime"] if op == "RUN")
    assert "--require-hashes" in runs
    assert '-r "/requirements/serve-${VARIANT}.lock"' in runs
    # The project itself without dependencies: nothing unlocked comes along with it.
    assert "--no-deps resnet-serve" in runs
    assert "pip check" in runs
    for variant in ("cpu", "gpu"):
        assert (REPO_ROOT / "requirements" / f"serve-{variant}.lock").is_file()
    build = " ".join(args for op, args in stages()["wheels-build"] if op == "RUN")
    assert "--require-hashes" in build and "serve-${VARIANT}.lock" in build


def test_image_is_labelled_with_version_revision_and_source() -> None:
    runtime = stages()["runtime"]
    args = {a.split("=")[0] for op, a in runtime if op == "ARG"}
    labels = dict(
        pair.split("=", 1) for op, a in runtime if op == "LABEL" for pair in shlex.split(a)
    )
    for key, arg in (("version", "VERSION"), ("revision", "REVISION"), ("source", "SOURCE")):
        assert labels[f"org.opencontainers.image.{key}"] == "${" + arg + "}"
        assert arg in args
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert (REPO_ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")


def test_image_exposes_http_and_grpc() -> None:
    (exposed,) = [a for op, a in stages()["runtime"] if op == "EXPOSE"]
    assert exposed.split() == ["8000", "8001"]


def test_image_serves_its_model_build_argument_by_default() -> None:
    """As `make serve MODEL=x`: MODEL is exported (MODELS defaults to it) and served by
    default, and a MODEL the image's models lack fails the build."""
    exporter_args = [a for op, a in stages()["models-export"] if op == "ARG"]
    assert "MODEL=resnet50" in exporter_args and "MODELS=${MODEL}" in exporter_args
    runtime = stages()["runtime"]
    env = {
        name: value
        for op, args in runtime
        if op == "ENV"
        for name, _, value in (pair.partition("=") for pair in shlex.split(args))
    }
    assert env["RESNET_SERVE_DEFAULT_MODEL"] == "${MODEL}"
    checks = [a for op, a in runtime if op == "RUN" and "/models/${MODEL}/config.json" in a]
    assert checks and "exit 1" in checks[0]


def test_deploy_doc_names_the_healthcheck_path_the_image_asks() -> None:
    healthcheck = dict(stages()["runtime"])["HEALTHCHECK"]
    (path,) = re.findall(r"/health/\w+", healthcheck)
    doc = (REPO_ROOT / "docs" / "DEPLOY.md").read_text()
    named = re.findall(r"`HEALTHCHECK`[^.]*?(/health/\w+)", doc)
    assert named and set(named) == {path}, named
