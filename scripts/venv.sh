#!/usr/bin/env bash
# Make the project virtualenv and install mlcycle into it (Make's `install`).
#   scripts/venv.sh PYTHON VENV EXTRAS
# Never installs into the system interpreter, so it works where that one is "externally
# managed" (Debian, Ubuntu). Says what it does: the first install takes a few minutes.
set -euo pipefail
PYTHON="${1:-python3}"; VENV="${2:-.venv}"; EXTRAS="${3:-etl,train,serve,stream,dask,dev}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

command -v "$PYTHON" >/dev/null || { echo "install: $PYTHON not found: install Python >= 3.11" >&2; exit 2; }
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || {
  echo "install: $("$PYTHON" --version 2>&1) is too old: mlcycle needs Python >= 3.11 (make PYTHON=python3.11 ...)" >&2; exit 2; }

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "install: creating the virtualenv $VENV with $("$PYTHON" --version 2>&1)"
  if ! "$PYTHON" -m venv "$VENV" 2>/tmp/mlcycle-venv.err; then
    rm -rf "$VENV"
    # Debian/Ubuntu ship venv (ensurepip) in a separate package
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
      echo "install: the venv module is missing; installing Debian's python3-venv"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      "$PYTHON" -m venv "$VENV"
    else
      cat /tmp/mlcycle-venv.err >&2
      echo "install: cannot create a virtualenv: install your distribution's python3-venv package" >&2
      exit 2
    fi
  fi
fi
echo "install: upgrading pip in $VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade "pip>=24"
echo "install: mlcycle[$EXTRAS] and its dependencies, pinned by constraints.txt (a few minutes the first time)"
start=$SECONDS
"$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar on \
  -c constraints.txt -e ".[$EXTRAS]" \
  | awk '/^Collecting/ {print "  collecting " $2; fflush()}
         /^Installing collected/ {print "  installing " NF - 3 " packages (a minute or two)"; fflush()}
         /^Successfully installed/ {print "  installed " NF - 2 " packages"; fflush()}
         /^ERROR/ {print; fflush()}' || true
"$VENV/bin/python" -c 'import mlcycle' || { echo "install: failed (rerun without the filter: $VENV/bin/pip install -e .)" >&2; exit 1; }
echo "install: done in $((SECONDS - start)) s ($VENV)"
