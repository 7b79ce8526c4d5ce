"""The opt-in components (monitoring, ingress) and the KServe manifests, as data.

The PrometheusRule and the dashboard ConfigMap are generated from deploy/; these tests
fail when a committed copy is stale. CRD schemas are checked in .ci/deploy-check.sh
(Prometheus Operator models, KServe's CRD schemas with check-jsonschema); KServe's here
too, with jsonschema-rs.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from service.settings import Settings
from tests.deploy.conftest import DEPLOY, K8S, REPO_ROOT, SETTING_VARIABLES, load_yaml
from tests.deploy.test_k8s import by_kind, overlay_with

KSERVE = K8S / "kserve"


def load_script(path: Path) -> ModuleType:
    """A generator script under deploy/ (not a package) as a module."""
    spec = importlib.util.spec_from_file_location(path.stem.replace("-", "_"), path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def monitored(kustomize: Any, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return overlay_with(kustomize, tmp_path_factory.mktemp("k8s"), "cpu", "monitoring")


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    return found


@pytest.mark.parametrize(
    "script",
    ["deploy/prometheus/to-prometheusrule.py", "deploy/grafana/to-configmap.py"],
)
def test_generated_manifests_are_up_to_date(script: str) -> None:
    module = load_script(REPO_ROOT / script)
    assert module.TARGET.read_text() == module.render(), f"stale: run python {script}"
    assert module.main(["--check"]) == 0


def test_staleness_check_notices_a_change(tmp_path: Path) -> None:
    module = load_script(REPO_ROOT / "deploy/prometheus/to-prometheusrule.py")
    changed = tmp_path / "alerts.yml"
    changed.write_text(
        (DEPLOY / "prometheus/alerts.yml").read_text().replace("for: 5m", "for: 6m", 1)
    )
    assert module.render(changed) != module.TARGET.read_text()


def test_prometheus_rule_carries_alerts_yml(monitored: list[dict[str, Any]]) -> None:
    rule = one(monitored, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == load_yaml(DEPLOY / "prometheus/alerts.yml")["groups"]


def test_service_monitor_scrapes_the_http_port_as_job_resnet_serve(
    monitored: list[dict[str, Any]],
) -> None:
    monitor = one(monitored, "ServiceMonitor")["spec"]
    service = one(monitored, "Service")
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    # The alert rules and the dashboard select job="resnet-serve".
    assert service["metadata"]["labels"][monitor["jobLabel"]] == "resnet-serve"
    assert 'job="resnet-serve"' in (DEPLOY / "prometheus/alerts.yml").read_text()


def test_dashboard_config_map_is_the_dashboard_for_the_sidecar(
    monitored: list[dict[str, Any]], dashboard: dict[str, Any]
) -> None:
    config_map = one(monitored, "ConfigMap", "resnet-serve-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = config_map["data"].values()
    assert json.loads(text) == dashboard


def test_ingress_limits_follow_the_service(kustomize: Any, tmp_path: Path) -> None:
    objects = overlay_with(kustomize, tmp_path, "cpu", "ingress")
    service = one(objects, "Service")
    ports = {p["name"] for p in service["spec"]["ports"]}
    ingresses = [o for o in objects if o["kind"] == "Ingress"]
    assert {i["metadata"]["name"] for i in ingresses} == {"resnet-serve", "resnet-serve-grpc"}
    fields = Settings.model_fields
    max_body = fields["max_body_bytes"].default
    timeout = fields["request_timeout_s"].default
    for ingress in ingresses:
        notes = ingress["metadata"]["annotations"]
        size = re.fullmatch(r"(\d+)m", notes["nginx.ingress.kubernetes.io/proxy-body-size"])
        assert size and int(size[1]) * 2**20 == max_body, "the service answers 413 itself"
        for name in ("proxy-read-timeout", "proxy-send-timeout"):
            # Longer than the service's deadline: the service answers 504 itself.
            assert timeout < int(notes[f"nginx.ingress.kubernetes.io/{name}"]) <= timeout + 10
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] == service["metadata"]["name"]
                assert backend["port"]["name"] in ports
    grpc = next(i for i in ingresses if i["metadata"]["name"] == "resnet-serve-grpc")
    assert grpc["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPC"
    assert grpc["spec"]["tls"], "ingress-nginx serves gRPC (HTTP/2) to clients over TLS only"


# ----------------------------------------------------------------------------- KServe
@pytest.fixture(scope="module")
def kserve(kustomize: Any) -> dict[str, dict[str, Any]]:
    return by_kind(kustomize(KSERVE))


def runtime_env(kserve: dict[str, dict[str, Any]]) -> dict[str, str]:
    (server,) = kserve["ClusterServingRuntime"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in server["env"]}


def test_runtime_serves_the_v2_protocols_on_kserves_ports(
    kserve: dict[str, dict[str, Any]],
) -> None:
    spec = kserve["ClusterServingRuntime"]["spec"]
    assert spec["protocolVersions"] == ["v2", "grpc-v2"]
    env = runtime_env(kserve)
    assert set(env) <= SETTING_VARIABLES
    assert env["RESNET_SERVE_PORT"] == "8080" and env["RESNET_SERVE_GRPC_PORT"] == "8081"
    # KServe's storage initializer puts the storageUri's folder here.
    assert env["RESNET_SERVE_REPOSITORY"] == "/mnt/models"
    assert env["RESNET_SERVE_HOST"] == "0.0.0.0"
    (server,) = spec["containers"]
    assert server["name"] == "kserve-container", "KServe merges the predictor into this name"
    assert server["args"] == ["serve"]
    assert [p["containerPort"] for p in server["ports"]] == [8080]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["httpGet"]["port"] == 8080
    assert server["startupProbe"]["httpGet"]["path"] == "/health/startup"


#: Model formats other runtimes serve (KServe's own and common custom ones): a runtime
#: that auto-selects one of them takes InferenceServices it was never meant for.
SHARED_FORMATS = {"onnx", "triton", "tensorflow", "pytorch", "sklearn", "xgboost", "lightgbm"}


def test_runtime_claims_only_inference_services_that_ask_for_it(
    kserve: dict[str, dict[str, Any]],
) -> None:
    for model_format in kserve["ClusterServingRuntime"]["spec"]["supportedModelFormats"]:
        if model_format.get("autoSelect"):
            assert model_format["name"] not in SHARED_FORMATS, model_format
    (own,) = kserve["ClusterServingRuntime"]["spec"]["supportedModelFormats"]
    assert own["name"] == kserve["ClusterServingRuntime"]["metadata"]["name"]


def test_inference_service_uses_the_runtime(kserve: dict[str, dict[str, Any]]) -> None:
    model = kserve["InferenceService"]["spec"]["predictor"]["model"]
    assert model["runtime"] == kserve["ClusterServingRuntime"]["metadata"]["name"]
    formats = kserve["ClusterServingRuntime"]["spec"]["supportedModelFormats"]
    assert model["modelFormat"]["name"] in {f["name"] for f in formats}
    assert model["protocolVersion"] in kserve["ClusterServingRuntime"]["spec"]["protocolVersions"]
    env = runtime_env(kserve)
    ports = {p["name"]: p["containerPort"] for p in model["ports"]}
    # KServe gives a port whose name says grpc the h2c app protocol.
    assert ports == {
        "http1": int(env["RESNET_SERVE_PORT"]),
        "grpc": int(env["RESNET_SERVE_GRPC_PORT"]),
    }
    assert kserve["InferenceService"]["spec"]["predictor"]["minReplicas"] >= 2


def kserve_schema(name: str) -> dict[str, Any]:
    path = KSERVE / "schemas" / f"{name}.schema.json.gz"
    return json.loads(gzip.decompress(path.read_bytes()))


def test_kserve_manifests_match_kserves_crd_schemas() -> None:
    # jsonschema-rs comes with the test extra (schemathesis); CI also runs check-jsonschema.
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    pairs = {
        "clusterservingruntime.yaml": "clusterservingruntime-v1alpha1",
        "inferenceservice.yaml": "inferenceservice-v1beta1",
    }
    for file, schema_name in pairs.items():
        validator = jsonschema_rs.validator_for(kserve_schema(schema_name))
        manifest = load_yaml(KSERVE / file)
        errors = [f"{list(e.instance_path)}: {e.message}" for e in validator.iter_errors(manifest)]
        assert errors == [], file
        # Strict like the API server: a misspelt field is refused, or this proves nothing.
        broken = json.loads(json.dumps(manifest))
        broken["spec"]["protocolVersion"] = "v2"
        assert not validator.is_valid(broken), f"{schema_name} accepts unknown fields"


def test_kserve_schemas_are_kserves_kinds() -> None:
    runtime = kserve_schema("clusterservingruntime-v1alpha1")
    assert runtime["properties"]["kind"] == {"const": "ClusterServingRuntime"}
    assert runtime["properties"]["apiVersion"] == {"const": "serving.kserve.io/v1alpha1"}
    spec = runtime["properties"]["spec"]
    assert {"protocolVersions", "supportedModelFormats", "containers"} <= set(spec["properties"])
    assert spec["additionalProperties"] is False
    isvc = kserve_schema("inferenceservice-v1beta1")
    assert isvc["properties"]["kind"] == {"const": "InferenceService"}


# ----------------------------------------------------------------------------- version
def test_every_object_and_pod_carries_the_release_version(kustomize: Any, tmp_path: Path) -> None:
    import service

    renders = {
        overlay: overlay_with(
            kustomize, tmp_path, overlay, "monitoring", "ingress", "hpa-in-flight"
        )
        for overlay in ("cpu", "gpu")
    }
    renders["kserve"] = kustomize(KSERVE)
    renders["kserve files"] = [
        load_yaml(KSERVE / f) for f in ("clusterservingruntime.yaml", "inferenceservice.yaml")
    ]
    for source, objects in renders.items():
        for obj in objects:
            where = f"{source}: {obj['kind']} {obj['metadata']['name']}"
            labels = obj["metadata"].get("labels", {})
            assert labels.get("app.kubernetes.io/version") == service.__version__, where
            template = obj.get("spec", {}).get("template")
            if template is not None:
                pod = template["metadata"]["labels"]
                assert pod.get("app.kubernetes.io/version") == service.__version__, where
            selector = obj.get("spec", {}).get("selector") or {}
            assert "app.kubernetes.io/version" not in selector.get("matchLabels", selector), where
