# qrfleet: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast lint firmware-check browser screenshot clean

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
test: setup firmware-check browser
	QRFLEET_BOARD=virtual:8 $(BIN)/python -m pytest tests --durations=15

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check firmware host tools qrfleet tests boot.py main.py

# Debian's Chromium for the dashboard's browser test: apt-get (as root) only where it is missing.
browser: setup
	$(BIN)/python -m tools.browser install

# The README's picture of the dashboard: a server, three virtual boards, one showing a payment QR.
screenshot: browser
	$(BIN)/python -m tools.browser screenshot docs/img/dashboard.png

# Every firmware module must compile for the board.
firmware-check: setup
	$(BIN)/python -m tools.firmware_check

clean:
	rm -rf $(VENV) demo-out .pytest_cache
