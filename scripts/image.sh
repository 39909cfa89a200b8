#!/usr/bin/env bash
# Build the images here, without a Docker engine or a registry, and smoke-test serving.
#
#   scripts/image.sh build    wheelhouse + `podman build` of the serve and pipeline targets
#   scripts/image.sh smoke    build, train a small model locally, run the serving
#                             container on it, and ask it for a prediction
#
# The stand-in base image is Debian bookworm made with `debootstrap --variant=minbase`
# (Python 3.11 from Debian as `python`, slimmed as the official image is) and
# `podman import`: the same distribution
# as python:3.11-slim-bookworm, which the Dockerfile uses by default. podman runs as root
# with runc and lowered ulimits; the container uses the host network on 127.0.0.1.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache/image"
BASE="localhost/mlcycle-base:bookworm"
TAG="${MLCYCLE_TAG:-smoke}"
VERSION="$(python3 -c 'import tomllib,sys; print(tomllib.load(open(sys.argv[1],"rb"))["project"]["version"])' "$ROOT/pyproject.toml")"
COMMIT="$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
PODMAN=(podman --runtime runc)
mkdir -p "$CACHE"

need() { command -v "$1" >/dev/null || { echo "image.sh: $1 is required (apt-get install podman debootstrap runc)" >&2; exit 2; }; }

base() {
  if "${PODMAN[@]}" image exists "$BASE"; then return 0; fi
  need debootstrap
  local rootfs="$CACHE/rootfs"
  rm -rf "$rootfs"
  echo "image.sh: debootstrap bookworm (minbase) ..." >&2
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,passwd bookworm "$rootfs" >"$CACHE/debootstrap.log"
  ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
  # as python:3.11-slim: no bytecode caches, docs, man pages, locales or apt lists
  find "$rootfs/usr/lib/python3" "$rootfs/usr/lib/python3.11" -depth -type d -name __pycache__ -exec rm -rf {} +
  rm -rf "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
         "$rootfs"/usr/share/locale/* "$rootfs"/var/cache/apt/archives/*.deb \
         "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/log/*.log
  chroot "$rootfs" python -m venv /tmp/check && rm -rf "$rootfs/tmp/check"
  tar -C "$rootfs" -c . | "${PODMAN[@]}" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' - "$BASE" >/dev/null
  rm -rf "$rootfs"
}

build() {
  need podman
  base
  echo "image.sh: wheelhouse (pip wheel on the host) ..." >&2
  "${PYTHON:-python3}" -m pip wheel -q -w "$ROOT/wheelhouse" -c "$ROOT/constraints.txt" "$ROOT[train,serve,stream,dask]" >/dev/null
  "${PYTHON:-python3}" -m pip wheel -q -w "$ROOT/wheelhouse" "setuptools>=77" wheel >/dev/null  # the build backend, offline
  for target in serve pipeline; do
    echo "image.sh: podman build --target $target (offline, from the wheelhouse) ..." >&2
    "${PODMAN[@]}" build -q --format docker --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 \
      -f "$ROOT/deploy/docker/Dockerfile" --target "$target" \
      --build-arg PYTHON_IMAGE="$BASE" --build-arg PIP_OFFLINE=1 \
      --build-arg VERSION="$VERSION" --build-arg GIT_COMMIT="$COMMIT" \
      -t "mlcycle:$TAG-$target" "$ROOT" >/dev/null
  done
  sizes
}

sizes() {
  echo "image sizes:"
  "${PODMAN[@]}" image ls --format '  {{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E "mlcycle(-base)?:" || true
}

smoke() {
  build
  # not local: the EXIT trap below still needs them
  work="$(mktemp -d)"
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  echo "image.sh: training a small model on synthetic data (embedded stores) ..." >&2
  (cd "$ROOT" && MLCYCLE_DATA_DIR="$work/data" MLFLOW_TRACKING_URI= MONGO_URI= "${PYTHON:-python3}" -m mlcycle.cli demo-data --rows 800 >/dev/null \
    && MLCYCLE_DATA_DIR="$work/data" MLFLOW_TRACKING_URI= MONGO_URI= "${PYTHON:-python3}" -m mlcycle.cli etl >/dev/null \
    && MLCYCLE_DATA_DIR="$work/data" MLFLOW_TRACKING_URI= MONGO_URI= MLCYCLE_RELOAD_INTERVAL=0 \
       timeout 60 "${PYTHON:-python3}" -m mlcycle.cli train --json >/dev/null)
  # warm the serving cache the container will start from (tracking is unreachable inside)
  (cd "$ROOT" && MLCYCLE_DATA_DIR="$work/data" MLFLOW_TRACKING_URI= "${PYTHON:-python3}" -c \
    'from mlcycle.config import get_settings; from mlcycle.serve.model import ModelManager; m=ModelManager(get_settings(), "loan-approval"); assert m.refresh()')
  chmod -R a+rwX "$work"
  echo "image.sh: running mlcycle:$TAG-serve on 127.0.0.1:$port ..." >&2
  "${PODMAN[@]}" run -d --rm --name "mlcycle-smoke-$port" --network host \
    --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 \
    -v "$work/data:/data" -e MLFLOW_TRACKING_URI=http://127.0.0.1:9 -e MLCYCLE_SERVE_PORT="$port" \
    "mlcycle:$TAG-serve" serve --host 127.0.0.1 --port "$port" >/dev/null
  trap '"${PODMAN[@]}" stop -t 5 "mlcycle-smoke-$port" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
  for _ in $(seq 1 60); do curl -fs "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1 && break; sleep 1; done
  echo "user in the container: $("${PODMAN[@]}" exec "mlcycle-smoke-$port" id -u)"
  model="$(curl -fsS "http://127.0.0.1:$port/model")"
  echo "model: $model" | cut -c1-200
  curl -fsS -X POST "http://127.0.0.1:$port/predict" -H 'Content-Type: application/json' -d '{
    "Gender": "Male", "Married": "Yes", "Dependents": "0", "Education": "Graduate",
    "Self_Employed": "No", "ApplicantIncome": 5849, "CoapplicantIncome": 0, "LoanAmount": 128,
    "Loan_Amount_Term": 360, "Credit_History": 1, "Property_Area": "Urban"}'
  echo
  echo "image smoke: the serving container answered a prediction"
}

case "${1:-}" in
  base) base ;;
  build) build ;;
  smoke) smoke ;;
  sizes) sizes ;;
  *) echo "usage: $0 build|smoke|sizes" >&2; exit 2 ;;
esac
