#!/usr/bin/env bash
# make bench: the benchmarks against local Kafka and Redis (started if missing, and stopped
# afterwards only if this script started them). Arguments go to bench/matching.py; --quick goes
# to every benchmark. BENCH=notification (or matching) runs only that one.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
HERE="$ROOT/deploy/local"
note_missing_infra
trap stop_noted_infra EXIT
"$HERE/infra.sh" up
cd "$ROOT"
quick=()
for arg in "$@"; do [[ "$arg" == --quick ]] && quick=(--quick); done
for bench in ${BENCH:-matching notification}; do
  case "$bench" in
    matching) "$PYTHON" bench/matching.py "$@" ;;
    notification) "$PYTHON" bench/notification.py "${quick[@]}" ;;
    *) echo "unknown benchmark: $bench (matching, notification)" >&2; exit 2 ;;
  esac
done
