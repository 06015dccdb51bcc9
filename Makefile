# APS — the two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint bench clean

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

bench: $(STAMP)  ## benchmarks: print figures and RESULT lines
	APS=$(BIN)/aps bash bench/run.sh

clean:
	rm -rf $(VENV) .aps
