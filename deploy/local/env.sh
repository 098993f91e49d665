# Local settings for make run/up/test (sourced). Anything already in the environment wins.
# Secrets are generated once per checkout into .run/local.env, never committed or logged.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

LOCAL_ENV="$RUN_DIR/local.env"
if [[ ! -f "$LOCAL_ENV" ]]; then
  umask 077
  {
    echo "LOCAL_DEMO_API_KEY=demo-$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    echo "LOCAL_WEBHOOK_SECRET=whsec-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  } >"$LOCAL_ENV"
fi
# shellcheck disable=SC1090
source "$LOCAL_ENV"
export LEANON_API_KEYS="${LEANON_API_KEYS:-demo:$LOCAL_DEMO_API_KEY}"
export LEANON_WEBHOOK_SECRET="${LEANON_WEBHOOK_SECRET:-$LOCAL_WEBHOOK_SECRET}"
# Local work posts webhooks to receivers on this machine.
export LEANON_WEBHOOK_ALLOW_HOSTS="${LEANON_WEBHOOK_ALLOW_HOSTS:-127.0.0.1,localhost}"
export LEANON_KAFKA_BOOTSTRAP="${LEANON_KAFKA_BOOTSTRAP:-127.0.0.1:9092}"
export LEANON_REDIS_URL="${LEANON_REDIS_URL:-redis://127.0.0.1:6379/0}"
export UV_PYTHON_DOWNLOADS=never
PYTHON="$ROOT/.venv/bin/python"

# note_missing_infra: remember which of Kafka and Redis are not reachable yet, so that
# stop_noted_infra stops only what this command is about to start.
note_missing_infra() {
  split_hostport "$LEANON_KAFKA_BOOTSTRAP"
  STARTED_KAFKA=0; port_open "$HOST" "$PORT" || STARTED_KAFKA=1
  local redis_hostport="${LEANON_REDIS_URL#*://}"; redis_hostport="${redis_hostport#*@}"
  split_hostport "${redis_hostport%%/*}"
  STARTED_REDIS=0; port_open "$HOST" "$PORT" || STARTED_REDIS=1
}
stop_noted_infra() {
  if ((STARTED_KAFKA)); then "$ROOT/deploy/local/kafka.sh" stop; fi
  if ((STARTED_REDIS)); then "$ROOT/deploy/local/redis.sh" stop; fi
}
