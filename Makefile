# The two set-up commands (README): `make demo` and `make test`. Both create the
# virtual environment and install everything they need themselves.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test unit integration bench native dev lint format clean prometheus-tools

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench,test,lint,native]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/segengine demo

# promtool and prometheus (Debian's package `prometheus`): the alert rule tests and the
# live Prometheus test. Installed only when missing; quiet.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
prometheus-tools:
	@command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || { \
	  log=$$(mktemp); $(SUDO) apt-get update -qq >$$log 2>&1 && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >>$$log 2>&1 \
	  || { cat $$log; rm -f $$log; exit 1; }; rm -f $$log; }

# Every test starts its own broker and Redis on free ports, so tests run side by side:
# TEST_WORKERS processes (pytest-xdist); a worker that runs out of tests takes some of the other's.
TEST_WORKERS ?= 2
test: $(STAMP) prometheus-tools
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist worksteal --durations=10

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

integration: $(STAMP) prometheus-tools
	$(BIN)/python -m pytest -q tests/integration

# The benchmark measures the compiled core when it can be built here (a C compiler), the
# Python one otherwise; it says which.
bench: $(STAMP)
	$(BIN)/segengine native build --if-possible
	$(BIN)/python -m bench.run

# The pure core compiled with mypyc (engine/native.py): optional, the Python modules run without it.
native: $(STAMP)
	$(BIN)/segengine native build

# ruff (lint, and the formatter in check mode) and mypy --strict on the package
lint: $(STAMP)
	$(BIN)/ruff check engine tests bench
	$(BIN)/ruff format --check engine tests bench
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix engine tests bench
	$(BIN)/ruff format engine tests bench

dev: $(STAMP)
	$(BIN)/segengine dev

clean:
	rm -rf $(VENV) bench-results.json .pytest_cache engine/_native
