# Herald: `make run` starts everything locally, `make test` runs every test. `make help` lists all.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export PATH := $(HOME)/.local/bin:$(PATH)
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
PYTEST := $(UV) run --frozen pytest -p no:cacheprovider

.PHONY: help uv sync run test test-unit test-integration test-e2e lint fmt

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

uv: ## install uv if this machine lacks it
	@command -v uv >/dev/null 2>&1 || [ -x "$(HOME)/.local/bin/uv" ] || \
		python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv

sync: uv ## install the workspace (all five console scripts) from uv.lock
	$(UV) sync --frozen

run: sync ## migrate, then start api, status, sender and the stand-in provider (Ctrl-C stops all)
	$(UV) run --frozen python dev/run.py

test: sync ## run every test: unit, integration and end-to-end, on real PostgreSQL and Redis
	$(PYTEST) -n 2 tests

test-unit: sync ## pure tests: no sockets
	$(PYTEST) tests/unit

test-integration: sync ## real PostgreSQL, Redis and the stand-in provider
	$(PYTEST) tests/integration

test-e2e: sync ## the whole stack as processes, over HTTP only
	$(PYTEST) tests/e2e

lint: sync ## ruff, formatting, mypy strict and the import contracts
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy
	$(UV) run --frozen lint-imports

fmt: sync ## format and autofix
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .
