# Two commands: `make run` serves the default models, `make test` runs the tests.
# `make run PORT=9000` serves on another port.
# Both create .venv and install the pinned dependencies on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test fuzz chaos models bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

models: $(STAMP)
	$(BIN)/infercloud models pull smollm2-135m-instruct
	$(BIN)/infercloud models pull all-minilm-l6-v2

PORT ?= 8000

run: models
	$(BIN)/infercloud serve --port $(PORT)

test: models
	$(BIN)/python -m pytest -q tests

# The long forms of the reliability suite (`make test` runs a short form of each):
# schemathesis with 10x the cases and a new seed each run; chaos with 5 rounds of each fault.
fuzz: models
	INFERCLOUD_FUZZ_EXAMPLES=500 INFERCLOUD_FUZZ_SEED=random $(BIN)/python -m pytest -q -s tests/fuzz

chaos: models
	INFERCLOUD_CHAOS_ROUNDS=5 $(BIN)/python -m pytest -q tests/chaos

# `make bench` also serves W1 with this checkout and with the pinned reference commit BENCH_REF, in one run on
# this box (bench-results/ref/compare.md: the ratio column is this checkout over the reference). Move BENCH_REF
# forward when docs/benchmarks.md's tables are redone.
BENCH_REF ?= cbd28e6

bench: models
	mkdir -p bench-results
	$(BIN)/python -m infercloud.bench.offline --workload all --out bench-results/offline.json
	$(BIN)/infercloud bench compare --workload W1 --concurrency 16,64 --num-requests 64 \
		--peers infercloud,infercloud@$(BENCH_REF) --no-progress --out bench-results/ref

clean:
	rm -rf $(VENV) build *.egg-info
