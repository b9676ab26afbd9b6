# Two commands do all the set-up: `make run` (the dashboard) and `make test` (the tests).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test lint format worker simulator clean

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

## Run the whole test suite (browser tests run when Chromium is installed)
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

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

clean:
	rm -rf $(VENV) .pytest_cache
