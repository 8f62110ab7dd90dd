# lakestory — `make help` lists the targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOROVOD_STAMP := $(VENV)/.horovod
CHROMIUM := /usr/bin/chromium

.DEFAULT_GOAL := help
.PHONY: help venv demo test test-fast lint format clean chromium

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

# Debian's chromium draws the profile reports headless in a test. Installed with apt-get, as
# root or through sudo; where neither works the test says why it skips.
chromium: ## Install Debian's chromium (used by the tests) if it is missing
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi; \
	  if ! command -v apt-get >/dev/null || { [ -n "$$sudo" ] && ! command -v sudo >/dev/null; }; then \
	    echo "make: $(CHROMIUM) is missing and cannot be installed here (needs apt-get, as root or with sudo);" \
	         "the test that draws a profile report in headless Chromium will be skipped"; \
	  else \
	    echo "make: installing Debian's chromium for the report rendering test"; \
	    { $$sudo apt-get update -qq && \
	      $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } || \
	    echo "make: could not install chromium (see above); the report rendering test will be skipped"; \
	  fi; }

# Horovod publishes no wheel, and its 0.28.1 sources need a C++ fix to build against the torch
# lakestory pins: scripts/build-horovod.sh builds it into .venv (minutes the first time; pip
# caches the wheel). Run again when the script or the environment's packages change; the script
# itself returns in seconds when the installed Horovod fits the installed torch.
$(HOROVOD_STAMP): $(STAMP) scripts/build-horovod.sh
	bash scripts/build-horovod.sh $(BIN)/python
	touch $(HOROVOD_STAMP)

.PHONY: horovod
horovod: $(HOROVOD_STAMP) ## Build Horovod (PyTorch, Gloo) into .venv for its torch

# The Horovod backend's tests need Horovod.
test: $(STAMP) $(HOROVOD_STAMP) chromium ## Run lint, the layer contract and the whole test suite
	$(BIN)/ruff check src tests jobs bench
	$(BIN)/lint-imports
	$(BIN)/pytest

# The inner loop: unit tests and the integration tests not marked slow (no whole pipeline, no
# distributed training); `make test` still runs everything.
test-fast: $(STAMP) ## Lint, the layer contract, and the tests not marked slow
	$(BIN)/ruff check src tests jobs bench
	$(BIN)/lint-imports
	$(BIN)/pytest -m "not slow"

lint: $(STAMP) ## ruff, ruff format --check, the layer contract (lint-imports), mypy on src/
	$(BIN)/ruff check src tests jobs bench
	$(BIN)/ruff format --check src tests jobs bench
	$(BIN)/lint-imports
	$(BIN)/mypy src

format: $(STAMP) ## Format the code
	$(BIN)/ruff format src tests jobs bench
	$(BIN)/ruff check --fix src tests jobs bench

clean: ## Remove the demo warehouse (keeps .venv and conf/local)
	rm -rf lakehouse
