#!/usr/bin/env bash
# Audit the pinned dependencies of the installed environment with pip-audit.
#
#   scripts/audit.sh                 # freeze .venv, audit the pins (PyPI advisory data)
#   scripts/audit.sh -s osv          # extra pip-audit flags, e.g. the OSV database
#   VENV=/opt/venv scripts/audit.sh  # another environment (e.g. inside the image)
#
# Writes the exact pins audited to build/audit/requirements.lock (kept as the record
# of what was checked) and the report to build/audit/report.json. --strict makes a
# package that could not be looked up a failure: "nothing audited" must never read as
# "no vulnerabilities". Needs network access to the advisory service (pypi.org JSON
# API or api.osv.dev), so CI does not depend on it; run it before a release.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
OUT=${AUDIT_DIR:-build/audit}
mkdir -p "$OUT"

if ! "$VENV/bin/python" -m pip_audit --version >/dev/null 2>&1; then
  echo "pip-audit is not installed in $VENV: $VENV/bin/pip install pip-audit" >&2
  exit 2
fi

# Exact pins of everything installed, minus this project itself (editable install).
"$VENV/bin/python" -m pip freeze --exclude-editable --all \
  | grep -v -E '^(resnet-serve|-e )' >"$OUT/requirements.lock"
echo "auditing $(wc -l <"$OUT/requirements.lock") pinned packages from $VENV"

"$VENV/bin/python" -m pip_audit \
  --requirement "$OUT/requirements.lock" \
  --no-deps --disable-pip \
  --strict \
  --progress-spinner off \
  --desc on \
  --format json --output "$OUT/report.json" \
  "$@" \
  && status=0 || status=$?
[ "$status" = 0 ] || echo "pip-audit failed (exit $status): a vulnerability, or a package it could not look up (see above)" >&2
if [ -f "$OUT/report.json" ]; then
"$VENV/bin/python" - "$OUT/report.json" <<'PY' || true
import json, sys
report = json.load(open(sys.argv[1]))
deps = report.get("dependencies", [])
vulnerable = [d for d in deps if d.get("vulns")]
skipped = [d for d in deps if d.get("skip_reason")]
print(f"{len(deps)} packages: {len(vulnerable)} with known vulnerabilities, {len(skipped)} not auditable")
for d in vulnerable:
    print(f"  {d['name']} {d['version']}: " + ", ".join(v["id"] for v in d["vulns"]))
for d in skipped[:10]:
    print(f"  skipped {d['name']}: {d['skip_reason']}")
PY
fi
exit "$status"
