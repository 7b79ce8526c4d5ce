"""docker-compose.yml, its GPU override and the Prometheus config it mounts, as data.

The Compose specification itself is checked by .ci/deploy-check.sh (check-jsonschema
and `docker compose config`), and the file is run for real there.
"""

from __future__ import annotations

import re
from typing import Any

from service.settings import Settings
from tests.deploy.conftest import DEPLOY, REPO_ROOT, SETTING_VARIABLES, load_yaml

_DEFAULTED = re.compile(r"\$\{(\w+):-([^}]*)\}")


def seconds(duration: str) -> float:
    """Compose durations: 30s, 1m30s, 500ms."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def default_of(value: str) -> str:
    """The value compose uses when the variable is unset: `${X:-20}` -> `20`."""
    return _DEFAULTED.sub(lambda m: m.group(2), str(value))


def test_service_healthcheck_asks_the_liveness_endpoint(compose: dict[str, Any]) -> None:
    check = compose["services"]["resnet-serve"]["healthcheck"]
    assert check["test"][0] == "CMD"
    assert "/health/startup" in " ".join(check["test"])
    assert seconds(check["timeout"]) < seconds(check["interval"])


def test_stop_grace_period_outlasts_the_drain(compose: dict[str, Any]) -> None:
    service = compose["services"]["resnet-serve"]
    drain = float(default_of(service["environment"]["RESNET_SERVE_DRAIN_TIMEOUT_S"]))
    assert drain == Settings.model_fields["drain_timeout_s"].default
    assert service["stop_signal"] == "SIGTERM"
    # The drain, the batch still running when it ends (10 s), and the exit.
    assert seconds(service["stop_grace_period"]) >= drain + 10 + 5


def test_environment_names_are_real_settings(
    compose: dict[str, Any], compose_gpu: dict[str, Any]
) -> None:
    for file in (compose, compose_gpu):
        for name, service in file["services"].items():
            env = service.get("environment", {})
            unknown = {k for k in env if k.startswith("RESNET_SERVE_")} - SETTING_VARIABLES
            assert not unknown, f"{name}: {unknown} are not settings (service/settings.py)"


def test_mounted_repo_files_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO_ROOT / source).exists(), f"{name} mounts missing {source}"


def test_prometheus_scrapes_the_compose_service(compose: dict[str, Any]) -> None:
    config = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "resnet-serve")
    assert job.get("metrics_path", "/metrics") == "/metrics"
    (target,) = job["static_configs"][0]["targets"]
    host, port = target.split(":")
    service = compose["services"][host]
    assert any(str(p).endswith(f":{port}") for p in service["ports"])
    # Rule files are mounted next to the config, where it looks for them.
    mounts = compose["services"]["prometheus"]["volumes"]
    for rule_file in config["rule_files"]:
        assert f"./deploy/prometheus/{rule_file}:/etc/prometheus/{rule_file}:ro" in mounts


def test_admin_interfaces_listen_on_loopback_only(compose: dict[str, Any]) -> None:
    for name in ("prometheus", "grafana", "locust"):
        for port in compose["services"][name]["ports"]:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} to everyone"


def test_service_runs_hardened(compose: dict[str, Any]) -> None:
    service = compose["services"]["resnet-serve"]
    assert service["read_only"] is True
    assert service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]


def test_load_generator_is_opt_in_and_uses_the_repo_locustfile(compose: dict[str, Any]) -> None:
    locust = compose["services"]["locust"]
    assert locust["profiles"] == ["load"]
    assert (REPO_ROOT / "loadtest" / "locustfile.py").is_file()
    assert "http://resnet-serve:8000" in locust["command"]


def test_gpu_override_reserves_an_nvidia_gpu(compose_gpu: dict[str, Any]) -> None:
    service = compose_gpu["services"]["resnet-serve"]
    assert service["build"]["args"]["VARIANT"] == "gpu"
    (device,) = service["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    assert device.get("count", 0) >= 1 or device.get("device_ids")


def test_service_publishes_http_and_grpc(compose: dict[str, Any]) -> None:
    ports = [default_of(p) for p in compose["services"]["resnet-serve"]["ports"]]
    assert ports == ["8000:8000", "8001:8001"]
    assert Settings.model_fields["grpc_port"].default == 8001


def test_gpu_override_starts_strict_with_a_five_minute_loading_budget(
    compose_gpu: dict[str, Any],
) -> None:
    service = compose_gpu["services"]["resnet-serve"]
    assert default_of(service["environment"]["RESNET_SERVE_STRICT"]) == "true"
    assert seconds(service["healthcheck"]["start_period"]) == 300


def test_build_takes_the_default_model_and_the_models_as_the_service_names_them(
    compose: dict[str, Any],
) -> None:
    args = compose["services"]["resnet-serve"]["build"]["args"]
    assert args["MODEL"] == "${RESNET_SERVE_DEFAULT_MODEL:-resnet50}"
    assert args["MODELS"] == "${RESNET_SERVE_MODELS:-${RESNET_SERVE_DEFAULT_MODEL:-resnet50}}"
    assert {"RESNET_SERVE_DEFAULT_MODEL", "RESNET_SERVE_MODELS"} <= SETTING_VARIABLES
