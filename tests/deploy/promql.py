"""What the deployment files ask of the service's metrics, and what the service exports.

Used by the tests in this folder and, against a running container, by
``.ci/deploy-check.sh``::

    python -m tests.deploy.promql --metrics-url http://127.0.0.1:8000/metrics

The PromQL reading is deliberately small: it finds the metric and label names an
expression uses (strings, label matchers, ranges and grouping clauses removed; a name
followed by ``(`` is a function). It is not a parser: promtool and a real Prometheus
check the syntax (``test_prometheus_scrape.py``, ``test_dashboard.py``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "resnet-serve.json"
ALERTS = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"

#: Series every Prometheus has for each target, besides what the target exports.
PROMETHEUS_SERIES = {"up": set(), "scrape_duration_seconds": set()}
#: Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
_KEYWORDS |= {"and", "or", "unless", "offset", "inf", "nan"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{([^}]*)\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_WORD = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_MATCHER_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_GRAFANA_VAR = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")
_LEGEND_LABEL = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")

#: Values a dashboard's variables take when an expression is checked outside Grafana.
GRAFANA_SUBSTITUTES = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
    "job": ".*",
    "model": ".*",
    "protocol": ".*",
}


def substitute_grafana_variables(expr: str) -> str:
    """The expression as Grafana would send it, with every variable given a value."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in GRAFANA_SUBSTITUTES:
            raise ValueError(f"unknown Grafana variable ${name} in {expr!r}")
        return GRAFANA_SUBSTITUTES[name]

    return _GRAFANA_VAR.sub(value, expr)


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _WORD.finditer(text):
        word = match.group(0)
        before = text[match.start() - 1] if match.start() else " "
        if before.isdigit() or before == ".":
            continue  # the exponent or unit of a number: 1e3, 5m
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        if word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def label_names(expr: str) -> set[str]:
    """Label names an expression matches on or groups by."""
    text = _STRING.sub('""', expr)
    labels = set()
    for content in _MATCHERS.findall(text):
        labels.update(_MATCHER_LABEL.findall(content))
    for content in _GROUPING.findall(text):
        labels.update(part.strip() for part in content.split(",") if part.strip())
    return labels


def legend_labels(legend: str) -> set[str]:
    return set(_LEGEND_LABEL.findall(legend))


def exported_series(exposition: str) -> dict[str, set[str]]:
    """Series names (``_total``, ``_bucket``... included) and their label names.

    Names come from the ``# TYPE`` lines, so a metric that has no sample yet (a labelled
    metric nobody observed) still counts; its labels are known once it has samples.
    """
    from prometheus_client.parser import text_string_to_metric_families

    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("", "_sum", "_count"),
        "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
        "info": ("_info",),
    }
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition):
        for suffix in suffixes.get(family.type, ("",)):
            series.setdefault(family.name + suffix, set())
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def service_series() -> dict[str, set[str]]:
    """Series of ``service.metrics.Metrics``, without a server."""
    return defined_series()


def defined_series() -> dict[str, set[str]]:
    """Series of ``service.metrics.Metrics`` alone."""
    from prometheus_client import generate_latest
    from prometheus_client.metrics import MetricWrapperBase

    from service.metrics import Metrics

    metrics = Metrics()
    series = exported_series(generate_latest(metrics.registry).decode())
    # Unobserved labelled metrics expose no samples: take their label names from the
    # definitions (prometheus_client keeps them in `_labelnames`).
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase):
            labels = set(metric._labelnames)
            if metric._type == "histogram":
                labels.add("le")
            if metric._type == "stateset":  # an Enum: its state is a label of its own name
                labels.add(metric._name)
            for name in series:
                if name == metric._name or name.startswith(metric._name + "_"):
                    series[name] |= labels
    return series


def live_series(metrics_url: str, timeout_s: float = 10.0) -> dict[str, set[str]]:
    with urllib.request.urlopen(metrics_url, timeout=timeout_s) as response:
        return exported_series(response.read().decode())


@dataclass(frozen=True)
class Query:
    """One PromQL expression found in a deployment file, and where."""

    where: str
    expr: str
    legend: str = ""
    labels_used: set[str] = field(default_factory=set)


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[Query]:
    def walk(panels: list[dict[str, Any]]) -> Iterator[Query]:
        for panel in panels:
            yield from walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                expr = target.get("expr", "")
                where = f"panel {panel.get('id')} {panel.get('title')!r} {target.get('refId')}"
                yield Query(where, expr, target.get("legendFormat", ""))

    yield from walk(dashboard.get("panels", []))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable["query"]
        query = query.get("query", "") if isinstance(query, dict) else query
        # label_values(<selector>, <label>): the selector is PromQL, the label a name.
        match = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query)
        if match is None:
            raise ValueError(f"variable {variable['name']}: unsupported query {query!r}")
        yield Query(f"variable {variable['name']}", match[1], labels_used={match[2]})


def alert_queries(rules: dict[str, Any]) -> Iterator[Query]:
    for group in rules["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            yield Query(f"rule {group['name']}/{name}", rule["expr"])


def unknown_references(queries: list[Query], series: dict[str, set[str]]) -> list[str]:
    """Every metric or label a query uses that the service (or Prometheus) lacks."""
    known = {**PROMETHEUS_SERIES, **series}
    problems = []
    for query in queries:
        names = metric_names(query.expr)
        if not names:
            problems.append(f"{query.where}: selects no metric: {query.expr!r}")
        missing = sorted(names - known.keys())
        if missing:
            problems.append(f"{query.where}: metrics not exported by the service: {missing}")
        labels = set().union(*(known.get(n, set()) for n in names)) | TARGET_LABELS
        used = label_names(query.expr) | legend_labels(query.legend) | query.labels_used
        if used - labels:
            problems.append(f"{query.where}: labels {sorted(used - labels)} not on {sorted(names)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metrics-url", help="a live /metrics (default: service/metrics.py)")
    parser.add_argument("--dashboard", type=Path, default=DASHBOARD)
    parser.add_argument("--alerts", type=Path, default=ALERTS)
    args = parser.parse_args(argv)

    import yaml

    series = live_series(args.metrics_url) if args.metrics_url else service_series()
    source = args.metrics_url or "service/metrics.py"
    queries = list(dashboard_queries(json.loads(args.dashboard.read_text())))
    queries += alert_queries(yaml.safe_load(args.alerts.read_text()))
    problems = unknown_references(queries, series)
    for problem in problems:
        print(problem, file=sys.stderr)
    used = set().union(*(metric_names(q.expr) for q in queries))
    print(
        f"{len(queries)} queries in {args.dashboard.name} and {args.alerts.name} use "
        f"{len(used)} series, checked against {len(series)} from {source}: "
        f"{'ok' if not problems else f'{len(problems)} problem(s)'}"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
