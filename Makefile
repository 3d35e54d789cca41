# Two commands matter: `make up` (the whole stack, in the background) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-deps up down status test test-unit lint helm clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip wheel
	$(BIN)/python -m pip install --quiet -e '.[local,dev]'
	touch $(STAMP)

install: $(STAMP)

# kcat is only used by the tests (publishing from a non-Python Kafka client).
system-deps:
	@command -v kcat >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq kcat >/dev/null; \
	  else echo "kcat is missing: sudo apt-get install kcat (its tests are skipped)"; fi; }
	@# Chromium drives the console tests (tests/e2e/test_console.py, through npm's playwright-core).
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is missing: sudo apt-get install chromium (the console tests are skipped)"; fi; }

up: install
	$(BIN)/flywheel up

down:
	@if [ -x $(BIN)/flywheel ]; then $(BIN)/flywheel down; else echo "nothing installed, nothing to stop"; fi

status: install
	$(BIN)/flywheel status

test: install system-deps
	$(BIN)/python -m pytest -ra --durations=15 $(PYTEST_ARGS)

test-unit: install
	$(BIN)/python -m pytest -ra tests/unit $(PYTEST_ARGS)

# helm, built from its Go module into .flywheel/tools (the tests build it too when missing),
# and the chart rendered with it: `make helm HELM_ARGS="-f my-values.yaml"`.
helm: install
	$(BIN)/python -m infra.helm template $(HELM_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy core schemas producers kafka_ops consumers gateway infra cli bench

clean: down
	rm -rf .flywheel .flywheel-test
