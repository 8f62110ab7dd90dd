# lakestory — `make help` lists the targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help venv demo test lint format clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

$(STAMP): setup.py
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "lakestory needs Python 3.10+"'
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP) ## Create .venv and install lakestory with its dev tools

demo: $(STAMP) ## Generate the demo landing data and run the whole pipeline on it
	$(BIN)/lakestory demo

test: $(STAMP) ## Run lint and the whole test suite (unit + integration)
	$(BIN)/ruff check src tests jobs bench
	$(BIN)/pytest

lint: $(STAMP) ## ruff, ruff format --check, mypy on src/
	$(BIN)/ruff check src tests jobs bench
	$(BIN)/ruff format --check src tests jobs bench
	$(BIN)/mypy src

format: $(STAMP) ## Format the code
	$(BIN)/ruff format src tests jobs bench
	$(BIN)/ruff check --fix src tests jobs bench

clean: ## Remove the demo warehouse (keeps .venv and conf/local)
	rm -rf lakehouse
