#!/usr/bin/env bash
# make test: the whole suite against real Kafka and Redis. Starts what is missing, and
# stops afterwards only what it started itself. Extra arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
HERE="$ROOT/deploy/local"
note_missing_infra
trap stop_noted_infra EXIT
cd "$ROOT"
log "lint: ruff and mypy"
.venv/bin/ruff check --quiet . && .venv/bin/ruff format --check --quiet . \
  && .venv/bin/mypy --no-error-summary shared/src services || die "lint failed (make lint)"
"$HERE/infra.sh" up
set +e
"$ROOT/.venv/bin/python" -m pytest "$@"
status=$?
set -e
if ((status == 5)); then log "pytest collected no tests: that is a failure"; exit 1; fi
exit "$status"
