#!/usr/bin/env bash
# make bench: the benchmarks against local Kafka and Redis (started if missing, and stopped
# afterwards only if this script started them). Arguments go to bench/matching.py.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
HERE="$ROOT/deploy/local"
note_missing_infra
trap stop_noted_infra EXIT
"$HERE/infra.sh" up
cd "$ROOT"
"$PYTHON" bench/matching.py "$@"
