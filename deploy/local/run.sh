#!/usr/bin/env bash
# make run: Kafka, Redis and the three services, then a demo workload with a live summary.
# Ctrl-C stops the demo and everything this script started.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
HERE="$ROOT/deploy/local"
note_missing_infra
started_services=0

cleanup() {
  trap - INT TERM EXIT
  echo
  if ((started_services)); then "$HERE/services.sh" stop; fi
  stop_noted_infra
}
trap cleanup EXIT
trap 'exit 0' INT TERM  # Ctrl-C is how the demo is meant to end

"$HERE/infra.sh" up
if ! "$HERE/services.sh" status | grep -q running; then started_services=1; fi
"$HERE/services.sh" start
log "demo org API key is in $RUN_DIR/local.env (LOCAL_DEMO_API_KEY)"
"$PYTHON" "$HERE/demo.py" "$@"
