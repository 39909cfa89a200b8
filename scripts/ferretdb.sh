#!/usr/bin/env bash
# Build (once, cached) and run FerretDB 1.x with its SQLite handler on 127.0.0.1.
#
#   scripts/ferretdb.sh build          build .cache/ferretdb/bin/ferretdb if absent
#   scripts/ferretdb.sh start [PORT]   start in the background, wait until it answers
#   scripts/ferretdb.sh stop           stop the process started by `start`
#   scripts/ferretdb.sh path           print the binary path
#
# The module proxy's copy of FerretDB lacks build/version/version.txt (generated from git
# in its own repo), so a plain `go install` gives a binary that panics at start. We copy
# the downloaded module into a build folder, write that file, then `go build`.
set -euo pipefail

VERSION="${FERRETDB_VERSION:-v1.24.2}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${FERRETDB_CACHE:-$ROOT/.cache/ferretdb}"
BIN="$CACHE/bin/ferretdb-$VERSION"
RUN_DIR="${FERRETDB_RUN_DIR:-$CACHE/run}"

build() {
  if [[ -x "$BIN" ]]; then
    return 0
  fi
  command -v go >/dev/null || { echo "ferretdb.sh: Go is required to build FerretDB" >&2; exit 2; }
  local src dir
  echo "ferretdb.sh: building FerretDB $VERSION (first time only)..." >&2
  dir="$(GOFLAGS=-mod=mod go mod download -json "github.com/FerretDB/FerretDB@$VERSION" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  src="$CACHE/src-$VERSION"
  rm -rf "$src"
  mkdir -p "$src" "$CACHE/bin"
  cp -r "$dir/." "$src/"
  chmod -R u+w "$src"
  echo "$VERSION" > "$src/build/version/version.txt"
  echo "unknown" > "$src/build/version/commit.txt"
  echo "unknown" > "$src/build/version/branch.txt"
  echo "mlcycle" > "$src/build/version/package.txt"
  (cd "$src" && CGO_ENABLED=0 go build -trimpath -o "$BIN.tmp" ./cmd/ferretdb)
  mv "$BIN.tmp" "$BIN"
  rm -rf "$src"
  echo "ferretdb.sh: built $BIN" >&2
}

start() {
  local port="${1:-${FERRETDB_PORT:-27018}}"
  build
  mkdir -p "$RUN_DIR/data"
  if [[ -f "$RUN_DIR/pid" ]] && kill -0 "$(cat "$RUN_DIR/pid")" 2>/dev/null; then
    echo "ferretdb.sh: already running (pid $(cat "$RUN_DIR/pid"))" >&2
    return 0
  fi
  "$BIN" --handler=sqlite --sqlite-url="file:$RUN_DIR/data/" \
    --listen-addr="127.0.0.1:$port" --telemetry=disable --state-dir=- --debug-addr=- \
    --log-level=warn >"$RUN_DIR/ferretdb.log" 2>&1 &
  echo $! > "$RUN_DIR/pid"
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "ferretdb.sh: listening on 127.0.0.1:$port (pid $(cat "$RUN_DIR/pid"))" >&2
      return 0
    fi
    sleep 0.1
  done
  echo "ferretdb.sh: did not start; log follows" >&2
  cat "$RUN_DIR/ferretdb.log" >&2
  exit 1
}

stop() {
  if [[ -f "$RUN_DIR/pid" ]]; then
    kill "$(cat "$RUN_DIR/pid")" 2>/dev/null || true
    rm -f "$RUN_DIR/pid"
  fi
}

case "${1:-}" in
  build) build ;;
  start) shift; start "$@" ;;
  stop) stop ;;
  path) echo "$BIN" ;;
  *) echo "usage: $0 build|start [PORT]|stop|path" >&2; exit 2 ;;
esac
