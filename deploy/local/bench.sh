#!/usr/bin/env bash
# make bench: the benchmarks against local Kafka and Redis (started if missing, and stopped
# afterwards only if this script started them). Results: bench/results/<name>-<stamp>.{json,png}.
# Usage: bench.sh [--quick] [NAME...]   NAME: matching intake notification e2e (default: all)
# A benchmark's own options: run it directly, e.g. .venv/bin/python bench/matching.py --help
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
HERE="$ROOT/deploy/local"
ALL=(matching intake notification e2e)
QUICK=(); NAMES=()
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=(--quick) ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) [[ " ${ALL[*]} " == *" $arg "* ]] || die "no benchmark named $arg (have: ${ALL[*]})"; NAMES+=("$arg") ;;
  esac
done
((${#NAMES[@]})) || NAMES=("${ALL[@]}")
note_missing_infra
trap stop_noted_infra EXIT
"$HERE/infra.sh" up
"$HERE/vegeta.sh"
cd "$ROOT"
for name in "${NAMES[@]}"; do
  log "benchmark: $name ${QUICK[*]}"
  "$PYTHON" "bench/$name.py" "${QUICK[@]}"
done
