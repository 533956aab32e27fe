# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Test processes: the suite waits on servers, subprocesses and databases as much as it computes,
# so two processes finish it well sooner on two cores; a test file runs whole in one of them.
TEST_WORKERS ?= 2
# The schema fuzzer runs beside them in a pytest of its own: inside an xdist worker, schemathesis
# runs only a token of its cases (150 requests a role instead of 6,600).
FUZZ := tests/integration/test_openapi_fuzz.py

.PHONY: run test lint typecheck unit install clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	$(BIN)/python -m openmaas.engine.kernels
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/openmaas db upgrade
	$(BIN)/openmaas serve

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	@log=$$(mktemp); $(BIN)/pytest -p no:xdist $(FUZZ) >$$log 2>&1 & fuzz=$$!; \
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --ignore=$(FUZZ); suite=$$?; \
	wait $$fuzz; fuzzed=$$?; echo "===== $(FUZZ), run beside the rest:"; \
	if [ $$fuzzed -eq 0 ]; then tail -n 2 $$log; else cat $$log; fi; rm -f $$log; \
	[ $$suite -eq 0 ] && [ $$fuzzed -eq 0 ]

unit: $(STAMP)
	$(BIN)/pytest tests/unit

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
