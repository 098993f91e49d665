# Shared helpers for the deploy/local scripts (sourced, not run).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RUN_DIR="${LEANON_RUN_DIR:-$ROOT/.run}"
CACHE_DIR="${LEANON_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/leanon}"
mkdir -p "$RUN_DIR"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# port_open HOST PORT: true when something accepts TCP connections there.
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# wait_until TIMEOUT_S DESCRIPTION CMD...: polls CMD until it succeeds, bounded.
wait_until() {
  local timeout="$1" what="$2"; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@"; do
    if ((SECONDS >= deadline)); then log "gave up waiting for $what after ${timeout}s"; return 1; fi
    sleep 0.2
  done
}

# pid_alive FILE: the pid written in FILE is a running process.
pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# stop_pidfile FILE NAME: TERM, wait up to 30 s, then KILL; only processes we started.
stop_pidfile() {
  local file="$1" name="$2"
  if ! pid_alive "$file"; then rm -f "$file"; return 0; fi
  local pid; pid="$(cat "$file")"
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_until 30 "$name to stop" bash -c "! kill -0 $pid 2>/dev/null"; then
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

# split_hostport "host:port" -> sets HOST and PORT.
split_hostport() { HOST="${1%:*}"; PORT="${1##*:}"; }

is_loopback() { [[ "$1" == 127.* || "$1" == localhost || "$1" == "::1" ]]; }
