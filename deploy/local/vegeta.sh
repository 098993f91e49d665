#!/usr/bin/env bash
# vegeta, the HTTP load generator of bench/intake.py, built once with the local Go toolchain
# into .run/bin. Optional: without Go the bench falls back to its own Python generator, which
# tops out near 2,000 requests/s on a 2-core machine (and takes CPU from the server it loads).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
VEGETA_VERSION="v12.13.0"
BIN_DIR="$RUN_DIR/bin"
[[ -x "$BIN_DIR/vegeta" ]] && exit 0
if ! command -v go >/dev/null; then
  log "no Go toolchain: the intake benchmark will use its Python load generator"
  exit 0
fi
log "building vegeta $VEGETA_VERSION (once, into $BIN_DIR)"
mkdir -p "$BIN_DIR"
GOBIN="$BIN_DIR" go install "github.com/tsenart/vegeta/v12@$VEGETA_VERSION" \
  || log "could not build vegeta: the intake benchmark will use its Python load generator"
