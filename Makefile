# Two commands matter: `make up` (the whole stack, in the background) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install up down status test test-unit lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip wheel
	$(BIN)/python -m pip install --quiet -e '.[local,dev]'
	touch $(STAMP)

install: $(STAMP)

up: install
	$(BIN)/flywheel up

down:
	@if [ -x $(BIN)/flywheel ]; then $(BIN)/flywheel down; else echo "nothing installed, nothing to stop"; fi

status: install
	$(BIN)/flywheel status

test: install
	$(BIN)/python -m pytest -ra $(PYTEST_ARGS)

test-unit: install
	$(BIN)/python -m pytest -ra tests/unit $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy core schemas producers consumers gateway infra cli

clean: down
	rm -rf .flywheel .flywheel-test
