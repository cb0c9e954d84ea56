# One-command workflows. Every target creates .venv and installs the pinned set on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: demo test test-extended bench lint constraints clean

$(INSTALLED): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[all,dev]'
	@touch $(INSTALLED)

## Run the main job on the embedded default (no servers needed).
demo: $(INSTALLED)
	$(VENV)/bin/rab demo

## Run the test suite (real PostgreSQL/Redis tests skip unless RAB_REQUIRE_SERVICES=1).
test: $(INSTALLED)
	$(PY) -m pytest -q

## Run the longer suites: fault injection (private PostgreSQL / Redis, RabbitMQ, killed
## workers), schemathesis fuzzing and the headless-Chromium browser tests.
test-extended: $(INSTALLED)
	$(PY) -m pytest -q -m "faults or fuzz or browser"

## Run the benchmarks; JSON results land in bench/results/.
bench: $(INSTALLED)
	$(PY) bench/run_all.py

## Lint: ruff, mypy over every package, and the import-layer contracts (pyproject.toml).
lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy rab app workers models_store contract
	$(VENV)/bin/lint-imports

## Re-resolve the pinned dependency set from pyproject.toml.
constraints: $(INSTALLED)
	$(PY) -m pip freeze --exclude-editable > constraints.tmp
	{ echo "# Resolved dependency set (pip freeze on Python 3.11, x86_64). Used by 'make' and CI as pip -c."; \
	  echo "# Regenerate: make constraints"; cat constraints.tmp; } > constraints.txt && rm constraints.tmp

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
