# The two set-up commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-cluster lint demo bench image stack-up stack-down lock clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --progress-bar off -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check .

# Provisions Kafka and MinIO into ~/.cache/streaming-recommender on the first run.
# pytest's exit code 5 (no tests collected, e.g. a -k filter that matches nothing) is not a failure.
test: lint
	$(BIN)/recommender-local stack provision
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; exit $$rc

# The Helm chart on a throwaway single-node Kubernetes built from source (root; the first run builds
# Kubernetes, CoreDNS and pause into ~/.cache/streaming-recommender, about 10 minutes on 2 cores).
test-cluster: install
	$(BIN)/recommender-local stack provision
	$(BIN)/recommender-local cluster provision
	$(BIN)/python -m pytest -m cluster tests/cluster $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; exit $$rc

# The whole system locally: stack, data, pipeline, serving, model server, load, swaps. Ctrl-C stops it.
demo: install
	$(BIN)/recommender-local demo $(DEMO_ARGS)

# Benchmarks on the local real stack (not part of `make test`): bench/results/*.json, plots, summary.md.
# implicit (the ALS / BPR baselines of the quality comparison) comes with the dev extra in requirements.lock.
bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)

# The project image, with docker or else buildah (podman's builder). IMAGE names it, e.g.
# `make image IMAGE=registry.example.com/streaming-recommender:0.1.0`; IMAGE_ARGS adds build flags
# (`--build-arg BASE=...` for an offline base, see README "The image").
IMAGE ?= streaming-recommender:local
image:
	@if command -v docker >/dev/null 2>&1; then docker build -t $(IMAGE) $(IMAGE_ARGS) .; \
	elif command -v buildah >/dev/null 2>&1; then buildah bud --layers -t $(IMAGE) $(IMAGE_ARGS) .; \
	else echo "make image needs docker, or podman's buildah (apt-get install buildah podman)" >&2; exit 1; fi

stack-up: install
	$(BIN)/recommender-local stack up

stack-down: install
	$(BIN)/recommender-local stack down

lock:
	rm -rf /tmp/recommender-lock && $(PYTHON) -m venv /tmp/recommender-lock
	/tmp/recommender-lock/bin/pip install --quiet '.[dev]'
	{ head -n 2 requirements.lock; /tmp/recommender-lock/bin/pip freeze | grep -v '^streaming-recommender'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
