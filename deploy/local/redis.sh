#!/usr/bin/env bash
# Local Redis from Debian's redis-server, installed when missing, bound to loopback.
# Usage: redis.sh start|stop|status|install
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

URL="${LEANON_REDIS_URL:-redis://127.0.0.1:6379/0}"
HOSTPORT="${URL#*://}"; HOSTPORT="${HOSTPORT#*@}"; HOSTPORT="${HOSTPORT%%/*}"
split_hostport "$HOSTPORT"
REDIS_HOST="$HOST"; REDIS_PORT="$PORT"
DATA="$RUN_DIR/redis-$REDIS_PORT"
PIDFILE="$RUN_DIR/redis-$REDIS_PORT.pid"
LOGFILE="$RUN_DIR/redis-$REDIS_PORT.log"

install_redis() {
  command -v redis-server >/dev/null && return 0
  [[ "$(id -u)" == 0 ]] || die "redis-server is missing; install Debian's redis-server (apt-get install redis-server)"
  log "installing Debian's redis-server (once)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >"$RUN_DIR/apt.log" 2>&1 || { cat "$RUN_DIR/apt.log" >&2; die "apt-get update failed"; }
  apt-get install -y -qq --no-install-recommends redis-server >>"$RUN_DIR/apt.log" 2>&1 \
    || { cat "$RUN_DIR/apt.log" >&2; die "apt-get install redis-server failed"; }
  # Debian's package may start a system service of its own; LeanOn runs its own instance.
  if command -v service >/dev/null; then service redis-server stop >/dev/null 2>&1 || true; fi
}

start() {
  if port_open "$REDIS_HOST" "$REDIS_PORT"; then
    log "Redis already reachable at $REDIS_HOST:$REDIS_PORT; not starting one"; return 0
  fi
  is_loopback "$REDIS_HOST" || die "Redis at $URL is not reachable and is not local"
  install_redis
  mkdir -p "$DATA"
  log "starting Redis on $REDIS_HOST:$REDIS_PORT (log: $LOGFILE)"
  # Redis is derived state (rebuilt from Kafka), but an append-only file keeps offers and
  # timers across a restart of the local instance. Sorted sets of up to 512 members stay in
  # the compact listpack encoding: the helper index keeps its sets about that small, and so
  # needs well under half the memory it would as skiplists.
  redis-server --bind "$REDIS_HOST" --port "$REDIS_PORT" --daemonize yes \
    --pidfile "$PIDFILE" --logfile "$LOGFILE" --dir "$DATA" \
    --save "" --appendonly yes --appendfsync everysec --protected-mode yes \
    --zset-max-listpack-entries 512
  wait_until 30 "Redis on $REDIS_HOST:$REDIS_PORT" port_open "$REDIS_HOST" "$REDIS_PORT" \
    || { tail -n 20 "$LOGFILE" >&2; die "Redis did not start"; }
  log "Redis ready on $REDIS_HOST:$REDIS_PORT"
}

case "${1:-}" in
  start) start ;;
  stop) stop_pidfile "$PIDFILE" "Redis on port $REDIS_PORT" ;;
  install) install_redis ;;
  status) if pid_alive "$PIDFILE"; then echo "running (pid $(cat "$PIDFILE"))"; else echo "not started by LeanOn"; fi ;;
  *) echo "usage: $0 start|stop|status|install" >&2; exit 2 ;;
esac
