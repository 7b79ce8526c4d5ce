"""Render the Grafana dashboard as a ConfigMap for the Grafana sidecar (Kubernetes).

kube-prometheus-stack's Grafana (and the grafana chart with `sidecar.dashboards.enabled`)
loads every ConfigMap labelled ``grafana_dashboard: "1"``. The dashboard is written once,
in deploy/grafana/dashboards/resnet-serve.json; this copy is generated::

    python deploy/grafana/to-configmap.py          # rewrite the committed file
    python deploy/grafana/to-configmap.py --check  # CI: fail if it is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # deploy/, run as a file
from generated import write_or_check

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "deploy" / "grafana" / "dashboards" / "resnet-serve.json"
TARGET = ROOT / "k8s" / "components" / "monitoring" / "dashboard-configmap.yaml"
HEADER = """\
# GENERATED from deploy/grafana/dashboards/resnet-serve.json by
# deploy/grafana/to-configmap.py: edit the JSON and rerun the script (CI fails when this
# file is stale).
"""


def render(source: Path = SOURCE) -> str:
    # Re-serialised compactly: the sidecar reads JSON, and the one-line form keeps the
    # ConfigMap far below the 256 KiB that client-side `kubectl apply` can annotate.
    dashboard = json.dumps(json.loads(source.read_text(encoding="utf-8")), sort_keys=False)
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "resnet-serve-dashboard",
            "labels": {"grafana_dashboard": "1"},
        },
        "data": {source.name: dashboard},
    }
    return HEADER + yaml.safe_dump(config_map, sort_keys=False, width=1000)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    rendered = render()
    return write_or_check(
        TARGET, rendered, source=SOURCE, script="deploy/grafana/to-configmap.py", check=args.check
    )


if __name__ == "__main__":
    sys.exit(main())
