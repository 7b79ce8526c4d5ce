"""The serving image's lock files, the CUDA pin and the single source of the version."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import service
from tests.deploy.conftest import REPO_ROOT
from tests.deploy.test_dockerfile import global_args

# Python 3.11+ (CI's); the project itself still runs on 3.10.
tomllib = pytest.importorskip("tomllib")
REQUIREMENTS = REPO_ROOT / "requirements"
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
#: The CUDA major each locked onnxruntime-gpu minor was built for (its `cuda` extra
#: asks for nvidia-cuda-runtime~=<major>.0). Add a line when the pin moves.
ONNXRUNTIME_GPU_CUDA_MAJOR = {"1.31": 13}


def pins(lock: Path) -> dict[str, list[tuple[str, str, list[str]]]]:
    """name -> [(version, marker, hashes)]: a universal lock may pin one name twice."""
    found: dict[str, list[tuple[str, str, list[str]]]] = {}
    text = lock.read_text()
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = re.match(r"([A-Za-z0-9._-]+)(?:\[[^\]]*\])?==([^\s;\\]+)\s*(?:;([^\\\n]*))?", block)
        if match is None:
            continue
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", block)
        found.setdefault(canonicalize_name(match[1]), []).append(
            (match[2], (match[3] or "").strip(), hashes)
        )
    return found


@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_lock_pins_every_dependency_with_hashes(variant: str) -> None:
    locked = pins(REQUIREMENTS / f"serve-{variant}.lock")
    assert locked, "empty lock"
    for name, entries in locked.items():
        for version, _, hashes in entries:
            assert hashes, f"{name}=={version} has no hash (pip --require-hashes refuses it)"
    project = PYPROJECT["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    wanted += [Requirement(r) for r in project["optional-dependencies"][variant]]
    wanted += [
        Requirement(line)
        for line in (REQUIREMENTS / "serve.in").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} is not in the {variant} lock: rerun compile.sh"
        for version, _, _ in locked[name]:
            assert requirement.specifier.contains(version, prereleases=True), (
                f"{name}=={version} does not satisfy {requirement}: rerun compile.sh"
            )


def test_each_lock_has_its_own_onnxruntime_build() -> None:
    """Both wheels install into one `onnxruntime` folder and break each other."""
    cpu = pins(REQUIREMENTS / "serve-cpu.lock")
    gpu = pins(REQUIREMENTS / "serve-gpu.lock")
    assert "onnxruntime" in cpu and "onnxruntime-gpu" not in cpu
    assert "onnxruntime-gpu" in gpu and "onnxruntime" not in gpu
    assert "torch" not in cpu and "torch" not in gpu, "serving needs no PyTorch"
    for name in ("grpcio", "tritonclient"):
        assert name in cpu and name in gpu, f"{name}: the V2 gRPC door needs it"


def test_onnxruntime_gpu_is_pinned_to_the_cuda_base_images_major() -> None:
    ((version, _, _),) = pins(REQUIREMENTS / "serve-gpu.lock")["onnxruntime-gpu"]
    minor = ".".join(version.split(".")[:2])
    assert minor in ONNXRUNTIME_GPU_CUDA_MAJOR, (
        f"onnxruntime-gpu {version}: look up its CUDA major (its `cuda` extra) and add it"
    )
    base = global_args()["CUDA_BASE_IMAGE"]
    match = re.search(r"nvidia/cuda:(\d+)\.", base)
    assert match, base
    assert int(match[1]) == ONNXRUNTIME_GPU_CUDA_MAJOR[minor], (
        f"{base} vs onnxruntime-gpu {version}: ONNX Runtime would silently run on the CPU"
    )
    constraint = (REQUIREMENTS / "gpu-constraints.txt").read_text()
    assert f"onnxruntime-gpu=={minor}.*" in constraint


def test_version_is_written_once() -> None:
    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project["dynamic"]
    attr = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "service.__version__"
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+|rc\d+)?", service.__version__)


def test_changelog_has_a_section_for_this_version() -> None:
    release = re.match(r"\d+\.\d+\.\d+", service.__version__)
    assert release
    changelog = (REPO_ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[{re.escape(release[0])}\]", changelog, re.MULTILINE)
