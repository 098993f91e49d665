#!/usr/bin/env bash
# Local single-node Apache Kafka 4.x (KRaft, no ZooKeeper) for machines without Docker.
# The jars come from Maven Central (kafka-pom.xml) into a cache outside git, once.
# Usage: kafka.sh start|stop|status|fetch|produce TOPIC
#   produce TOPIC sends each line of stdin as one record (Kafka's own console producer), e.g.
#   echo '{"specversion":"1.0",...}' | deploy/local/kafka.sh produce leanon.intake
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

BOOTSTRAP="${LEANON_KAFKA_BOOTSTRAP:-127.0.0.1:9092}"
split_hostport "$BOOTSTRAP"
KAFKA_HOST="$HOST"; KAFKA_PORT="$PORT"
CONTROLLER_PORT="${LEANON_KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
POM="$ROOT/deploy/local/kafka-pom.xml"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")"
# One folder per pom digest: checkouts with different poms (branches, worktrees) never delete
# the jars a running broker was started from.
POM_DIGEST="$(sha256sum "$POM" | cut -c1-12)"
LIBS="$CACHE_DIR/kafka-$KAFKA_VERSION-$POM_DIGEST/libs"
DATA="$RUN_DIR/kafka-$KAFKA_PORT"
PIDFILE="$RUN_DIR/kafka-$KAFKA_PORT.pid"
LOGFILE="$RUN_DIR/kafka-$KAFKA_PORT.log"

COMPLETE="$LIBS/.complete"

fetch() {
  if [[ -f "$COMPLETE" ]]; then return 0; fi
  command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch Kafka from Maven Central"
  log "fetching Apache Kafka $KAFKA_VERSION from Maven Central into $LIBS (once)"
  rm -rf "$LIBS"; mkdir -p "$LIBS"
  mvn -q -B -f "$POM" dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$LIBS" >"$RUN_DIR/kafka-fetch.log" 2>&1 \
    || { cat "$RUN_DIR/kafka-fetch.log" >&2; die "could not fetch Kafka jars"; }
  touch "$COMPLETE"
}

# A modest heap: Kafka shares these 2-core machines with everything else.
JAVA_OPTS=(-Xms256m -Xmx768m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
           "-Dlog4j2.configurationFile=$ROOT/deploy/local/log4j2.properties" -cp "$LIBS/*")
kafka_java() { java "${JAVA_OPTS[@]}" "$@"; }

write_config() {
  mkdir -p "$DATA/logs"
  cat >"$DATA/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.quorum.bootstrap.servers=$KAFKA_HOST:$CONTROLLER_PORT
log.dirs=$DATA/logs
num.partitions=6
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.retention.hours=24
log.segment.bytes=67108864
PROPS
}

start() {
  if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
    log "Kafka already reachable at $BOOTSTRAP; not starting one"; return 0
  fi
  is_loopback "$KAFKA_HOST" || die "Kafka at $BOOTSTRAP is not reachable and is not local"
  command -v java >/dev/null || die "a JDK 17 (java) is needed to run Kafka"
  fetch
  write_config
  if [[ ! -f "$DATA/logs/meta.properties" ]]; then
    local cluster_id; cluster_id="$(kafka_java kafka.tools.StorageTool random-uuid)"
    kafka_java kafka.tools.StorageTool format --standalone -t "$cluster_id" \
      -c "$DATA/server.properties" >>"$LOGFILE" 2>&1 || die "kafka storage format failed, see $LOGFILE"
  fi
  log "starting Kafka $KAFKA_VERSION on $BOOTSTRAP (log: $LOGFILE)"
  setsid nohup java "${JAVA_OPTS[@]}" kafka.Kafka "$DATA/server.properties" >>"$LOGFILE" 2>&1 < /dev/null &
  echo $! >"$PIDFILE"
  wait_until "${LEANON_KAFKA_START_TIMEOUT_S:-90}" "Kafka on $BOOTSTRAP" \
    bash -c "source '$ROOT/deploy/local/common.sh'; pid_alive '$PIDFILE' || exit 2; port_open $KAFKA_HOST $KAFKA_PORT" \
    || { tail -n 40 "$LOGFILE" >&2; die "Kafka did not start"; }
  log "Kafka ready on $BOOTSTRAP"
}

case "${1:-}" in
  start) start ;;
  stop) stop_pidfile "$PIDFILE" "Kafka on port $KAFKA_PORT" ;;
  status) if pid_alive "$PIDFILE"; then echo "running (pid $(cat "$PIDFILE"))"; else echo "not started by LeanOn"; fi ;;
  fetch) fetch ;;
  produce)
    [[ -n "${2:-}" ]] || die "usage: $0 produce TOPIC (records on stdin, one per line)"
    fetch
    java -Xmx256m -cp "$LIBS/*" -Dlog4j2.level=warn org.apache.kafka.tools.ConsoleProducer \
      --bootstrap-server "$BOOTSTRAP" --topic "$2" --producer-property acks=all ;;
  *) echo "usage: $0 start|stop|status|fetch|produce TOPIC" >&2; exit 2 ;;
esac
