"""The server-process harness shared by the tests, the benchmarks and the soak script."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from benchmarks.harness import (
    ServerProcess,
    cpu_seconds,
    metric_value,
    peak_rss_bytes,
    percentile,
    rss_bytes,
)

METRICS = """\
# HELP resnet_serve_requests_total Requests.
# TYPE resnet_serve_requests_total counter
resnet_serve_requests_total{model="a",status="200"} 3.0
resnet_serve_requests_total{model="a",status="503"} 2.0
resnet_serve_requests_total{model="b",status="200"} 7.0
"""


def test_metric_value_sums_the_samples_matching_the_labels_given() -> None:
    assert metric_value(METRICS, "resnet_serve_requests_total", model="a") == 5.0
    assert metric_value(METRICS, "resnet_serve_requests_total", status="200") == 10.0
    assert metric_value(METRICS, "resnet_serve_requests_total") == 12.0
    assert metric_value(METRICS, "resnet_serve_requests_total", model="c") == 0.0


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([3.0, 1.0, 2.0], 0.0) == 1.0
    assert math.isnan(percentile([], 0.5))


def test_memory_and_cpu_of_a_process_come_from_proc() -> None:
    pid = os.getpid()
    assert 0 < rss_bytes(pid) <= peak_rss_bytes(pid)
    spent = cpu_seconds(pid)
    sum(i * i for i in range(300_000))  # some CPU work of this very process
    assert cpu_seconds(pid) >= spent > 0


def test_a_server_that_dies_fails_wait_ready_at_once_with_its_log(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-repository"
    server = ServerProcess(missing, tmp_path / "server.log")
    try:
        with pytest.raises(RuntimeError, match="exited with") as failure:
            server.wait_ready(timeout_s=120)
        assert str(missing) in str(failure.value)  # the server's own log is in the error
    finally:
        server.stop(timeout_s=10)


def test_servers_get_their_own_http_and_grpc_ports(tmp_path: Path) -> None:
    first = ServerProcess(tmp_path, tmp_path / "a.log")
    second = ServerProcess(tmp_path, tmp_path / "b.log", grpc_port=18001)
    try:
        environ = Path(f"/proc/{first.process.pid}/environ").read_bytes().split(b"\0")
        assert f"RESNET_SERVE_GRPC_PORT={first.grpc_port}".encode() in environ
        assert second.grpc_port == 18001
        assert len({first.port, first.grpc_port, second.port}) == 3
    finally:
        assert first.stop(timeout_s=30) is not None
        second.stop(timeout_s=30)
