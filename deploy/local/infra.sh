#!/usr/bin/env bash
# Kafka and Redis together. 'up' starts whichever is not reachable; 'down' stops only those
# LeanOn started (pid files), leaving anything else alone.
# Usage: infra.sh up|down
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
HERE="$ROOT/deploy/local"
case "${1:-}" in
  up) "$HERE/redis.sh" start && "$HERE/kafka.sh" start ;;
  down) "$HERE/kafka.sh" stop; "$HERE/redis.sh" stop ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
