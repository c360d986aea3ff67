# One command per habit; CI runs the same ones (see .ci/run).
.DEFAULT_GOAL := help
VENV := .venv/bin

.PHONY: help serve test lint format openapi lock bench

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-10s %s\n", $$1, $$2}'

serve: ## Run Tally on an embedded SQLite file (./tally.db)
	./scripts/serve.sh

test: ## Run the whole test suite (installs what it needs)
	./scripts/test.sh

lint: ## ruff, mypy --strict and the import-linter layer contracts
	./scripts/bootstrap.sh dev
	$(VENV)/ruff check src tests scripts
	$(VENV)/ruff format --check src tests scripts
	$(VENV)/mypy src tests scripts
	$(VENV)/lint-imports

format: ## Apply ruff's fixes and formatting
	$(VENV)/ruff check --fix src tests scripts
	$(VENV)/ruff format src tests scripts

openapi: ## Regenerate docs/openapi.json from the code
	./scripts/bootstrap.sh dev
	$(VENV)/tally openapi > docs/openapi.json

lock: ## Re-lock the Python dependencies (needs uv)
	uv pip compile pyproject.toml --generate-hashes --python-version 3.11 -o requirements/runtime.lock
	uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 -o requirements/dev.lock

bench: ## tally bench (every scenario on SQLite and PostgreSQL next to their ceilings), then the observability overhead, balance reads with no cache, memory, Redis and Memcached, WAL per transfer by balance shape, time per statement on SQLite and PostgreSQL (SQLAlchemy against the driver path), and the floor: the ceiling's transaction served over HTTP by a bare ASGI app, with CPU added per transfer
	./scripts/bootstrap.sh dev
	$(VENV)/tally bench
	$(VENV)/python scripts/bench_observability.py
	$(VENV)/python scripts/bench_cache.py
	$(VENV)/python scripts/bench_account_balances.py
	$(VENV)/python scripts/bench_statements.py
	$(VENV)/python scripts/bench_db_floor.py --spin-us 0 --spin-us 150 --spin-us 300 --spin-us 450
