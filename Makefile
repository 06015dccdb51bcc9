# APS — the two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

QUIX_VENV  := .venv-quix
QUIX_STAMP := $(QUIX_VENV)/.installed

.PHONY: install run test lint bench bench-pipeline quix-venv clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install APS with its test tools

run: $(STAMP)  ## start the embedded stack and run the bundled scenario
	$(BIN)/aps run

test: $(STAMP)  ## run the whole test suite (unit + integration against real components)
	$(BIN)/ruff check streams tests bench
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check streams tests bench

# Quix Streams (variant c of `aps bench pipeline`) needs confluent-kafka < 2.13 while APS pins
# 2.16.1: it gets its own virtualenv, pinned by bench/requirements-quix.txt.
$(QUIX_STAMP): bench/requirements-quix.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	$(PYTHON) -m venv $(QUIX_VENV)
	$(QUIX_VENV)/bin/pip install --quiet --upgrade pip
	$(QUIX_VENV)/bin/pip install --quiet -r bench/requirements-quix.txt
	@touch $(QUIX_STAMP)

quix-venv: $(QUIX_STAMP)  ## the Quix Streams virtualenv of the pipeline benchmark

bench: $(STAMP) $(QUIX_STAMP)  ## benchmarks: print figures and RESULT lines
	APS=$(BIN)/aps bash bench/run.sh

bench-pipeline: $(STAMP) $(QUIX_STAMP)  ## only `aps bench pipeline` (the standard workload)
	APS=$(BIN)/aps bash bench/run.sh pipeline

clean:
	rm -rf $(VENV) $(QUIX_VENV) .aps
