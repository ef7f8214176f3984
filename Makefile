# The README's commands. Each target sets up what it needs; a warm machine reuses the caches
# (uv's package cache, Go's build cache and the cluster binaries under ~/.cache/llama-operator).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: help venv binaries debian image kind xla-env cluster-up cluster-down cluster-status demo test test-unit test-cluster \
        test-runtime test-workers test-bench test-kind lint fmt crds bench lock clean

help:
	@echo "make demo   - local cluster + operator + examples, shows where each job went and why"
	@echo "make test   - sets up and runs the whole suite (lint, unit, runtime, cluster, workers, kind)"
	@echo "make bench  - benchmarks (numbers and ratios, nothing asserted)"

venv:
	@hack/setup-python.sh

# Upgrade the pinned dependencies on purpose: uv.lock (the project's .venv) and the CPU worker image's
# PyPI layer (workloads/images/cpu/requirements.lock, resolved on top of the image's Debian packages: needs
# root and builds the image's base layer if it is not cached). Review and commit both.
lock:
	uv lock --upgrade
	@hack/setup-python.sh
	workloads/images/cpu/rootfs.sh --lock "$$(dirname "$$(dirname "$$(hack/cluster/build.sh --print-bindir)")")/workers/images/cpu"

binaries:
	@hack/cluster/build.sh >/dev/null

debian:
	@hack/setup-debian.sh workers

cluster-up: venv binaries
	@hack/cluster.sh up

cluster-down:
	@hack/cluster.sh down

cluster-status: venv
	@hack/cluster.sh status

demo: venv binaries
	@hack/demo.sh

lint: venv
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports

fmt: venv
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

crds: venv
	$(PY) -m llama_operator.api.crds --out crds/
	cp crds/llamaop.io_*.yaml charts/llama-operator/crds/

image:
	docker build -f operator/Dockerfile -t llama-operator:$$(sed -n 's/^appVersion: *//p' charts/llama-operator/Chart.yaml | tr -d '"') .

kind:
	@hack/kind/maybe-run.sh

xla-env:
	@hack/xla/setup.sh >/dev/null

# The runtime tier's XLA tests run in the XLA environment (built or reused above) and fail, not skip,
# without it.
XLA_TESTS := LLAMAOP_XLA_PYTHON=$$(hack/xla/setup.sh) LLAMAOP_REQUIRE_XLA=1

test: venv binaries debian lint xla-env
	@hack/cluster.sh up --workers
	$(XLA_TESTS) $(PY) -m pytest $(PYTEST_ARGS)
	@hack/kind/maybe-run.sh

test-unit: venv
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

test-runtime: venv xla-env
	$(XLA_TESTS) $(PY) -m pytest -m runtime $(PYTEST_ARGS)

test-cluster: venv binaries
	$(PY) -m pytest -m cluster $(PYTEST_ARGS)

test-bench: venv binaries
	$(PY) -m pytest -m bench $(PYTEST_ARGS)

test-workers: venv binaries debian
	@hack/cluster.sh up --workers
	$(PY) -m pytest -m workers $(PYTEST_ARGS)

# A kind cluster (its own dockerd and an offline node image where no Docker engine runs) and the cluster
# and workers tiers' tests against it; KIND_PYTEST_ARGS passes pytest arguments.
test-kind: venv binaries
	@hack/kind/run.sh all

bench: venv binaries
	@hack/bench/run-all.sh

clean:
	rm -rf .venv .pytest_cache .ruff_cache
