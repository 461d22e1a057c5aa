# FraudOps: `make demo` runs the loop on embedded defaults, `make test` runs the test suite.
# Both install what they need (uv, then the locked environment) on a fresh machine.

SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
RUN := $(UV) run --frozen

.PHONY: help setup system-deps demo test test-unit lint bench clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

# Where PYTHONDONTWRITEBYTECODE is set (CI machines, containers), Python never caches the
# bytecode it compiles, so every process would compile every module it imports from source:
# then the environment and the project are compiled once, at install (measured:
# `fraudops monitor` on the demo's data took 13.5 s instead of 21.8 s). Left out: plotly's
# generated validators and figure classes, 15,000 of the environment's 33,500 modules, few
# of which any process imports (compiling everything took 45 s to 3 min here; this, half).
SOURCES := fraudops service dashboard feature_repo scripts tests bench
NOT_COMPILED := '/plotly/(validators|graph_objs)/'
SITE_PACKAGES = $$($(RUN) python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# Optional extras to install: `make test` adds PySpark (the Spark parity tests), `make demo`
# does not (it never uses Spark, and PySpark is a 400 MB download).
EXTRAS ?=
setup:  ## Install uv if missing, then the locked environment (uv sync --frozen)
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || { \
	  echo "uv not found: installing it with pip"; \
	  python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet uv; }
	@$(UV) sync --frozen $(EXTRAS)
	@$(if $(PYTHONDONTWRITEBYTECODE),$(RUN) python -m compileall -q -j 0 -x $(NOT_COMPILED) \
	  $(SITE_PACKAGES) $(SOURCES) >/dev/null)

demo: setup  ## Run the whole loop on embedded defaults (no services needed)
	@$(RUN) python scripts/demo.py

system-deps:  ## As root (CI): install docker-compose and chromium for the compose and browser tests
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; \
	  command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	  [ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	  if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi; \
	else echo "not root: skipping system packages (docker-compose, chromium); their tests will say so"; fi

# Test workers (pytest-xdist), each taking whole modules (their fixtures stay in one
# process), the longest first; each worker has its own throwaway Redis. Most tests wait on
# servers they start, so two workers help even on 2 cores. TEST_WORKERS=1: one process.
TEST_WORKERS ?= 2
test: EXTRAS = --extra spark
test: setup  ## Run the whole test suite (unit, model, integration; Spark's extra included)
	@$(RUN) pytest tests $(if $(filter 1,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

test-unit: setup  ## Unit tests only (no services)
	@$(RUN) pytest tests/unit

lint: setup  ## ruff and mypy
	@$(RUN) ruff check . && $(RUN) ruff format --check . && $(RUN) mypy

bench: setup  ## Run the benchmarks; JSON results in bench/results/
	@for b in bench/bench_*.py; do echo "== $$b"; $(RUN) python $$b || exit 1; done

clean:  ## Remove the embedded data directory
	rm -rf data
