# Two commands do everything: `make run` (back office with demo data) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
FLASK  := $(BIN)/flask --app run
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 5000

.PHONY: install run test test-postgres lint format e2e bench clean \
	translations translations-extract translations-update translations-compile

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	@touch $(STAMP)

install: $(STAMP)

run: install translations-compile
	$(FLASK) db upgrade
	$(FLASK) seed --demo-users
	@echo "Back office on http://$(HOST):$(PORT)/admin/"
	$(FLASK) run --host $(HOST) --port $(PORT)

test: install translations-compile
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The same suite against PostgreSQL (defaults to the local server's `test` database).
TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/test
test-postgres: install translations-compile
	TEST_DATABASE_URL=$(TEST_DATABASE_URL) $(BIN)/python -m pytest $(PYTEST_ARGS)

# Browser journeys in headless Chromium against a real server (Debian's chromium package).
CHROMIUM ?= /usr/bin/chromium
e2e: install translations-compile
	@if [ ! -x "$(CHROMIUM)" ]; then \
		echo "make e2e needs Chromium at $(CHROMIUM)."; \
		echo "Install Debian's package:  sudo apt-get install -y chromium"; \
		echo "(or point CHROMIUM=/path/to/chromium; Playwright's own browser download is not used)"; \
		exit 2; \
	fi
	CHROMIUM_PATH=$(CHROMIUM) $(BIN)/python -m pytest e2e -p no:cacheprovider $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check backoffice tests e2e bench config.py run.py
	$(BIN)/ruff format --check backoffice tests e2e bench config.py run.py

format: install
	$(BIN)/ruff format backoffice tests bench config.py run.py
	$(BIN)/ruff check --fix backoffice tests bench config.py run.py

clean:
	rm -rf $(VENV) .pytest_cache instance/backoffice.sqlite*

# The deployment files (Dockerfile, docker-compose.yml, gunicorn.conf.py) checked without Docker:
# the compose web command against a fresh PostgreSQL database on 127.0.0.1 (see the script).
.PHONY: check-deploy
check-deploy: install
	bash scripts/check_deploy.sh

# Translations: .po files are in git, .mo files are built (install, CI, Dockerfile).
translations-extract: install
	$(BIN)/pybabel extract -F babel.cfg -k _l -k lazy_gettext -k _ -k gettext -k ngettext:1,2 \
		--no-location --sort-output -o backoffice/translations/messages.pot .
translations-update: translations-extract
	$(BIN)/pybabel update -i backoffice/translations/messages.pot -d backoffice/translations \
		-D messages --no-fuzzy-matching
translations-compile: install
	@$(BIN)/pybabel compile -f -d backoffice/translations -D "messages admin"
translations: translations-update translations-compile
