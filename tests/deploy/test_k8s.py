"""The rendered kustomize overlays, read as data.

Schema validation (kubernetes-validate --strict, the Prometheus Operator and KServe CRD
schemas) runs in .ci/deploy-check.sh; these tests check that the pieces fit together and
fit the service.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from service.settings import Settings
from tests.deploy.conftest import K8S, SETTING_VARIABLES, load_yaml

OVERLAYS = ("cpu", "gpu")
KIND_ORDER = ("ConfigMap", "Service", "Deployment", "PodDisruptionBudget")
#: API groups every cluster serves: the overlays must apply without any operator.
BUILT_IN_API_VERSIONS = {
    "v1",
    "apps/v1",
    "policy/v1",
    "autoscaling/v2",
    "networking.k8s.io/v1",
}
#: The longest a batch may still run when the drain ends: a 64-image ResNet-50 batch on
#: a 4-core pod takes ~3 s; x3 for a throttled node.
LONGEST_BATCH_S = 10


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds: dict[str, dict[str, Any]] = {}
    for obj in objects:
        assert obj["kind"] not in kinds, f"two {obj['kind']} objects"
        kinds[obj["kind"]] = obj
    return kinds


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest, kustomize: Any) -> dict[str, dict[str, Any]]:
    return by_kind(kustomize(K8S / "overlays" / request.param))


def container(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (only,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    return only


def pod_labels(objects: dict[str, dict[str, Any]]) -> dict[str, str]:
    return objects["Deployment"]["spec"]["template"]["metadata"]["labels"]


def quantity(value: str | int) -> float:
    """CPU and memory quantities: 500m, 2, 1536Mi, 3Gi."""
    units = {"m": 1e-3, "": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6}
    number, unit = re.fullmatch(r"([\d.]+)([a-zA-Z]*)", str(value)).groups()  # type: ignore[union-attr]
    return float(number) * units[unit]


def overlay_with(kustomize: Any, tmp_path: Path, overlay: str, *components: str) -> Any:
    """An overlay rendered with components added (kustomize wants relative paths)."""
    folder = tmp_path / f"{overlay}-{'-'.join(components)}"
    folder.mkdir()
    lines = [f"resources:\n  - {os.path.relpath(K8S / 'overlays' / overlay, folder)}\n"]
    lines.append("components:\n")
    lines += [f"  - {os.path.relpath(K8S / 'components' / c, folder)}\n" for c in components]
    (folder / "kustomization.yaml").write_text("".join(lines))
    return kustomize(folder)


def test_every_overlay_has_the_expected_objects(rendered: dict[str, dict[str, Any]]) -> None:
    assert set(rendered) == {*KIND_ORDER, "HorizontalPodAutoscaler", "NetworkPolicy"}


def test_overlays_apply_on_a_plain_cluster(rendered: dict[str, dict[str, Any]]) -> None:
    """No custom resources: `kubectl apply -k` must not need the Prometheus Operator."""
    for obj in rendered.values():
        assert obj["apiVersion"] in BUILT_IN_API_VERSIONS, f"{obj['kind']} {obj['apiVersion']}"


def test_probes_ask_the_health_endpoints_on_the_serving_port(
    rendered: dict[str, dict[str, Any]],
) -> None:
    c = container(rendered)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    # startup: passes once models loaded and warmed (it bounds loading); live: the
    # process answers and something serves; ready: traffic welcome.
    expected = {"startupProbe": "/health/startup", "livenessProbe": "/health/live"}
    expected["readinessProbe"] = "/health/ready"
    for probe, path in expected.items():
        get = c[probe]["httpGet"]
        assert get["path"] == path, probe
        assert get["port"] in ports, f"{probe} port {get['port']} is not a container port"
    settings = rendered["ConfigMap"]["data"]
    assert ports[c["livenessProbe"]["httpGet"]["port"]] == int(settings["RESNET_SERVE_PORT"])
    assert settings["RESNET_SERVE_HOST"] == "0.0.0.0", "probes come from outside the pod"


def test_grace_period_outlasts_pre_stop_and_drain(rendered: dict[str, dict[str, Any]]) -> None:
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    pre_stop = container(rendered)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = float(
        rendered["ConfigMap"]["data"].get(
            "RESNET_SERVE_DRAIN_TIMEOUT_S", Settings.model_fields["drain_timeout_s"].default
        )
    )
    # The grace period counts from the preStop hook; the batch running when the drain
    # ends finishes, and the process needs a moment to exit.
    needed = float(pre_stop[1]) + drain + LONGEST_BATCH_S + 5
    assert pod["terminationGracePeriodSeconds"] >= needed


def test_settings_are_real_settings_and_reach_the_container(
    rendered: dict[str, dict[str, Any]],
) -> None:
    config_map = rendered["ConfigMap"]
    assert set(config_map["data"]) <= SETTING_VARIABLES
    c = container(rendered)
    assert {e["name"] for e in c["env"]} <= SETTING_VARIABLES
    (source,) = c["envFrom"]
    assert source["configMapRef"]["name"] == config_map["metadata"]["name"]
    assert config_map["data"]["RESNET_SERVE_REPOSITORY"] == "/models", "where the image has them"


def test_thread_counts_follow_the_cpu_limit(rendered: dict[str, dict[str, Any]]) -> None:
    env = {e["name"]: e for e in container(rendered)["env"]}
    for name in ("RESNET_SERVE_INTRA_OP_THREADS", "RESNET_SERVE_DECODE_THREADS"):
        ref = env[name]["valueFrom"]["resourceFieldRef"]
        assert ref["resource"] == "limits.cpu"
        assert ref["containerName"] == container(rendered)["name"]


def test_selectors_match_the_pods_and_the_service(rendered: dict[str, dict[str, Any]]) -> None:
    labels = pod_labels(rendered)
    for kind in ("Deployment", "PodDisruptionBudget"):
        selector = rendered[kind]["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items(), kind
    assert rendered["Service"]["spec"]["selector"].items() <= labels.items()

    container_ports = {p["name"]: p["containerPort"] for p in container(rendered)["ports"]}
    service_ports = {p["name"]: p for p in rendered["Service"]["spec"]["ports"]}
    assert set(service_ports) == {"http", "grpc"}
    for name, port in service_ports.items():
        assert port["targetPort"] == name and name in container_ports
    settings = rendered["ConfigMap"]["data"]
    assert container_ports["http"] == int(settings["RESNET_SERVE_PORT"])
    assert container_ports["grpc"] == int(settings["RESNET_SERVE_GRPC_PORT"])
    assert service_ports["grpc"]["appProtocol"] == "kubernetes.io/h2c"


def test_scrape_annotations_name_the_metrics_port(rendered: dict[str, dict[str, Any]]) -> None:
    annotations = rendered["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    ports = [p["containerPort"] for p in container(rendered)["ports"]]
    assert int(annotations["prometheus.io/port"]) in ports


def test_autoscaler_owns_the_replica_count(rendered: dict[str, dict[str, Any]]) -> None:
    hpa = rendered["HorizontalPodAutoscaler"]["spec"]
    deployment = rendered["Deployment"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert "replicas" not in deployment["spec"], "would reset the HPA's count on every apply"
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    (cpu,) = [m for m in hpa["metrics"] if m["type"] == "Resource"]
    assert cpu["resource"]["name"] == "cpu"
    assert 0 < cpu["resource"]["target"]["averageUtilization"] <= 100
    # CPU utilisation is relative to the request: there must be one.
    assert "cpu" in container(rendered)["resources"]["requests"]


def test_rollouts_and_disruptions_keep_capacity(rendered: dict[str, dict[str, Any]]) -> None:
    strategy = rendered["Deployment"]["spec"]["strategy"]
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0
    assert strategy["rollingUpdate"]["maxSurge"] == 1
    pdb = rendered["PodDisruptionBudget"]["spec"]
    assert pdb.get("maxUnavailable") == 1
    # A drain evicts one pod at a time; with one replica that one is the service.
    assert rendered["HorizontalPodAutoscaler"]["spec"]["minReplicas"] >= 2


def test_replicas_spread_over_nodes_and_zones(rendered: dict[str, dict[str, Any]]) -> None:
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    constraints = {c["topologyKey"]: c for c in pod["topologySpreadConstraints"]}
    assert set(constraints) == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    # Hard on nodes (every node has the label), soft on zones (not every cluster has).
    assert constraints["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"
    assert constraints["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == "ScheduleAnyway"
    for constraint in constraints.values():
        assert constraint["maxSkew"] == 1
        selector = constraint["labelSelector"]["matchLabels"]
        assert selector.items() <= pod_labels(rendered).items()
        assert constraint["matchLabelKeys"] == ["pod-template-hash"]


def test_no_service_account_token_and_api_key_from_a_file(
    rendered: dict[str, dict[str, Any]],
) -> None:
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    env = {e["name"]: e for e in container(rendered)["env"]}
    assert "RESNET_SERVE_API_KEY" not in env, "a key in the environment shows in describe"
    key_file = Path(env["RESNET_SERVE_API_KEY_FILE"]["value"])
    (mount,) = [m for m in container(rendered)["volumeMounts"] if m["name"] == "api-key"]
    assert mount["readOnly"] is True and Path(mount["mountPath"]) == key_file.parent
    (volume,) = [v for v in pod["volumes"] if v["name"] == "api-key"]
    assert volume["secret"]["secretName"] == "resnet-serve-api-key"
    assert [i["path"] for i in volume["secret"]["items"]] == [key_file.name]
    # Readable by the pod's group only (fsGroup), not by the world.
    assert volume["secret"]["defaultMode"] & 0o007 == 0
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]


def test_network_policy_admits_only_the_serving_ports(rendered: dict[str, dict[str, Any]]) -> None:
    policy = rendered["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels(rendered).items()
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    allowed = {p["port"] for p in rule["ports"]}
    # /metrics is served on the HTTP port: the scrape needs no port of its own.
    assert allowed == {p["name"] for p in container(rendered)["ports"]} == {"http", "grpc"}
    annotations = rendered["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    (http,) = [p for p in container(rendered)["ports"] if p["name"] == "http"]
    assert int(annotations["prometheus.io/port"]) == http["containerPort"]


def test_memory_limit_covers_the_budgets(rendered: dict[str, dict[str, Any]]) -> None:
    """Peak RSS <= idle + body budget + decode budget + request heads + gRPC messages
    + batch tensors (DEPLOY.md); settings the ConfigMap leaves out take their defaults."""
    settings = rendered["ConfigMap"]["data"]

    def setting(name: str) -> int:
        value = settings.get(f"RESNET_SERVE_{name.upper()}")
        return int(value) if value is not None else int(Settings.model_fields[name].default)

    body = setting("max_body_bytes_in_flight")
    decode = setting("max_decode_bytes_in_flight")
    heads = setting("max_connections") * setting("max_header_bytes")
    grpc = setting("grpc_max_concurrent_rpcs") * setting("grpc_max_message_bytes")
    batch = int(settings["RESNET_SERVE_MAX_BATCH_SIZE"])
    # Idle ResNet-50 process with its ONNX Runtime arena (measured: ~0.85 GB resident
    # at 32-image batches, docs/DEPLOY.md), plus the input tensors of two batches.
    idle = 0.9 * 2**30
    tensors = 2 * batch * 3 * 224 * 224 * 4
    limit = quantity(container(rendered)["resources"]["limits"]["memory"])
    assert idle + body + decode + heads + grpc + tensors <= limit


def test_resources_have_requests_within_limits(rendered: dict[str, dict[str, Any]]) -> None:
    resources = container(rendered)["resources"]
    for name in ("cpu", "memory"):
        assert quantity(resources["requests"][name]) <= quantity(resources["limits"][name])


def test_pods_run_unprivileged_as_the_image_user(rendered: dict[str, dict[str, Any]]) -> None:
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    dockerfile = (K8S.parent / "Dockerfile").read_text()
    (image_user,) = re.findall(r"^USER (\d+)", dockerfile, re.MULTILINE)
    assert pod["securityContext"]["runAsUser"] == int(image_user)
    security = container(rendered)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"] for m in container(rendered)["volumeMounts"]}
    assert "/tmp" in mounts, "a read-only root needs a writable /tmp"


def test_gpu_overlay_scales_on_in_flight_requests_and_starts_strict(
    kustomize: Any, service_metrics: dict[str, set[str]]
) -> None:
    gpu = by_kind(kustomize(K8S / "overlays" / "gpu"))
    hpa = gpu["HorizontalPodAutoscaler"]["spec"]
    (pods,) = [m for m in hpa["metrics"] if m["type"] == "Pods"]
    assert pods["pods"]["metric"]["name"] == "resnet_serve_in_flight_requests"
    assert pods["pods"]["metric"]["name"] in service_metrics
    assert hpa["minReplicas"] >= 2
    assert gpu["ConfigMap"]["data"]["RESNET_SERVE_STRICT"] == "true"
    # Five minutes for the CUDA set-up and warm-up, on the endpoint that waits for them.
    probe = container(gpu)["startupProbe"]
    assert probe["httpGet"]["path"] == "/health/startup"
    assert probe["periodSeconds"] * probe["failureThreshold"] == 300


def test_gpu_overlay_asks_for_a_gpu_on_gpu_nodes_and_cpu_does_not(kustomize: Any) -> None:
    gpu = by_kind(kustomize(K8S / "overlays" / "gpu"))
    cpu = by_kind(kustomize(K8S / "overlays" / "cpu"))
    resources = container(gpu)["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "1"
    pod = gpu["Deployment"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert container(gpu)["image"].endswith(":gpu")
    assert container(cpu)["image"].endswith(":cpu")
    assert "nvidia.com/gpu" not in str(cpu["Deployment"])
    # The GPU image picks CUDA itself; a CPU-only provider list here would waste the GPU.
    assert "CPUExecutionProvider" not in gpu["ConfigMap"]["data"].get("RESNET_SERVE_PROVIDERS", "")


def test_in_flight_component_scales_on_a_metric_the_service_exports(
    kustomize: Any, tmp_path: Path, service_metrics: dict[str, set[str]]
) -> None:
    component = K8S / "components" / "hpa-in-flight"
    overlay = K8S / "overlays" / "cpu"
    # kustomize wants relative paths: a throwaway kustomization beside nothing.
    (tmp_path / "kustomization.yaml").write_text(
        f"resources:\n  - {os.path.relpath(overlay, tmp_path)}\n"
        f"components:\n  - {os.path.relpath(component, tmp_path)}\n"
    )
    hpa = by_kind(kustomize(tmp_path))["HorizontalPodAutoscaler"]["spec"]
    (pods,) = [m for m in hpa["metrics"] if m["type"] == "Pods"]
    metric = pods["pods"]["metric"]["name"]
    assert metric in service_metrics
    assert any(m["type"] == "Resource" for m in hpa["metrics"]), "CPU stays a signal"

    adapter = load_yaml(component / "prometheus-adapter-values.yaml")
    served = set()
    for rule in adapter["rules"]["custom"]:
        (series,) = re.findall(r"^(\w+)\{", rule["seriesQuery"])
        assert series in service_metrics
        assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
        served.add(rule["name"]["as"])
    assert metric in served, "the HPA asks for a metric the adapter does not serve"
