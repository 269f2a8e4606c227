# DevOps Control Tower: developer commands. `make` alone lists them.
SHELL := /bin/bash
CARGO ?= cargo
BIN := target/release/devops-control-tower

# The Compose command for the compose-* targets: Compose v2 (`docker compose`) when it works, else
# the standalone `docker-compose` (v1.29, or a standalone v2). Looked up once, and only when a
# compose-* target runs; `make COMPOSE=... compose-up` overrides it.
ifeq ($(origin COMPOSE),undefined)
COMPOSE = $(eval COMPOSE := $(shell if docker compose version >/dev/null 2>&1; then echo docker compose; \
	elif docker-compose version >/dev/null 2>&1; then echo docker-compose; fi))$(COMPOSE)
endif
define need_compose
	@if [ -z "$(strip $(COMPOSE))" ]; then \
		echo "make: no Docker Compose found: install Compose v2 (docker compose) or docker-compose v1.29 (see README, Docker and compose)" >&2; \
		exit 1; \
	fi
endef

.DEFAULT_GOAL := help
.PHONY: help build run test fuzz bench fmt lint migrate compose-up compose-down compose-logs

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

build: ## Build the release binary
	$(CARGO) build --release --locked

run: ## Start the daemon (API + worker) on the embedded SQLite default
	$(CARGO) run --release --locked --

test: ## Run every test (starts a throwaway PostgreSQL; finds or installs Docker Compose v2, python3, curl and jq, Chromium and bubblewrap for them)
	tests/support/ensure-python.sh
	tests/support/ensure-tools.sh
	tests/support/ensure-chromium.sh
	tests/support/ensure-bwrap.sh
	tests/support/ensure-compose.sh tests/support/with-postgres.sh $(CARGO) test --locked --lib --bins --tests

fuzz: ## Fuzz every request-body route with 100,000 cases per store (make test runs a small fixed number)
	JCT_FUZZ_CASES=$${JCT_FUZZ_CASES:-100000} tests/support/with-postgres.sh $(CARGO) test --locked --test fuzz_bodies -- --nocapture

bench: ## Benchmark the release daemon against a throwaway PostgreSQL and SQLite; prints a table
	tests/support/ensure-bwrap.sh
	$(CARGO) build --release --locked --bins --benches
	tests/support/with-postgres.sh $(CARGO) bench --locked --bench queue

fmt: ## Format the code
	$(CARGO) fmt

lint: ## Clippy with warnings as errors
	$(CARGO) clippy --locked --all-targets -- -D warnings

migrate: ## Apply migrations to DATABASE_URL and exit
	$(CARGO) run --release --locked -- migrate

# Build first, then start: docker-compose v1 would start logs-init before building and try to
# pull devops-control-tower:local (it ignores `pull_policy: never`). Same two steps on v2.
compose-up: ## Build the image, then start the compose stack (postgres + control-tower on port 8000)
	$(need_compose)
	$(COMPOSE) build
	$(COMPOSE) up -d

compose-down: ## Stop the compose stack, optional profiles included (the database volume is kept)
	$(need_compose)
	$(COMPOSE) --profile workers --profile redis down

compose-logs: ## Follow the compose stack's logs
	$(need_compose)
	$(COMPOSE) logs -f
