# Two commands: `make run` serves the default models, `make test` runs the tests.
# `make run PORT=9000` serves on another port.
# Both create .venv and install the pinned dependencies on first use: torch first, on its own, then the package.
#
# Which torch build (docs/deploy.md): TORCH=auto (the default) takes the CUDA build where `nvidia-smi` exists,
# else the CPU build. CPU: PyTorch's CPU index (TORCH_CPU_INDEX) is added as an extra index when this machine
# reaches it (a 5 s check), so pip takes torch==2.13.0+cpu rather than PyPI's Linux build, which is the CUDA
# one; unreached, pip uses only its own indexes and find-links (where a local CPU wheel may lie). On Linux the CPU
# build is asked for by name (torch==2.13.0+cpu), so where no index or find-links has it the install fails
# instead of quietly taking the CUDA build.
# CUDA: PyPI's build. Overrides: `make run TORCH=cpu`, `make run TORCH=cuda`, or `TORCH_INDEX=URL` (an extra
# index taken as given, e.g. https://download.pytorch.org/whl/cu128). The choice is made once, when .venv is
# created: `make clean` first to switch. `make check-wheel` installs the built wheel into a fresh venv and serves
# SmolLM2 from it on CHECK_PORT: a chat and the dashboard page (CI runs it).
# `make check-image` builds Dockerfile.$(IMAGE_VARIANT) and checks it with deploy/check-image.sh (Docker; not CI).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

TORCH ?= auto
TORCH_VERSION := 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

.PHONY: run test fuzz chaos models bench check-wheel check-image install-torch clean

# $(call install_torch,PIP): torch==$(TORCH_VERSION), the build that TORCH and TORCH_INDEX pick, with that pip.
define install_torch
	@set -e; variant='$(TORCH)'; index='$(TORCH_INDEX)'; \
	if [ "$$variant" = auto ]; then \
	  if command -v nvidia-smi >/dev/null 2>&1; then variant=cuda; else variant=cpu; fi; fi; \
	case "$$variant" in cpu|cuda) ;; *) echo "TORCH must be auto, cpu or cuda, not '$$variant'" >&2; exit 2;; esac; \
	if [ -z "$$index" ] && [ "$$variant" = cpu ]; then \
	  if $(PYTHON) -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5).close()' \
	      '$(TORCH_CPU_INDEX)/' >/dev/null 2>&1; then index='$(TORCH_CPU_INDEX)'; \
	  else echo "torch: $(TORCH_CPU_INDEX) not reached; pip's own indexes and find-links only"; fi; fi; \
	version='$(TORCH_VERSION)'; \
	if [ "$$variant" = cpu ] && [ "$$(uname -s)" = Linux ]; then version="$$version+cpu"; fi; \
	echo "torch==$$version, $$variant build$${index:+, extra index $$index}"; \
	$(1) install -q $${index:+--extra-index-url "$$index"} "torch==$$version"
endef

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(call install_torch,$(BIN)/pip)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

models: $(STAMP)
	$(BIN)/infercloud models pull smollm2-135m-instruct
	$(BIN)/infercloud models pull all-minilm-l6-v2

PORT ?= 8000
CHECK_PORT ?= 18766

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

# The wheel, installed into a fresh venv (torch as above, then the wheel with its dependencies), runs outside
# the checkout: `infercloud --version`, `models list`, and the serving modules and package data import.
check-wheel:
	@set -e; dir=$$(mktemp -d); trap 'rm -rf "$$dir"' EXIT; \
	$(PYTHON) -m venv "$$dir/venv"; \
	"$$dir/venv/bin/pip" install -q --upgrade pip; \
	rm -rf build; "$$dir/venv/bin/pip" wheel -q --no-deps -w "$$dir/dist" .; \
	$(MAKE) --no-print-directory install-torch PIP="$$dir/venv/bin/pip"; \
	"$$dir/venv/bin/pip" install -q "$$dir"/dist/infercloud-*.whl; \
	cd "$$dir"; \
	venv/bin/infercloud --version; \
	venv/bin/infercloud models list; \
	venv/bin/python -c 'import infercloud.cloud, infercloud.worker.server, infercloud.pipelines.service; \
	from infercloud.engine.kernels import SOURCES; from infercloud.bench.quality import TEXTS; \
	assert SOURCES and TEXTS.is_file(), "package data missing"'; \
	venv/bin/infercloud serve smollm2-135m-instruct --port $(CHECK_PORT) >serve.log 2>&1 & pid=$$!; \
	trap 'kill $$pid 2>/dev/null; wait $$pid 2>/dev/null; rm -rf "$$dir"' EXIT; \
	for _ in $$(seq 1 300); do curl -fsS -o /dev/null http://127.0.0.1:$(CHECK_PORT)/health 2>/dev/null && break; \
	  kill -0 $$pid 2>/dev/null || { cat serve.log; exit 1; }; sleep 1; done; \
	curl -fsS http://127.0.0.1:$(CHECK_PORT)/v1/chat/completions -H 'Content-Type: application/json' \
	  -d '{"model": "smollm2-135m-instruct", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}'; \
	curl -fsS -o /dev/null http://127.0.0.1:$(CHECK_PORT)/dashboard; \
	echo; echo "wheel check: ok (installed into a fresh venv, served a chat and the dashboard page)"

# The image: built from Dockerfile.$(IMAGE_VARIANT) (cpu or cuda) with DOCKER_BUILD_ARGS (e.g. --build-arg
# PIP_INDEX_URL=URL), then served and checked by deploy/check-image.sh (its head comment says what it checks).
IMAGE_VARIANT ?= cpu
DOCKER ?= docker
DOCKER_BUILD_ARGS ?=

check-image:
	$(DOCKER) build -f Dockerfile.$(IMAGE_VARIANT) $(DOCKER_BUILD_ARGS) -t infercloud:$(IMAGE_VARIANT) .
	DOCKER='$(DOCKER)' deploy/check-image.sh infercloud:$(IMAGE_VARIANT)

# torch alone, into the venv whose pip is PIP (check-wheel's).
install-torch:
	$(call install_torch,$(PIP))

clean:
	rm -rf $(VENV) build *.egg-info
