"""Deployment files as data: compose, Prometheus, Grafana, Kubernetes, the Dockerfile.

Tools that may be missing (kubectl, promtool, prometheus) skip their tests with the
reason. ``.ci/deploy-check.sh`` installs them and runs the heavier checks (image build,
hadolint, schema validation); ``RESNET_SERVE_REQUIRE_PROMETHEUS=1`` (as in CI) makes the
Prometheus tests fail instead of skipping.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.settings import ENV_PREFIX, Settings
from tests.deploy.promql import REPO_ROOT, service_series

DEPLOY = REPO_ROOT / "deploy"
K8S = REPO_ROOT / "k8s"
#: Settings service/settings.py defines, as environment variable names.
DEFINED_SETTING_VARIABLES = frozenset(ENV_PREFIX + n.upper() for n in Settings.model_fields)
#: Every setting as its environment variable name.
SETTING_VARIABLES = DEFINED_SETTING_VARIABLES


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_yaml_all(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def require_tool(name: str, env: str | None = None) -> str:
    """Path of ``name``; skip without it, or fail when ``env`` is set to 1."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} not installed (.ci/run installs it)"
        if env and os.environ.get(env) == "1":
            pytest.fail(f"{reason}; {env}=1 requires it")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    return load_yaml(REPO_ROOT / "docker-compose.yml")


@pytest.fixture(scope="session")
def compose_gpu() -> dict[str, Any]:
    return load_yaml(REPO_ROOT / "docker-compose.gpu.yml")


@pytest.fixture(scope="session")
def dashboard() -> dict[str, Any]:
    return json.loads((DEPLOY / "grafana" / "dashboards" / "resnet-serve.json").read_text())


@pytest.fixture(scope="session")
def service_metrics() -> dict[str, set[str]]:
    """Series names the service exports, with their labels (from service/metrics.py)."""
    return service_series()


@pytest.fixture(scope="session")
def kustomize() -> Any:
    """``kustomize(path) -> [objects]``: a rendered kustomization (needs kubectl)."""
    kubectl = require_tool("kubectl")

    def render(path: Path) -> list[dict[str, Any]]:
        out = subprocess.run(
            [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, f"kubectl kustomize {path} failed:\n{out.stderr}"
        return load_yaml_all(out.stdout)

    return render
