# Two commands do all the set-up: `make run` (the dashboard) and `make test` (the tests).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
# The test OpenID provider of the company sign-in browser tests (see its rule below).
OIDC_DIR := tests/oidc
OIDC_STAMP := $(OIDC_DIR)/node_modules/.package-lock.json

.PHONY: run test lint format worker simulator clean bench bench-smoke bench-all

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

## Start the dashboard on http://127.0.0.1:8000 (demo mode with a built-in simulator when no key is set)
DATA := $(or $(BATCHWEB_DATA_DIR),data)

run: $(STAMP)
	@mkdir -p $(DATA)
	@test -s $(DATA)/secret_key || (umask 077; $(PY) -c "import secrets; print(secrets.token_urlsafe(50))" > $(DATA)/secret_key)
	@test -s $(DATA)/encryption_key || (umask 077; $(PY) -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())" > $(DATA)/encryption_key)
	$(PY) manage.py serve

## Run the whole test suite (browser tests run when Chromium is installed; the company sign-in
## ones also need the test OpenID provider, installed below when npm is present)
test: $(STAMP) $(OIDC_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

## The company sign-in browser tests' OpenID provider (npm, tests/oidc): installed when `npm` is
## on PATH and node_modules is missing or older than the lock file; without npm nothing is done
## and tests/e2e/test_oidc.py is skipped with the reason. The stamp is npm's own record of what
## `npm ci` installed, so an `npm ci` run by hand (or by CI) counts too.
$(OIDC_STAMP): $(OIDC_DIR)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		echo "Installing the test OpenID provider (npm ci in $(OIDC_DIR))"; \
		(cd $(OIDC_DIR) && npm ci --no-audit --no-fund) && touch $@ \
			|| echo "npm ci failed in $(OIDC_DIR): the company sign-in browser tests will be skipped"; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

worker: $(STAMP)
	$(PY) manage.py sync_batches --loop

simulator: $(STAMP)
	$(PY) -m simulator --port 8765

## Benchmarks (bench/README.md): every page under load at 1,000, 10,000 and 100,000 batches,
## written to bench/RESULTS.md (about 15 minutes); needs `wrk` (apt-get install wrk)
bench: $(STAMP)
	$(PY) bench/run.py $(BENCH_ARGS)

## The same, small and short, for CI: no timing assertions, results in a temporary file
bench-smoke: $(STAMP)
	$(PY) bench/run.py --sizes 1000 --duration 1 --connections 1 --result-lines 2000 \
		--output $(or $(BENCH_OUTPUT),$${TMPDIR:-/tmp}/batchweb-bench-smoke.md)

## `make bench`, then every other benchmark in bench/ (each prints its own table; about 30 min)
bench-all: bench
	$(PY) bench/validate_jsonl.py
	$(PY) bench/results_summary.py
	$(PY) bench/upload_memory.py
	$(PY) bench/sync_calls.py
	$(PY) bench/results_viewer.py
	$(PY) bench/list_page.py
	$(PY) bench/spend_page.py

clean:
	rm -rf $(VENV) .pytest_cache
