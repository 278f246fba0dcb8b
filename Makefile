# Observatory — the two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint ui services stop bench clean ghost docs prerequisites screenshots

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

## Run the demo on the embedded defaults: Postgres, migrations, sample data through Dagster, a summary.
demo: $(VENV)/.installed
	$(BIN)/observatory demo

## Install, lint (ruff, one-way imports) and run the whole test suite.
test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## ruff (lint and format) and import-linter's architecture contracts (pyproject.toml).
lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

## The Dagster UI on http://127.0.0.1:3000 (webserver + daemon, instance in the embedded Postgres).
ui: $(VENV)/.installed
	$(BIN)/observatory services start
	eval "$$($(BIN)/observatory env)" && PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

services: $(VENV)/.installed
	$(BIN)/observatory services start

stop:
	$(BIN)/observatory services stop

## Benchmarks: each prints one JSON object (each writes its payloads below the collect root, <home>/collect by default).
bench: $(VENV)/.installed
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/events.py --n 100000
	$(BIN)/python bench/cluster_quality.py
	$(BIN)/python bench/backup.py
	$(BIN)/python bench/exports.py
	$(BIN)/python bench/publishing.py
	$(BIN)/python bench/trends.py --events 100000 --trends 50
	$(BIN)/python bench/trend_calibration.py --worlds 300
	$(BIN)/python bench/polling.py
	$(BIN)/python bench/credits.py
	$(BIN)/python bench/sentiment.py --labelled ../shared/data/sentiment-dev.csv
	$(BIN)/python bench/webhooks.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/analysis.py --items 1000000 --authors 10000
	$(BIN)/python bench/freshness.py --stories 5 --interval 40

clean: stop
	rm -rf .observatory

## A real Ghost 6 for the publishing tests (Node 22, ghost-cli, SQLite) in $OBSERVATORY_GHOST_DIR or /opt/observatory-ghost.
ghost:
	bash scripts/install-ghost.sh

## The system packages the tests and `make screenshots` need (Debian/Ubuntu, as root), only those missing:
## headless Chromium, docker-compose (the compose file's check), redis-server (the Celery executor's broker).
prerequisites:
	@missing=""; for tool in chromium docker-compose redis-server; do \
	  command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "prerequisites: chromium, docker-compose and redis-server are installed"; fi

## Regenerate the generated documentation (docs/configuration.md from resources/settings.py).
docs: $(VENV)/.installed
	$(BIN)/observatory config --markdown > docs/configuration.md

## The README's pictures, taken by headless Chromium from the demo's Dagster UI and static site.
screenshots: $(VENV)/.installed
	$(BIN)/python scripts/screenshots.py --out docs/img
