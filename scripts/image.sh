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
BUILDER="localhost/mlcycle-builder:bookworm"
TAG="${MLCYCLE_TAG:-smoke}"
VERSION="$(python3 -c 'import tomllib,sys; print(tomllib.load(open(sys.argv[1],"rb"))["project"]["version"])' "$ROOT/pyproject.toml")"
COMMIT="$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
PODMAN=(podman --runtime runc)
mkdir -p "$CACHE"

need() {
  command -v "$1" >/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "image.sh: installing podman, debootstrap and runc (Debian packages) ..." >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman debootstrap runc; } >"$CACHE/apt.log" 2>&1 \
      || { tail -20 "$CACHE/apt.log" >&2; exit 2; }
    command -v "$1" >/dev/null && return 0
  fi
  echo "image.sh: $1 is required (apt-get install podman debootstrap runc)" >&2
  exit 2
}

# import a root file system folder as an image
import_rootfs() {
  tar -C "$1" -c . | "${PODMAN[@]}" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' - "$2" >/dev/null
}

# The builder stand-in (for python:3.11-bookworm) is the base with binutils, which
# slim.sh uses to strip the extension modules, and libgomp1 (the OpenMP runtime the
# Dockerfile copies for LightGBM); the base, like python:3.11-slim, has neither.
base() {
  if "${PODMAN[@]}" image exists "$BASE" && "${PODMAN[@]}" image exists "$BUILDER"; then return 0; fi
  need debootstrap
  local rootfs="$CACHE/rootfs"
  rm -rf "$rootfs"
  echo "image.sh: debootstrap bookworm (minbase) ..." >&2
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,passwd,binutils,libgomp1 bookworm "$rootfs" >"$CACHE/debootstrap.log"
  ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
  import_rootfs "$rootfs" "$BUILDER"
  chroot "$rootfs" dpkg --purge binutils binutils-x86-64-linux-gnu binutils-common libbinutils \
    libctf0 libctf-nobfd0 libgprofng0 libjansson4 libgomp1 >"$CACHE/purge.log" 2>&1
  # as python:3.11-slim: no bytecode caches, docs, man pages, locales or apt lists
  find "$rootfs/usr/lib/python3" "$rootfs/usr/lib/python3.11" -depth -type d -name __pycache__ -exec rm -rf {} +
  rm -rf "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
         "$rootfs"/usr/share/locale/* "$rootfs"/var/cache/apt/archives/*.deb \
         "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
         "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/log/*.log
  chroot "$rootfs" python -m venv /tmp/check && rm -rf "$rootfs/tmp/check"
  import_rootfs "$rootfs" "$BASE"
  rm -rf "$rootfs"
}

build() {
  need podman
  base
  echo "image.sh: wheelhouse (pip wheel on the host) ..." >&2
  "${PYTHON:-python3}" -m pip wheel -q -w "$ROOT/wheelhouse" -c "$ROOT/constraints.txt" "$ROOT[train,serve,stream,dask,boost]" >/dev/null
  "${PYTHON:-python3}" -m pip wheel -q -w "$ROOT/wheelhouse" "setuptools>=77" wheel >/dev/null  # the build backend, offline
  for target in serve pipeline; do
    echo "image.sh: podman build --target $target (offline, from the wheelhouse) ..." >&2
    "${PODMAN[@]}" build -q --format docker --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 \
      -f "$ROOT/deploy/docker/Dockerfile" --target "$target" \
      --build-arg PYTHON_IMAGE="$BASE" --build-arg BUILDER_IMAGE="$BUILDER" --build-arg PIP_OFFLINE=1 \
      --build-arg VERSION="$VERSION" --build-arg GIT_COMMIT="$COMMIT" \
      -t "mlcycle:$TAG-$target" "$ROOT" >/dev/null
  done
  sizes
}

SERVE_LIMIT_MB="${MLCYCLE_SERVE_IMAGE_MB:-250}"
PIPELINE_LIMIT_MB="${MLCYCLE_PIPELINE_IMAGE_MB:-800}"

sizes() {
  echo "image sizes:"
  "${PODMAN[@]}" image ls --format '  {{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E "mlcycle(-base)?:" || true
  local failed=0 target limit bytes mb
  for target in serve pipeline; do
    limit="$SERVE_LIMIT_MB"; [ "$target" = pipeline ] && limit="$PIPELINE_LIMIT_MB"
    bytes="$("${PODMAN[@]}" image inspect --format '{{.Size}}' "mlcycle:$TAG-$target")"
    mb=$(( (bytes + 999999) / 1000000 ))
    if [ "$mb" -gt "$limit" ]; then
      echo "image.sh: mlcycle:$TAG-$target is $mb MB, over its limit of $limit MB" >&2
      failed=1
    else
      echo "  $target: $mb MB (limit $limit MB)"
    fi
  done
  return "$failed"
}

smoke() {
  build
  # not local: the EXIT trap below still needs them
  work="$(mktemp -d)"
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  mkdir -p "$work/data" && chmod -R a+rwX "$work"
  echo "image.sh: the pipeline container: demo data -> etl -> train (embedded stores) ..." >&2
  # it also warms the serving cache the serving container starts from (tracking is
  # unreachable there, so this proves the cache fallback too)
  "${PODMAN[@]}" run --rm --network none --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 \
    -v "$work/data:/data" -e MLFLOW_TRACKING_URI= -e MONGO_URI= -e MLCYCLE_LOG_FORMAT=text \
    --entrypoint sh "mlcycle:$TAG-pipeline" -c 'set -e
      mlcycle demo-data --rows 800 >/dev/null
      mlcycle etl >/dev/null
      mlcycle train --json >/dev/null
      python -c "import lightgbm, numpy as n; lightgbm.LGBMClassifier(n_estimators=3, verbose=-1).fit(n.arange(60.0).reshape(30, 2), n.arange(30) % 2)"
      python -c "from mlcycle.config import get_settings; from mlcycle.serve.model import ModelManager; assert ModelManager(get_settings(), \"loan-approval\").refresh()"
      echo "pipeline container: trained and registered loan-approval" >&2'
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
