#!/usr/bin/env bash
# make run: Kafka, Redis and the three services, then a demo workload with a live summary.
# Ctrl-C stops the demo and everything this script started.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
HERE="$ROOT/deploy/local"
split_hostport "$LEANON_KAFKA_BOOTSTRAP"; started_kafka=0; port_open "$HOST" "$PORT" || started_kafka=1
REDIS_HOSTPORT="${LEANON_REDIS_URL#*://}"; REDIS_HOSTPORT="${REDIS_HOSTPORT%%/*}"
split_hostport "$REDIS_HOSTPORT"; started_redis=0; port_open "$HOST" "$PORT" || started_redis=1
started_services=0

cleanup() {
  trap - INT TERM EXIT
  echo
  if ((started_services)); then "$HERE/services.sh" stop; fi
  if ((started_kafka)); then "$HERE/kafka.sh" stop; fi
  if ((started_redis)); then "$HERE/redis.sh" stop; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$HERE/infra.sh" up
if ! "$HERE/services.sh" status | grep -q running; then started_services=1; fi
"$HERE/services.sh" start
log "demo org API key is in $RUN_DIR/local.env (LOCAL_DEMO_API_KEY)"
"$PYTHON" "$HERE/demo.py" "$@"
