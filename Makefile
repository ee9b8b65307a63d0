# tracecode: `make run` serves the demo, `make test` runs every check. Both set everything up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint browser bench bench-resolve bench-gate lock clean

$(STAMP): requirements-dev.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/tracecode serve --demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint browser
	$(BIN)/pytest

# Headless Chromium (and CJK fonts) for the region page's browser test, from Debian's packages when
# missing and we may install them; without it that one test is skipped and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		{ apt-get install -y -qq chromium fonts-noto-cjk >/dev/null 2>&1 || \
		  { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium fonts-noto-cjk >/dev/null 2>&1; }; }; } || \
		echo "chromium is not installed and cannot be installed here: the browser test will be skipped"

# The peak-day load suite (locust): seeds a database of its own, serves it, drives the mix, prints a table per
# request kind and the plot's path. Options through BENCH_ARGS, e.g. `make bench BENCH_ARGS="--users 50 --duration 60"`
# (bench/PEAK.md has the rest: remote deployments, many locust workers).
bench: install
	$(BIN)/python bench/peak.py $(BENCH_ARGS)

# The resolve benchmark; options through BENCH_ARGS, e.g. `make bench-resolve BENCH_ARGS="--workers 1 --rounds 1"`.
# wrk drives the load: installed from Debian's packages when missing and we may, else a Python generator does.
bench-resolve: install
	@command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		{ apt-get install -y -qq wrk >/dev/null 2>&1 || \
		  { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq wrk >/dev/null 2>&1; }; }; } || \
		echo "wrk is not installed and cannot be installed here: bench/resolve.py uses its Python load generator"
	$(BIN)/python bench/resolve.py $(BENCH_ARGS)

# The gate benchmark (durable accepted scans per second); options through BENCH_ARGS, e.g. BENCH_ARGS="--gates 32".
bench-gate: install
	$(BIN)/python bench/gate.py $(BENCH_ARGS)

# Re-pin every dependency (needs uv, installed into the venv by `make install`).
lock: install
	$(BIN)/uv pip compile pyproject.toml -o requirements.lock --generate-hashes --python-version 3.11 -q
	$(BIN)/uv pip compile pyproject.toml --extra dev -o requirements-dev.lock --generate-hashes --python-version 3.11 -q

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache
