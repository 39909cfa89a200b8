#!/usr/bin/env bash
# Apache Kafka 4.x in KRaft mode (one combined broker/controller node) on 127.0.0.1,
# run from the official jars, which Maven fetches once into a cache folder.
#
#   scripts/kafka.sh fetch              fetch the jars into .cache/kafka/jars (once)
#   scripts/kafka.sh start [PORT]       format storage (first time), start, wait until ready
#   scripts/kafka.sh stop               stop the broker started by `start` (SIGTERM)
#   scripts/kafka.sh classpath          print the classpath (for tests that run it themselves)
#
# KAFKA_RUN_DIR picks the data/log folder (default .cache/kafka/run); KAFKA_HEAP the
# JVM heap (default 512m). The controller listens on PORT+1, or on KAFKA_CONTROLLER_PORT
# (a broker restarted on another PORT keeps its controller, whose address is in its data).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${KAFKA_CACHE:-$ROOT/.cache/kafka}"
JARS="$CACHE/jars"
RUN_DIR="${KAFKA_RUN_DIR:-$CACHE/run}"
POM="$ROOT/scripts/kafka/pom.xml"

fetch() {
  if [[ -f "$JARS/.complete" && "$JARS/.complete" -nt "$POM" ]]; then
    return 0
  fi
  command -v mvn >/dev/null || { echo "kafka.sh: Maven (mvn) is required to fetch the Kafka jars" >&2; exit 2; }
  command -v java >/dev/null || { echo "kafka.sh: Java 17+ is required to run Kafka" >&2; exit 2; }
  echo "kafka.sh: fetching the Kafka jars with Maven (first time only)..." >&2
  rm -rf "$JARS.tmp"
  mkdir -p "$CACHE"
  if ! mvn -q -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
      -DoutputDirectory="$JARS.tmp" -DincludeScope=runtime >"$CACHE/fetch.log" 2>&1; then
    echo "kafka.sh: Maven could not fetch the Kafka jars; its log follows" >&2
    cat "$CACHE/fetch.log" >&2
    exit 1
  fi
  rm -rf "$JARS"
  mv "$JARS.tmp" "$JARS"
  touch "$JARS/.complete"
  echo "kafka.sh: $(ls "$JARS"/*.jar | wc -l) jars in $JARS" >&2
}

classpath() {
  fetch
  echo "$JARS/*"
}

write_config() {
  local port="$1" controller="$2"
  cat > "$RUN_DIR/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$controller
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$RUN_DIR/data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
message.max.bytes=10485760
PROPS
}

start() {
  local port="${1:-${KAFKA_PORT:-9092}}"
  local controller="${KAFKA_CONTROLLER_PORT:-$((port + 1))}"
  fetch
  mkdir -p "$RUN_DIR"
  if [[ -f "$RUN_DIR/pid" ]] && kill -0 "$(cat "$RUN_DIR/pid")" 2>/dev/null; then
    echo "kafka.sh: already running (pid $(cat "$RUN_DIR/pid"))" >&2
    return 0
  fi
  write_config "$port" "$controller"
  if [[ ! -f "$RUN_DIR/data/meta.properties" ]]; then
    local id
    id="$(java -cp "$JARS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
    java -cp "$JARS/*" kafka.tools.StorageTool format --standalone -t "$id" \
      -c "$RUN_DIR/server.properties" >"$RUN_DIR/format.log" 2>&1 \
      || { echo "kafka.sh: formatting storage failed; log follows" >&2; cat "$RUN_DIR/format.log" >&2; exit 1; }
  fi
  : > "$RUN_DIR/server.log"
  java "-Xmx${KAFKA_HEAP:-512m}" -XX:+UseSerialGC \
    "-Dlog4j2.configurationFile=$ROOT/scripts/kafka/log4j2.properties" \
    "-Dkafka.log.file=$RUN_DIR/server.log" \
    -cp "$JARS/*" kafka.Kafka "$RUN_DIR/server.properties" >"$RUN_DIR/stdout.log" 2>&1 &
  echo $! > "$RUN_DIR/pid"
  for _ in $(seq 1 600); do
    if grep -q "Kafka Server started" "$RUN_DIR/server.log" 2>/dev/null; then
      echo "kafka.sh: listening on 127.0.0.1:$port (pid $(cat "$RUN_DIR/pid"))" >&2
      return 0
    fi
    if ! kill -0 "$(cat "$RUN_DIR/pid")" 2>/dev/null; then
      break
    fi
    sleep 0.1
  done
  echo "kafka.sh: the broker did not start; logs follow" >&2
  tail -n 50 "$RUN_DIR/stdout.log" "$RUN_DIR/server.log" >&2 || true
  exit 1
}

stop() {
  if [[ -f "$RUN_DIR/pid" ]]; then
    local pid
    pid="$(cat "$RUN_DIR/pid")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$RUN_DIR/pid"
  fi
}

case "${1:-}" in
  fetch) fetch ;;
  start) shift; start "$@" ;;
  stop) stop ;;
  classpath) classpath ;;
  *) echo "usage: $0 fetch|start [PORT]|stop|classpath" >&2; exit 2 ;;
esac
