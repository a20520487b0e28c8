# The two commands of the README: `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup demo test test-quick bench clean

setup: $(VENV)/.installed
	@scripts/install-chromium $(BIN)/python
	@# The editable install leaves the project's own modules uncompiled, and with PYTHONDONTWRITEBYTECODE
	@# every `tracker` run would compile them again (~0.35 s of start-up). compileall skips what is current.
	@$(BIN)/python -m compileall -q -j 0 tracker scrapers >/dev/null

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]'
	@touch $@

demo: setup
	$(BIN)/tracker demo

test: setup
	$(BIN)/pytest $(PYTEST_ARGS)

test-quick: setup
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/extraction.py
	$(BIN)/python bench/matching.py
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/http_breakdown.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache
