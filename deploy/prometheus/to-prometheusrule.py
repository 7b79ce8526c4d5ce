"""Render deploy/prometheus/alerts.yml as a Prometheus Operator PrometheusRule.

The rules are written once, in alerts.yml (promtool-checked and unit-tested there); the
Kubernetes copy is generated from it, never edited by hand::

    python deploy/prometheus/to-prometheusrule.py          # rewrite the committed file
    python deploy/prometheus/to-prometheusrule.py --check  # CI: fail if it is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # deploy/, run as a file
from generated import write_or_check

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "deploy" / "prometheus" / "alerts.yml"
TARGET = ROOT / "k8s" / "components" / "monitoring" / "prometheusrule.yaml"
HEADER = """\
# GENERATED from deploy/prometheus/alerts.yml by deploy/prometheus/to-prometheusrule.py:
# edit alerts.yml and rerun the script (CI fails when this file is stale).
# kube-prometheus-stack's Prometheus selects rules labelled `release: <its release>`
# unless ruleSelectorNilUsesHelmValues=false: add the label in your overlay if needed.
"""


class _BlockStyleDumper(yaml.SafeDumper):
    """Multi-line strings (PromQL) as `|` blocks, as they are written in alerts.yml."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockStyleDumper.add_representer(str, _str)


def prometheus_rule(alerts: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "resnet-serve"},
        "spec": {"groups": alerts["groups"]},
    }


def render(source: Path = SOURCE) -> str:
    alerts = yaml.safe_load(source.read_text(encoding="utf-8"))
    body = yaml.dump(prometheus_rule(alerts), Dumper=_BlockStyleDumper, sort_keys=False, width=1000)
    return HEADER + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    rendered = render()
    return write_or_check(
        TARGET,
        rendered,
        source=SOURCE,
        script="deploy/prometheus/to-prometheusrule.py",
        check=args.check,
    )


if __name__ == "__main__":
    sys.exit(main())
