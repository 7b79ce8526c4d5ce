"""The Grafana dashboard and provisioning files, and the alert rules, read as data."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, load_yaml, require_tool
from tests.deploy.promql import (
    GRAFANA_SUBSTITUTES,
    alert_queries,
    dashboard_queries,
    metric_names,
    substitute_grafana_variables,
    unknown_references,
)

GRAFANA_BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range"}
#: The front doors, as the `protocol` label names them.
PROTOCOLS = ("classify", "v2-rest", "v2-grpc")


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def exprs(dashboard: dict[str, Any]) -> list[str]:
    return [q.expr for q in dashboard_queries(dashboard)]


def test_dashboard_uses_only_metrics_and_labels_the_service_exports(
    dashboard: dict[str, Any], service_metrics: dict[str, set[str]]
) -> None:
    assert unknown_references(list(dashboard_queries(dashboard)), service_metrics) == []


def test_alert_rules_use_only_metrics_and_labels_the_service_exports(
    service_metrics: dict[str, set[str]],
) -> None:
    rules = load_yaml(DEPLOY / "prometheus" / "alerts.yml")
    assert unknown_references(list(alert_queries(rules)), service_metrics) == []


def test_reference_check_catches_a_renamed_metric(service_metrics: dict[str, set[str]]) -> None:
    dashboard = {
        "panels": [
            {
                "id": 1,
                "title": "t",
                "targets": [
                    {"refId": "A", "expr": "rate(resnet_serve_request_total[1m])"},
                    {"refId": "B", "expr": 'sum by (status) (resnet_serve_queue_depth{x="1"})'},
                ],
            }
        ]
    }
    problems = unknown_references(list(dashboard_queries(dashboard)), service_metrics)
    assert any("resnet_serve_request_total" in p for p in problems)
    assert any("'status'" in p and "'x'" in p for p in problems)


def test_dashboard_shows_what_operators_need(dashboard: dict[str, Any]) -> None:
    queries = exprs(dashboard)
    joined = "\n".join(queries)
    for needed in (
        "rate(resnet_serve_requests_total",
        "rate(resnet_serve_images_total",
        "resnet_serve_batch_size_bucket",
        "resnet_serve_queue_depth",
        "resnet_serve_in_flight_requests",
        "resnet_serve_model_info",
    ):
        assert needed in joined, needed
    latency = "sum by (model, le) (rate(resnet_serve_request_duration_seconds_bucket"
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, {latency}" in joined
    # Queue wait and inference time side by side, in one panel.
    assert any(
        {"resnet_serve_queue_wait_seconds_bucket", "resnet_serve_inference_duration_seconds_bucket"}
        <= set().union(*(metric_names(t["expr"]) for t in panel.get("targets", [])))
        for panel in all_panels(dashboard)
    )
    # Errors split by status code.
    assert any(
        "by (code)" in q and 'code!~"2.."' in q and "resnet_serve_requests_total" in q
        for q in queries
    )


def test_panel_ids_are_unique_and_the_layout_fits_the_grid(dashboard: dict[str, Any]) -> None:
    panels = all_panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    boxes = []
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] >= 0 and pos["y"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, f"{panel['title']} is wider than the grid"
        boxes.append((pos["x"], pos["y"], pos["x"] + pos["w"], pos["y"] + pos["h"], panel["title"]))
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            overlap = a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
            assert not overlap, f"panels {a[4]!r} and {b[4]!r} overlap"


def test_every_query_uses_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in all_panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]


def test_every_variable_used_is_defined(dashboard: dict[str, Any]) -> None:
    defined = {v["name"] for v in dashboard["templating"]["list"]} | GRAFANA_BUILTIN_VARIABLES
    for expr in exprs(dashboard):
        used = {a or b for a, b in re.findall(r"\$(?:\{(\w+)[^}]*\}|(\w+))", expr)}
        assert used <= defined, f"undefined variables {used - defined} in {expr!r}"
    assert defined <= set(GRAFANA_SUBSTITUTES) | {"datasource"}


def test_dashboard_queries_are_valid_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """promtool parses each query as a recording rule (Grafana variables substituted)."""
    promtool = require_tool("promtool", "RESNET_SERVE_REQUIRE_PROMETHEUS")
    rules = [
        {"record": f"dashboard:query_{i}", "expr": substitute_grafana_variables(expr)}
        for i, expr in enumerate(exprs(dashboard))
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr

    broken = path.with_name("broken.yml")
    broken.write_text(yaml.safe_dump({"groups": [{"name": "b", "rules": [
        {"record": "b:x", "expr": "sum by (le (rate(x[1m]))"}]}]}))  # fmt: skip
    out = subprocess.run([promtool, "check", "rules", str(broken)], capture_output=True)
    assert out.returncode != 0, "promtool accepted broken PromQL: the check above proves nothing"


def test_alert_rules_pass_promtool_and_their_unit_tests() -> None:
    promtool = require_tool("promtool", "RESNET_SERVE_REQUIRE_PROMETHEUS")
    folder = DEPLOY / "prometheus"
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"]):
        out = subprocess.run([promtool, *args], cwd=folder, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr


def test_prometheus_config_passes_promtool() -> None:
    promtool = require_tool("promtool", "RESNET_SERVE_REQUIRE_PROMETHEUS")
    out = subprocess.run(
        [promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_grafana_provisioning_matches_compose(
    compose: dict[str, Any], dashboard: dict[str, Any]
) -> None:
    grafana = compose["services"]["grafana"]
    mounts = dict(v.rsplit(":", 2)[:2] for v in grafana["volumes"] if v.startswith("./"))
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"

    datasources = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")
    assert datasources["apiVersion"] == 1
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090", "must be the compose service and its port"
    assert "prometheus" in compose["services"]
    prometheus_port = compose["services"]["prometheus"]["ports"][0].rsplit(":", 1)[1]
    assert prometheus_port == "9090"
    # The dashboard's datasource variable defaults to the provisioned datasource.
    variable = next(v for v in dashboard["templating"]["list"] if v["name"] == "datasource")
    assert variable["current"]["value"] == source["uid"]
    # $__rate_interval is computed from the scrape interval Grafana is told about.
    scrape = load_yaml(DEPLOY / "prometheus/prometheus.yml")["global"]["scrape_interval"]
    assert source["jsonData"]["timeInterval"] == scrape

    providers = load_yaml(DEPLOY / "grafana/provisioning/dashboards/resnet-serve.yml")
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == provider["options"]["path"] + "/resnet-serve.json"
    assert (DEPLOY / "grafana/dashboards/resnet-serve.json").is_file()


@pytest.mark.parametrize("path", sorted((DEPLOY / "grafana").rglob("*.json")), ids=str)
def test_every_dashboard_file_has_a_stable_uid(path: Path) -> None:
    data = json.loads(path.read_text())
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", data["uid"])
    assert data["schemaVersion"] >= 36


def test_dashboard_splits_traffic_latency_and_errors_by_protocol(
    dashboard: dict[str, Any],
) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    protocol = variables["protocol"]
    assert protocol["includeAll"] and protocol["allValue"] == ".*"
    for name in PROTOCOLS:
        assert name in protocol["description"]
    queries = exprs(dashboard)
    panel_queries = [q.expr for q in dashboard_queries(dashboard) if q.where.startswith("panel")]
    # Every panel query on a per-door metric follows the variable.
    for query in panel_queries:
        for metric in ("resnet_serve_requests_total", "resnet_serve_request_duration_seconds"):
            if metric in query and "job=~" in query:
                assert 'protocol=~"$protocol"' in query, query
    joined = "\n".join(queries)
    assert "sum by (protocol) (rate(resnet_serve_requests_total" in joined
    assert "sum by (protocol, le) (rate(resnet_serve_request_duration_seconds_bucket" in joined
    assert "sum by (protocol, code) (rate(resnet_serve_requests_total" in joined


def test_dashboard_shows_budgets_against_capacity_and_the_running_batch(
    dashboard: dict[str, Any],
) -> None:
    panel_metrics = [
        set().union(*(metric_names(t["expr"]) for t in panel.get("targets", [])))
        for panel in all_panels(dashboard)
    ]
    for budget in ("body", "decode"):
        pair = {f"resnet_serve_{budget}_in_flight_bytes", f"resnet_serve_{budget}_budget_bytes"}
        assert any(pair <= used for used in panel_metrics), f"{budget}: use and budget together"
    assert any("resnet_serve_batch_running_seconds" in used for used in panel_metrics)


def test_error_ratio_panel_counts_what_the_alert_counts(dashboard: dict[str, Any]) -> None:
    """503 (overload) and 499 (hang-ups) out, as in ResnetServeHighErrorRate."""
    (panel,) = [p for p in all_panels(dashboard) if p["title"].startswith("5xx ratio")]
    (target,) = panel["targets"]
    rules = load_yaml(DEPLOY / "prometheus" / "alerts.yml")["groups"][0]["rules"]
    (alert,) = [r for r in rules if r.get("alert") == "ResnetServeHighErrorRate"]
    for matcher in ('code!="503"', 'code!="499"'):
        assert matcher in target["expr"] and matcher in alert["expr"]


def test_every_alert_links_its_runbook_section() -> None:
    rules = load_yaml(DEPLOY / "prometheus" / "alerts.yml")["groups"][0]["rules"]
    deploy_md = (DEPLOY.parent / "docs" / "DEPLOY.md").read_text()
    # GitHub's anchors: headings lower-cased, punctuation dropped, spaces to dashes.
    anchors = {
        re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", deploy_md, re.MULTILINE)
    }
    for rule in rules:
        url = rule["annotations"]["runbook_url"]
        page, _, anchor = url.partition("#")
        assert page == "docs/DEPLOY.md", url
        assert anchor == rule["alert"].lower(), url
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in docs/DEPLOY.md"
