# qrfleet: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast lint firmware-check clean

setup: $(STAMP)

# Reinstall only when the pinned dependencies change.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/qrfleet demo --out demo-out

# The harness scenarios run on 8 virtual boards here (plain `pytest tests/hil` uses 4).
test: setup firmware-check
	QRFLEET_BOARD=virtual:8 $(BIN)/python -m pytest tests

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check firmware host tools qrfleet tests boot.py main.py

# Every firmware module must compile for the board.
firmware-check: setup
	$(BIN)/python -m tools.firmware_check

clean:
	rm -rf $(VENV) demo-out .pytest_cache
