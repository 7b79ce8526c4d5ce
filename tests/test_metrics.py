"""The exported metric names: unit last, no ``_created`` series, old names gone."""

from __future__ import annotations

import re

from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from service.metrics import PREFIX, Metrics

#: Families whose last word is not a unit, on purpose: counts and states.
#: Counts of things (the thing is the unit), info and state series.
UNITLESS = {
    "requests",
    "images",
    "batch_size",
    "queue_depth",
    "model_info",
    "model_ready",
    "model_loads",
    "model_unloads",
    "model_state",
    "gate_outcome",
}
UNITS = ("_seconds", "_bytes", "_requests")
#: Renamed in 0.x (CHANGELOG): the unit moved to the end.
OLD_NAMES = (
    "resnet_serve_body_bytes_in_flight",
    "resnet_serve_body_bytes_budget",
    "resnet_serve_decode_bytes_in_flight",
    "resnet_serve_decode_bytes_budget",
)


def observed() -> Metrics:
    metrics = Metrics()
    metrics.requests.labels("m", "1", "classify", "200").inc()
    metrics.request_duration.labels("m", "1", "classify").observe(0.01)
    metrics.body_bytes_in_flight.set(10)
    return metrics


def test_every_service_metric_ends_with_its_unit() -> None:
    for family in observed().registry.collect():
        if not family.name.startswith(PREFIX):
            continue
        short = family.name.removeprefix(f"{PREFIX}_")
        assert short in UNITLESS or short.endswith(UNITS), family.name


def test_no_created_series_in_either_format() -> None:
    metrics = observed()
    for text in (generate_latest(metrics.registry), generate_openmetrics(metrics.registry)):
        assert not re.search(rb"^\w+_created", text, re.MULTILINE), text.decode()


def test_budget_gauges_export_unit_last_names_and_not_the_old_ones() -> None:
    text = generate_latest(observed().registry).decode()
    assert "resnet_serve_body_in_flight_bytes 10.0" in text
    for name in ("body_budget_bytes", "decode_in_flight_bytes", "decode_budget_bytes"):
        assert f"resnet_serve_{name} " in text, name
    for old in OLD_NAMES:
        assert old not in text, old
