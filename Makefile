# LeanOn: `make help` lists what each target does. Everything runs on this machine: Kafka 4.x
# (KRaft) from Maven Central and Debian's redis-server, started only when not reachable.
SHELL := /bin/bash
.DEFAULT_GOAL := help
LOCAL := deploy/local
export UV_PYTHON_DOWNLOADS := never

.PHONY: help install up down run test test-unit lint bench bench-quick status clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: ## uv, the locked Python env, the Kafka jars and redis-server (idempotent)
	@$(LOCAL)/install.sh

up: install ## start Kafka, Redis and the three services in the background; returns when all are ready
	@$(LOCAL)/infra.sh up
	@$(LOCAL)/services.sh start

down: ## stop the services, and the Kafka and Redis that LeanOn started
	@$(LOCAL)/services.sh stop
	@$(LOCAL)/infra.sh down

run: install ## the whole stack in the foreground with a demo workload and a live summary; Ctrl-C stops it
	@$(LOCAL)/run.sh

test: install ## the whole suite (unit, integration, e2e) against real Kafka and Redis
	@$(LOCAL)/test.sh

test-unit: install ## unit tests only: no Kafka, no Redis, seconds
	@.venv/bin/python -m pytest tests/unit -q

lint: install ## ruff and mypy
	@.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy shared/src services

bench: install ## the benchmarks (JSON and plots under bench/results/); starts Kafka and Redis if needed
	@$(LOCAL)/bench.sh $(ARGS)

bench-quick: install ## a smaller benchmark run for everyday use
	@$(LOCAL)/bench.sh --quick

status: ## what is running
	@$(LOCAL)/services.sh status; $(LOCAL)/kafka.sh status; $(LOCAL)/redis.sh status

clean: down ## stop everything and remove .run/ (local data and secrets)
	@rm -rf .run
