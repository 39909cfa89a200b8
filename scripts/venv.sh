#!/usr/bin/env bash
# Make the project virtualenv and install mlcycle into it (Make's `install`).
#   scripts/venv.sh PYTHON VENV EXTRAS
# Never installs into the system interpreter, so it works where that one is "externally
# managed" (Debian, Ubuntu). Says what it does: the first install takes a few minutes.
set -euo pipefail
PYTHON="${1:-python3}"; VENV="${2:-.venv}"; EXTRAS="${3:-etl,train,serve,stream,dask,boost,dev}"
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
# uv (a fast resolver and installer, from PyPI) installs when it can be bootstrapped;
# MLCYCLE_INSTALLER=pip uses pip alone. Either way the same pins (constraints.txt).
start=$SECONDS
installer="${MLCYCLE_INSTALLER:-uv}"
if [[ "$installer" == uv ]]; then
  echo "install: bootstrapping uv into $VENV (MLCYCLE_INSTALLER=pip to use pip alone)"
  if ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check "uv>=0.5,<1"; then
    echo "install: uv could not be installed; installing with pip instead (slower)"
    installer=pip
  fi
fi
if [[ "$installer" == uv ]]; then
  # the index, extra links and certificates pip is configured with, for uv too
  [[ -n "${PIP_INDEX_URL:-}" && -z "${UV_DEFAULT_INDEX:-}" ]] && export UV_DEFAULT_INDEX="$PIP_INDEX_URL"
  [[ -n "${PIP_EXTRA_INDEX_URL:-}" && -z "${UV_INDEX:-}" ]] && export UV_INDEX="$PIP_EXTRA_INDEX_URL"
  [[ -n "${PIP_FIND_LINKS:-}" && -z "${UV_FIND_LINKS:-}" ]] && export UV_FIND_LINKS="$PIP_FIND_LINKS"
  [[ -n "${PIP_CERT:-}" && -z "${SSL_CERT_FILE:-}" ]] && export SSL_CERT_FILE="$PIP_CERT"
  echo "install: mlcycle[$EXTRAS] and its dependencies with uv, pinned by constraints.txt"
  if ! "$VENV/bin/python" -m uv pip install --python "$VENV/bin/python" \
      -c constraints.txt -e ".[$EXTRAS]"; then
    echo "install: uv failed (above); installing with pip instead (slower)"
    installer=pip
  fi
fi
if [[ "$installer" == pip ]]; then
  echo "install: upgrading pip in $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade "pip>=24"
  echo "install: mlcycle[$EXTRAS] and its dependencies with pip, pinned by constraints.txt (a few minutes the first time)"
  # every line pip prints, downloads included, so a long download is never silent
  "$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off \
    -c constraints.txt -e ".[$EXTRAS]" \
    | awk '/^(Collecting|Downloading|  Downloading|Installing collected|Successfully installed|ERROR|Building)/ {print "  " $0; fflush()}' || true
fi
# byte-compile what was installed once, here: neither installer does it by default, and
# where PYTHONDONTWRITEBYTECODE is set every process (each CLI call, server, worker and
# test) would compile mlflow, pandas and the rest again (~2 s a start)
echo "install: byte-compiling the installed modules"
"$VENV/bin/python" -m compileall -q -j 0 "$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" src >/dev/null 2>&1 || true
"$VENV/bin/python" -c 'import mlcycle' || { echo "install: failed (rerun without the filter: $VENV/bin/pip install -e .)" >&2; exit 1; }
echo "install: done in $((SECONDS - start)) s with $installer ($VENV)"
