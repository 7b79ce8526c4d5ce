#!/usr/bin/env bash
# One command for every GPU path of the service, on a machine with an NVIDIA GPU:
#
#   scripts/gpu-check.sh                 # detect, install if online, export, test, benchmark
#   scripts/gpu-check.sh --cpu-dry-run   # the same steps on CPU, tiny: proves the script works
#
# Steps (each bounded by `timeout`; the whole run stays under 8 minutes):
#   1. detect: nvidia-smi, torch.cuda, onnxruntime's providers, the service's imports;
#   2. install what is missing, only when PyPI answers (onnxruntime-gpu for ONNX Runtime
#      CUDA/TensorRT too), into a folder put first on PYTHONPATH; offline, unpack the wheels
#      carried by scripts/gpu-prepare.sh if any, else use the python as is and say so;
#   3. export the model (random weights: speed does not depend on them), TorchScript
#      always (torch + torchvision suffice), ONNX too where onnx/onnxscript exist;
#   4. the GPU tests: pytest -m gpu;
#   5. the GPU benchmark (python -m benchmarks.gpu): engine limit, CPU vs GPU
#      preprocessing, the service in-process with JPEG input at high concurrency.
# It says exactly what it could not run, and writes everything to one results file under
# $OUT (when set) or benchmarks/results/.
#
# Environment: PYTHON (interpreter to use), MODEL (default resnet50; the dry run uses the
# CIFAR resnet20), OUT (results folder), GPU_CHECK_KEEP=1 (keep the work folder).
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
for arg in "$@"; do
    case "$arg" in
        --cpu-dry-run) DRY=1 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "unknown argument: $arg (known: --cpu-dry-run)" >&2; exit 64 ;;
    esac
done

STARTED=$SECONDS
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
[ "${GPU_CHECK_KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
RESULTS_DIR=${OUT:-benchmarks/results}
mkdir -p "$RESULTS_DIR"
STAMP=$(date +%Y-%m-%d-%H%M)
if [ "$DRY" = 1 ]; then
    REPORT="$RESULTS_DIR/gpu-check-dry-run.md"
    MODEL=${MODEL:-resnet20}; DEVICE=cpu
    BENCH_ARGS=(--max-batch 4 --concurrency 8 --images 16 --cell-s 1.5 --warmup-s 0.5 --engine-s 0.2)
else
    REPORT="$RESULTS_DIR/gpu-check-$STAMP.md"
    MODEL=${MODEL:-resnet50}; DEVICE=cuda
    BENCH_ARGS=(--max-batch 64 --concurrency 128 --images 512 --cell-s 10 --warmup-s 3 --engine-s 2)
fi

NOT_RUN=()
STEPS=()
BENCH_OUT="$WORK/bench"
say() { echo "[gpu-check $((SECONDS - STARTED))s] $*"; }
not_run() { NOT_RUN+=("$1"); say "NOT RUN: $1"; }
# step NAME SECONDS COMMAND...: run bounded, log to the work folder, record the outcome.
step() {
    local name=$1 limit=$2; shift 2
    say "$name (at most ${limit}s)"
    timeout --kill-after=10 "$limit" "$@" > "$WORK/$name.log" 2>&1
    local rc=$?
    tail -n 40 "$WORK/$name.log"
    case $rc in
        0) STEPS+=("| $name | ok |") ;;
        124|137) STEPS+=("| $name | timed out after ${limit}s |") ;;
        *) STEPS+=("| $name | failed (exit $rc) |") ;;
    esac
    return $rc
}

