# DevOps Control Tower: developer commands. `make` alone lists them.
SHELL := /bin/bash
CARGO ?= cargo
BIN := target/release/devops-control-tower

.DEFAULT_GOAL := help
.PHONY: help build run test fuzz bench fmt lint migrate compose-up compose-down compose-logs

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

build: ## Build the release binary
	$(CARGO) build --release --locked

run: ## Start the daemon (API + worker) on the embedded SQLite default
	$(CARGO) run --release --locked --

test: ## Run every test (starts a throwaway PostgreSQL for them)
	tests/support/with-postgres.sh $(CARGO) test --locked --lib --bins --tests

fuzz: ## Fuzz every request-body route with 100,000 cases per store (make test runs a small fixed number)
	JCT_FUZZ_CASES=$${JCT_FUZZ_CASES:-100000} tests/support/with-postgres.sh $(CARGO) test --locked --test fuzz_bodies -- --nocapture

bench: ## Benchmark the release daemon against a throwaway PostgreSQL and SQLite; prints a table
	$(CARGO) build --release --locked --bins --benches
	tests/support/with-postgres.sh $(CARGO) bench --locked --bench queue

fmt: ## Format the code
	$(CARGO) fmt

lint: ## Clippy with warnings as errors
	$(CARGO) clippy --locked --all-targets -- -D warnings

migrate: ## Apply migrations to DATABASE_URL and exit
	$(CARGO) run --release --locked -- migrate

compose-up: ## Start the compose stack (postgres + control-tower on port 8000)
	docker compose up --build -d

compose-down: ## Stop the compose stack, optional profiles included (the database volume is kept)
	docker compose --profile workers --profile redis down

compose-logs: ## Follow the compose stack's logs
	docker compose logs -f
