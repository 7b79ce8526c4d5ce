"""A real Prometheus scrapes a real server: the metrics arrive, the alerts and the
dashboard's queries run on them.

Needs the ``prometheus`` binary (Debian package ``prometheus``). Without it the test
skips, unless ``RESNET_SERVE_REQUIRE_PROMETHEUS=1`` (CI), where it fails. Everything
listens on 127.0.0.1 with ephemeral ports; waits are bounded.
"""

from __future__ import annotations

import io
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from PIL import Image

from benchmarks.harness import ServerProcess, free_port, wait_http_ok
from tests.deploy.conftest import DEPLOY, require_tool
from tests.deploy.promql import dashboard_queries, substitute_grafana_variables

SCRAPE_INTERVAL = "1s"
#: Server start-up and Prometheus start-up are separate; this bounds what follows them.
SCRAPE_TIMEOUT_S = 60.0
#: Gauges that have a value as soon as a model is served, so their panels show data.
ALWAYS_PRESENT = (
    "resnet_serve_model_info",
    "resnet_serve_model_ready",
    "resnet_serve_queue_depth",
    "resnet_serve_in_flight_requests",
)


class Prometheus:
    """``prometheus`` on 127.0.0.1 with a generated config; stopped by :meth:`stop`."""

    def __init__(self, binary: str, folder: Path, config: dict[str, Any]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config_path = folder / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.log_path = folder / "prometheus.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def logs(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        wait_http_ok(f"{self.url}/-/ready", self.process, timeout_s, self.logs)

    def api(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        assert body["status"] == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        return data["result"] if isinstance(data["result"], list) else [data["result"]]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def wait_for(what: str, check: Callable[[], bool], prometheus: Prometheus, deadline: float) -> None:
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what}: not seen within {SCRAPE_TIMEOUT_S}s\n{prometheus.logs()}"
            )
        time.sleep(0.5)


@pytest.fixture
def prometheus_binary() -> str:
    return require_tool("prometheus", "RESNET_SERVE_REQUIRE_PROMETHEUS")


@pytest.fixture
def scraped_server(
    model_repository: Path,
    start_server: Callable[..., ServerProcess],
    prometheus_binary: str,
    tmp_path: Path,
) -> Iterator[tuple[ServerProcess, Prometheus]]:
    server = start_server(model_repository)
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        # The repo's alert rules, as compose's Prometheus loads them.
        "rule_files": [str(DEPLOY / "prometheus" / "alerts.yml")],
        "scrape_configs": [
            {
                "job_name": "resnet-serve",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [f"127.0.0.1:{server.port}"]}],
            }
        ],
    }
    prometheus = Prometheus(prometheus_binary, tmp_path, config)
    try:
        prometheus.wait_ready()
        yield server, prometheus
    finally:
        prometheus.stop()


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_prometheus_scrapes_requests_and_model_info(
    scraped_server: tuple[ServerProcess, Prometheus], dashboard: dict[str, Any]
) -> None:
    server, prometheus = scraped_server
    ok = httpx.post(
        f"{server.url}/classify", files={"file": ("a.png", png_bytes(), "image/png")}, timeout=30
    )
    assert ok.status_code == 200, ok.text
    bad = httpx.post(
        f"{server.url}/classify", files={"file": ("b.png", b"not an image", "image/png")}
    )
    assert 400 <= bad.status_code < 500, bad.text
    deadline = time.monotonic() + SCRAPE_TIMEOUT_S

    def requests_by_code() -> dict[str, float]:
        series = prometheus.query('resnet_serve_requests_total{job="resnet-serve"}')
        return {s["metric"]["code"]: float(s["value"][1]) for s in series}

    wait_for(
        "resnet_serve_requests_total for 200 and 4xx",
        lambda: (
            requests_by_code().get("200", 0) >= 1
            and requests_by_code().get(str(bad.status_code), 0) >= 1
        ),
        prometheus,
        deadline,
    )
    (info,) = prometheus.query('resnet_serve_model_info{job="resnet-serve"}')
    assert info["metric"]["model"] == "resnet18"
    assert info["metric"]["engine"] == "onnxruntime"
    assert info["metric"]["instance"] == f"127.0.0.1:{server.port}"
    assert float(info["value"][1]) == 1
    (up,) = prometheus.query('up{job="resnet-serve"}')
    assert float(up["value"][1]) == 1
    images = prometheus.query('sum(resnet_serve_images_total{job="resnet-serve"})')
    assert float(images[0]["value"][1]) >= 1

    # The repo's alert rules load and evaluate on real data (a bad expression would
    # make a rule's health "err"), and none fires on a healthy server.
    def rules_evaluated() -> bool:
        # Evaluated, and since the first scrape: an evaluation before it sees no `up` and
        # leaves ResnetServeAbsent pending until the next one.
        groups = prometheus.api("rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return bool(rules) and all(
            r["health"] != "unknown" and r["state"] == "inactive" for r in rules
        )

    wait_for("alert rule evaluation", rules_evaluated, prometheus, deadline)
    (group,) = prometheus.api("rules")["groups"]
    assert group["name"] == "resnet-serve"
    for rule in group["rules"]:
        assert rule["health"] == "ok", rule
        assert rule["state"] == "inactive", rule

    # Every dashboard query runs; the ones on always-present gauges return data.
    for query in dashboard_queries(dashboard):
        result = prometheus.query(substitute_grafana_variables(query.expr))
        if query.where.startswith("variable") or any(g in query.expr for g in ALWAYS_PRESENT):
            assert result, f"{query.where}: no data for {query.expr!r}"