# finish: write the report (steps, benchmark table, what could not run) and exit with
# the number of failed steps (0: all ran), or 1 when the GPU itself was missing.
finish() {
    {
        echo "# scripts/gpu-check.sh $([ "$DRY" = 1 ] && echo '--cpu-dry-run')"
        echo
        echo "- when: $(date -u +%Y-%m-%dT%H:%MZ), $((SECONDS - STARTED)) s"
        echo "- GPU (nvidia-smi): ${GPU_LINE:-none}"
        echo "- python: $PY"
        sed 's/^/- /' "$WORK/probe.txt"
        echo
        echo "| step | outcome |"
        echo "|---|---|"
        printf '%s\n' "${STEPS[@]}"
        echo
        if [ -f "$BENCH_OUT/bench.md" ]; then sed 's/^#/##/' "$BENCH_OUT/bench.md"; echo; fi
        echo "## Could not run"
        echo
        if [ ${#NOT_RUN[@]} -eq 0 ]; then echo "- nothing"; else printf -- '- %s\n' "${NOT_RUN[@]}"; fi
    } > "$REPORT"
    [ -f "$BENCH_OUT/bench.json" ] && cp "$BENCH_OUT/bench.json" "${REPORT%.md}.json"
    say "results: $REPORT"
    cat "$REPORT"
    local failed=0 line
    for line in "${STEPS[@]}"; do [[ $line == *"| ok |"* ]] || failed=$((failed + 1)); done
    [ "${NO_GPU:-0}" = 1 ] && exit 1
    exit $((failed > 0))
}

# -- 1. detect ------------------------------------------------------------------------
PY=${PYTHON:-}
for candidate in .venv/bin/python /opt/torch/.venv/bin/python python3; do
    [ -n "$PY" ] && break
    command -v "$candidate" > /dev/null 2>&1 && PY=$candidate
done
say "python: $PY"
GPU_LINE=$(timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n 1)
say "nvidia-smi: ${GPU_LINE:-none}"
probe() { timeout 60 "$PY" scripts/gpu_probe.py; }
probe > "$WORK/probe.txt" 2>&1
cat "$WORK/probe.txt"
has() { grep -q "^$1=yes" "$WORK/probe.txt"; }

if [ "$DRY" = 0 ] && ! has cuda; then
    not_run "everything on the GPU: torch sees no CUDA device (nvidia-smi: ${GPU_LINE:-none}); try --cpu-dry-run"
    NO_GPU=1
    finish
fi

# -- 2. install (online only; never in the dry run) --------------------------------------
ONLINE=0
timeout 8 "$PY" -c "import urllib.request as u; u.urlopen('https://pypi.org/simple/pip/', timeout=6)" \
    > /dev/null 2>&1 && ONLINE=1
say "network to PyPI: $([ $ONLINE = 1 ] && echo yes || echo no)"
NEEDED=()
for module in pydantic pydantic_settings prometheus_client; do has "$module" || NEEDED+=("${module//_/-}"); done
WANT_ORT_GPU=0
[ "$DRY" = 0 ] && has cuda && ! has ort_cuda && WANT_ORT_GPU=1
if [ "$DRY" = 1 ]; then
    say "dry run: installs nothing"
    not_run "the GPU itself: this is the CPU dry run (torch on cpu, ONNX Runtime CPU); it proves the script, not the GPU paths"
elif [ ${#NEEDED[@]} -gt 0 ] || [ $WANT_ORT_GPU = 1 ]; then
    # Into a folder put first on PYTHONPATH: the python's own packages (torch) stay
    # visible and untouched (a venv made from a venv would not see them).
    SITE="$WORK/site"
    if [ $ONLINE = 1 ]; then
        packages=("${NEEDED[@]}")
        # onnxruntime-gpu shadows the CPU build from the front of the path (never both
        # installed into one environment: they share the `onnxruntime` folder).
        [ $WANT_ORT_GPU = 1 ] && packages+=(onnxruntime-gpu)
        step install 240 "$PY" -m pip install --quiet --target "$SITE" "${packages[@]}"
    elif [ -d .cache/gpu-carry/wheels ] && [ ${#NEEDED[@]} -gt 0 ]; then
        # A wheel installs by unpacking: no pip and no index needed.
        step install-carried 60 bash -c 'for w in "$2"/*.whl; do "$0" -m zipfile -e "$w" "$1" || exit 1; done' \
            "$PY" "$SITE" .cache/gpu-carry/wheels
    elif [ ${#NEEDED[@]} -gt 0 ]; then
        not_run "the service itself: ${NEEDED[*]} missing, no network, no wheels carried (run scripts/gpu-prepare.sh where there is network)"
    fi
    [ -d "$SITE" ] && export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    [ $WANT_ORT_GPU = 1 ] && [ $ONLINE = 0 ] && \
        not_run "ONNX Runtime CUDA/TensorRT: onnxruntime has no GPU provider and onnxruntime-gpu cannot be installed offline (~300 MB: too big to carry)"
    probe > "$WORK/probe.txt" 2>&1
fi

# -- 3. models ---------------------------------------------------------------------------
export RESNET_SERVE_SHARED_DIR=${RESNET_SERVE_SHARED_DIR:-}
if [ -z "$RESNET_SERVE_SHARED_DIR" ] && [ ! -d ../shared/data ] && [ -d .cache/gpu-carry/shared ]; then
    RESNET_SERVE_SHARED_DIR=$PWD/.cache/gpu-carry/shared
fi
[ -z "$RESNET_SERVE_SHARED_DIR" ] && unset RESNET_SERVE_SHARED_DIR
PHOTOS=${RESNET_SERVE_SHARED_DIR:-../shared}/data/photos
REPO="$WORK/models"
FORMATS=(--format torchscript)
if has onnx && has onnxscript; then FORMATS+=(--format onnx); else
    not_run "ONNX export of $MODEL: onnx/onnxscript missing here (ONNX Runtime rows use a carried model if any)"
fi
if has service; then
    step export 240 "$PY" -m service.cli export "$MODEL" --weights random "${FORMATS[@]}" --repository "$REPO"
    if [ ! -f "$REPO/$MODEL/config.json" ] && [ -d .cache/gpu-carry/models ]; then
        REPO=.cache/gpu-carry/models; MODEL=$(ls "$REPO" | head -n 1)
        say "using the carried model $REPO/$MODEL"
    fi
fi

# -- 4. GPU tests -------------------------------------------------------------------------
# pytest-timeout may be missing: its ini key must then not become an error.
PYTEST=(-m pytest -p no:cacheprovider -q -m gpu -rs -W "ignore::pytest.PytestConfigWarning")
if ! has service; then
    not_run "pytest -m gpu: the service does not import here"
elif [ "$DRY" = 1 ]; then
    step gpu-tests 120 "$PY" "${PYTEST[@]}" tests/test_preprocess_torch.py
else
    # Only the files holding gpu tests: the others import test-only packages (FastAPI,
    # tritonclient, hypothesis) a bare GPU host may lack.
    mapfile -t GPU_TESTS < <(grep -rl "pytest.mark.gpu" tests --include="test_*.py")
    step gpu-tests 180 "$PY" "${PYTEST[@]}" "${GPU_TESTS[@]}"
fi

# -- 5. benchmark -------------------------------------------------------------------------
if has service && [ -f "$REPO/$MODEL/config.json" ] && { [ "$DRY" = 1 ] || has cuda; }; then
    left=$((460 - (SECONDS - STARTED)))
    [ $left -lt 60 ] && left=60
    step benchmark "$left" "$PY" -m benchmarks.gpu --repository "$REPO" --model "$MODEL" \
        --device "$DEVICE" --photos "$PHOTOS" --out "$BENCH_OUT" --stem bench "${BENCH_ARGS[@]}"
else
    not_run "the GPU benchmark: needs the service importable, an exported model and CUDA"
fi

finish
