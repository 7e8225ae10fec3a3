# learncredits: `make run` starts the service with a demo org; `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: help run test test-fast test-sqlite test-postgres check lint typecheck bench api-docs clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	PYTHON=$(PYTHON) sh scripts/bootstrap-venv.sh $(VENV)

# The service refuses to start without a SECRET_KEY; `make run` makes one for this checkout
# on first run and hands it over as a file (settings read SECRET_KEY_FILE).
KEY_FILE := $(CURDIR)/var/secret-key
RUN_ENV := SECRET_KEY_FILE=$(KEY_FILE) LEARNCREDITS_VAR_DIR=$(CURDIR)/var

$(KEY_FILE):
	@mkdir -p $(dir $@)
	@umask 077 && $(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(64))' > $@

run: $(STAMP) $(KEY_FILE) ## install, migrate, create the demo org on first run, and serve on SQLite
	$(RUN_ENV) $(BIN)/learncredits migrate --verbosity 0
	$(RUN_ENV) $(BIN)/learncredits demo --host $(HOST) --port $(PORT)
	$(RUN_ENV) $(BIN)/learncredits serve --host $(HOST) --port $(PORT)

test: $(STAMP) ## install and run the whole test suite on SQLite and on PostgreSQL (at once on two or more cores)
	$(BIN)/python scripts/run_tests.py

test-fast: $(STAMP) ## while working: SQLite, no browsers, no process-starting or long fuzz tests
	$(BIN)/python scripts/run_tests.py --only sqlite -m "not browser and not slow"

test-sqlite: $(STAMP) ## the suite on SQLite only
	$(BIN)/python scripts/run_tests.py --only sqlite

test-postgres: $(STAMP) ## the suite on PostgreSQL only
	$(BIN)/python scripts/run_tests.py --only postgres

lint: $(STAMP) ## ruff lint and format check, and the import contracts (pyproject.toml)
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/lint-imports

typecheck: $(STAMP) ## mypy with django-stubs
	$(BIN)/mypy src

check: lint typecheck test ## everything CI runs

bench: $(STAMP) ## benchmarks with their baselines (see docs/benchmarks.md)
	$(BIN)/python bench/run_all.py

api-docs: $(STAMP) ## regenerate docs/api.md from the OpenAPI document
	$(BIN)/python scripts/api_reference.py

clean: ## remove the virtualenv and local data
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
