# Herald: `make run` starts everything locally, `make test` runs every test. `make help` lists all.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export PATH := $(HOME)/.local/bin:$(PATH)
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
PYTEST := $(UV) run --frozen pytest -p no:cacheprovider
PACKAGES := shared services/api services/status services/sender services/messageapp

.PHONY: help uv sync run test test-unit test-integration test-e2e test-chaos test-deploy lint fmt

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

uv: ## install uv if this machine lacks it
	@command -v uv >/dev/null 2>&1 || [ -x "$(HOME)/.local/bin/uv" ] || \
		python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv

sync: uv ## install the workspace (all five console scripts) from uv.lock
	$(UV) sync --frozen

run: sync ## migrate, then start api, status, sender and the stand-in provider (Ctrl-C stops all)
	$(UV) run --frozen python dev/run.py

test: sync system-deps ## run every test (unit, contract, integration, e2e, chaos, deploy) on real PostgreSQL and Redis
	$(PYTEST) -n 2 tests

test-unit: sync ## pure tests: no sockets
	$(PYTEST) tests/unit

test-integration: sync ## real PostgreSQL, Redis and the stand-in provider
	$(PYTEST) tests/integration

test-e2e: sync ## the whole stack as processes, over HTTP only
	$(PYTEST) tests/e2e

test-chaos: sync ## crashes and restarts of the sender, Redis and PostgreSQL (private instances)
	$(PYTEST) -n 2 tests/chaos

test-deploy: sync system-deps ## the deployment configs: validators, real nginx gateway, Prometheus and PgBouncer
	$(PYTEST) tests/deploy

lint: sync lint-deploy ## ruff, formatting, mypy strict, the import contracts, each package's declared dependencies (deptry), the library adapters' contracts (Redis) and the deployment configs
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy
	$(UV) run --frozen lint-imports
	@# Each package declares exactly the third-party packages it imports (deptry: missing, unused, transitive).
	for package in $(PACKAGES); do (cd $$package && $(UV) run --frozen deptry src) || exit 1; done
	$(PYTEST) tests/contract

fmt: sync ## format and autofix
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .

# Deployment (docs/operations.md): Debian tools for the checks, the checks, and compose.
# command:Debian package; nginx lives in /usr/sbin, which a non-root PATH may lack.
DEPLOY_APT := nginx:nginx prometheus:prometheus promtool:prometheus pgbouncer:pgbouncer
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
.PHONY: system-deps lint-deploy up

system-deps: ## install the Debian tools the deployment checks and tests run: nginx, prometheus (promtool), pgbouncer
	@missing="$$(for pair in $(DEPLOY_APT); do tool="$${pair%%:*}"; command -v "$$tool" >/dev/null || [ -x "/usr/sbin/$$tool" ] || echo "$${pair#*:}"; done | sort -u | tr '\n' ' ')"; \
	if [ -n "$${missing// }" ]; then \
		echo "system-deps: installing $$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		$(SUDO) apt-get install -y --no-install-recommends $$missing \
			|| { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends $$missing; }; \
	fi

lint-deploy: sync system-deps ## validate Dockerfile, compose, kustomize overlays, Prometheus, nginx, Grafana and PgBouncer configs
	$(UV) run --frozen python scripts/lint_deploy.py

up: ## build the images and run the whole stack with docker compose (gateway :8080, Grafana :3000)
	docker compose up --build

# Load generators and baselines from Debian (command:package); installed when missing.
BENCH_APT := wrk:wrk redis-benchmark:redis-tools pgbench:postgresql-client
BENCH_SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: bench
bench: sync ## benchmarks with same-run baselines -> bench/results/ (BENCH_QUICK=1: ~6 min; see docs/performance.md)
	@missing="$$(for pair in $(BENCH_APT); do command -v "$${pair%%:*}" >/dev/null || echo "$${pair#*:}"; done | tr '\n' ' ')"; \
	if [ -n "$${missing// }" ]; then \
		echo "bench: installing $$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		$(BENCH_SUDO) apt-get install -y --no-install-recommends $$missing \
			|| { $(BENCH_SUDO) apt-get update && $(BENCH_SUDO) apt-get install -y --no-install-recommends $$missing; }; \
	fi
	$(UV) run --frozen python -m bench
