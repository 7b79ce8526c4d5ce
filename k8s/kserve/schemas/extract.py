"""Make the JSON schemas of KServe's custom resources from KServe's CRD files.

The CI check validates k8s/kserve/ against these schemas offline (no cluster, no
network). They come from the CRDs KServe publishes (``config/crd/full/`` in
https://github.com/kserve/kserve, Apache-2.0), made strict the way kubeconform's
openapi2jsonschema does it: an object schema with ``properties`` and without
``x-kubernetes-preserve-unknown-fields`` accepts no other keys, as an API server with
strict field validation (`kubectl apply --validate=strict`) would refuse them. Stored
gzipped (the InferenceService schema embeds the pod spec many times: 2 MB of YAML)::

    git clone --depth 1 --branch v0.20.0 https://github.com/kserve/kserve /tmp/kserve
    python k8s/kserve/schemas/extract.py /tmp/kserve/config/crd/full

Needs only PyYAML. Update KSERVE_VERSION below with the files.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path
from typing import Any

import yaml

#: The KServe release the schemas come from (tag v0.20.0, 1fb781055dd1).
KSERVE_VERSION = "v0.20.0"
HERE = Path(__file__).resolve().parent
CRDS = {
    "serving.kserve.io_clusterservingruntimes.yaml": "clusterservingruntime-v1alpha1",
    "serving.kserve.io_inferenceservices.yaml": "inferenceservice-v1beta1",
}


def strict(schema: Any) -> Any:
    """The schema with ``additionalProperties: false`` where the API server prunes."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def schema_of(crd: dict[str, Any], version: str) -> dict[str, Any]:
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = strict(served["schema"]["openAPIV3Schema"])
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    # Pin apiVersion and kind: a schema for one kind must not accept another.
    schema["properties"]["apiVersion"] = {"const": f"{group}/{version}"}
    schema["properties"]["kind"] = {"const": kind}
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "spec"})
    schema["$comment"] = f"{kind} {group}/{version} from KServe {KSERVE_VERSION} (extract.py)"
    return schema


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("crd_dir", type=Path, help="KServe's config/crd/full folder")
    args = parser.parse_args()
    for file, name in CRDS.items():
        crd = yaml.safe_load((args.crd_dir / file).read_text(encoding="utf-8"))
        version = name.rsplit("-", 1)[1]
        text = json.dumps(schema_of(crd, version), sort_keys=True, separators=(",", ":"))
        target = HERE / f"{name}.schema.json.gz"
        # mtime=0: the same input gives the same bytes (no spurious diffs).
        target.write_bytes(gzip.compress(text.encode(), mtime=0))
        print(f"{target.name}: {len(text)} bytes of JSON, {target.stat().st_size} gzipped")


if __name__ == "__main__":
    main()
