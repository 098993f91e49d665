#!/usr/bin/env bash
# Install everything LeanOn needs on a fresh machine: uv, the locked Python environment,
# the Kafka jars (cached outside git) and Debian's redis-server. Idempotent and quiet on repeat.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
export UV_PYTHON_DOWNLOADS=never
UV_VERSION="0.13.8"

if ! command -v uv >/dev/null; then
  log "installing uv $UV_VERSION from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION" \
    || die "could not install uv; install it with 'pip install uv'"
fi
PY="$(command -v python3.11 || command -v python3)"
# Bytecode compiled once here: every service and planner process (and the suite starts many)
# otherwise compiles its imports again where PYTHONDONTWRITEBYTECODE is set (2.4 s instead of
# 5.6 s to import matching on this machine).
(cd "$ROOT" && uv sync --frozen --quiet --compile-bytecode --python "$PY") || die "uv sync failed"
"$ROOT/deploy/local/kafka.sh" fetch
if ! command -v redis-server >/dev/null; then
  "$ROOT/deploy/local/redis.sh" install
fi
