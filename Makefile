# `make run` and `make test` do all set-up on a fresh Debian/Ubuntu machine with python3 (3.11+).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get

.PHONY: run test lint typecheck pytest bench docs redis-server lock clean

run: $(VENV)/.installed
	$(BIN)/chat-gateway run console

test: $(VENV)/.installed redis-server lint typecheck pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check .

typecheck: $(VENV)/.installed
	$(BIN)/mypy --strict core bots

pytest: $(VENV)/.installed redis-server
	$(BIN)/pytest -q -p no:cacheprovider

bench: $(VENV)/.installed redis-server
	$(BIN)/python bench/store_bench.py
	$(BIN)/python bench/gateway_bench.py
	$(BIN)/python bench/e2e_bench.py
	$(BIN)/python bench/tool_bench.py

# Regenerate the README settings table and .env.example after changing core/settings.py.
docs: $(VENV)/.installed
	$(BIN)/python scripts/update_docs.py

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "chat-gateway needs Python 3.11 or newer; $(PYTHON) is $$($(PYTHON) --version)" >&2; exit 1; }
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
		echo "python3-venv is missing; installing it with apt-get"; rm -rf $(VENV); \
		$(APT) update -qq && $(APT) install -y -qq python3-venv >/dev/null && $(PYTHON) -m venv $(VENV); }

$(VENV)/.installed: $(BIN)/python pyproject.toml requirements-dev.lock
	$(BIN)/python -m pip install -q --disable-pip-version-check -c requirements-dev.lock -e '.[test]'
	@touch $@

redis-server:
	@command -v redis-server >/dev/null && command -v redis-cli >/dev/null || { \
		echo "redis-server is missing; installing it with apt-get"; \
		{ $(APT) update -qq && $(APT) install -y -qq redis-server redis-tools >/dev/null; } || { \
		echo "could not install redis-server: run 'apt-get install redis-server' as root, then make test again" >&2; exit 1; }; }

# Refresh the exact versions after changing dependencies in pyproject.toml: requirements.lock is
# what the image installs (runtime only), requirements-dev.lock what make test installs.
lock: $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m pip freeze --exclude-editable | grep -vi '^chat.gateway' > requirements-dev.lock
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q -c requirements-dev.lock .
	.lock-venv/bin/pip freeze | grep -vi '^chat.gateway' > requirements.lock
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache
