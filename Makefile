# One command to run tidings, one to test it. Both create .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: dev test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## make dev: install, migrate SQLite under ./.tidings, create a dev key, serve on :8000
dev: $(STAMP)
	$(BIN)/tidings dev

## make test: lint, type-check and run the whole test suite
test: $(STAMP) lint
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

## make bench: tidings (SQLite, PostgreSQL) against Celery+Redis+requests, same machine, same run
bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server postgresql)
	$(BIN)/python bench/benchmark.py

clean:
	rm -rf $(VENV) .tidings
