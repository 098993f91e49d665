#!/usr/bin/env bash
# Start or stop the three LeanOn services as background processes (pids and logs in .run/).
# start returns once every service answers /readyz with 200.
# Usage: services.sh start|stop|status
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

SERVICES=(intake matching notification)
port_of() {
  case "$1" in
    intake) echo "${LEANON_INTAKE_PORT:-8000}" ;;
    matching) echo "${LEANON_MATCHING_PORT:-8001}" ;;
    notification) echo "${LEANON_NOTIFICATION_PORT:-8002}" ;;
  esac
}

start() {
  [[ -x "$PYTHON" ]] || die "no virtualenv at $ROOT/.venv; run 'make install' first"
  for svc in "${SERVICES[@]}"; do
    local pidfile="$RUN_DIR/$svc.pid" port; port="$(port_of "$svc")"
    if pid_alive "$pidfile"; then log "$svc already running (pid $(cat "$pidfile"))"; continue; fi
    if port_open 127.0.0.1 "$port"; then die "port $port for $svc is taken by another process"; fi
    # Own session: a Ctrl-C at the terminal reaches `make run`, which then stops us in order.
    setsid nohup "$PYTHON" -m "leanon_$svc" >>"$RUN_DIR/$svc.log" 2>&1 < /dev/null &
    echo $! >"$pidfile"
  done
  for svc in "${SERVICES[@]}"; do
    local port; port="$(port_of "$svc")"
    wait_until "${LEANON_START_TIMEOUT_S:-60}" "$svc /readyz on port $port" \
      bash -c "source '$ROOT/deploy/local/common.sh'; pid_alive '$RUN_DIR/$svc.pid' || exit 2; curl -fs -o /dev/null --max-time 2 http://127.0.0.1:$port/readyz" \
      || { tail -n 30 "$RUN_DIR/$svc.log" >&2; stop; die "$svc did not become ready"; }
    log "$svc ready on http://127.0.0.1:$port"
  done
}

stop() {
  for svc in "${SERVICES[@]}"; do stop_pidfile "$RUN_DIR/$svc.pid" "$svc"; done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status)
    for svc in "${SERVICES[@]}"; do
      if pid_alive "$RUN_DIR/$svc.pid"; then echo "$svc: running (pid $(cat "$RUN_DIR/$svc.pid"))"
      else echo "$svc: stopped"; fi
    done ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
