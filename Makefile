# Every target bootstraps .venv on first use; only Python 3.11+ and make are needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo check test lint bench clean screenshots

$(STAMP): pyproject.toml shim/dyncreds_shim.py shim/dyncreds-shim
	@$(PYTHON) -c 'import sys; sys.exit("dyncreds needs Python 3.11+") if sys.version_info < (3, 11) else None'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,demo,lint,ui]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/dyncreds demo

lint: $(STAMP)
	$(BIN)/ruff check agent shim tests bench
	$(BIN)/ruff format --check agent shim tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# Three workers on two cores: most end-to-end tests wait on timers and processes, not
# the CPU. A file's tests stay together on one worker (its fixtures, one moto each).
PYTEST_ARGS ?= -n 3 --dist loadfile

test: lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The edit-test loop: lint, unit and mock-clock tests. No moto, no processes, no
# clients: tests/conftest.py fails a test that starts one without its mark.
CHECK_MARKS := not e2e and not process and not clients

check: lint
	$(BIN)/python -m pytest -q -n 2 --ignore=tests/e2e -m "$(CHECK_MARKS)"

# The web console's pages as its browser test sees them (committed; the README shows two).
screenshots: $(STAMP)
	DYNCREDS_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest -q \
		tests/e2e/test_ui.py -k browser

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
