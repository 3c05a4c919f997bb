# MergeVQ on Kubernetes. `make help` lists the targets.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# Node 24 LTS for every target: the repo's own copy (hack/node.sh, from the npm registry; cached in ~/.cache/mergevq)
# goes first on PATH, whatever Node the machine has. MERGEVQ_NODE_PREFIX= (empty) keeps the machine's.
MERGEVQ_NODE_PREFIX ?= $(shell hack/node.sh)
ifneq ($(MERGEVQ_NODE_PREFIX),)
export PATH := $(MERGEVQ_NODE_PREFIX)/bin:$(PATH)
endif
NODE_TEST := node --import tsx --test --test-reporter=spec
UNIT_TESTS = $(shell find common operator trainer test/cluster -name '*.test.ts' | sort)
INTEGRATION_TESTS = $(shell find test/integration -name '*.test.ts' | sort)
E2E_TESTS = $(shell find test/e2e -name '*.test.ts' 2>/dev/null | sort)
BENCH ?=
export MERGEVQ_REPO := $(CURDIR)

##@ General
.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Quick start
.PHONY: demo demo-down
demo: setup ## Fresh clone → local control plane + MinIO + operator (Helm) → trained tokenizer with rFID in `kubectl get`
	hack/demo.sh

demo-down: cluster-down ## Stop the demo cluster

##@ Setup
.PHONY: setup node-deps toolchain
setup: node-deps toolchain ## Install everything the tests and demo need (idempotent, cached outside the repo)
	hack/setup-extras.sh

node-deps: ## npm ci when node_modules is missing or older than the lockfile
	@if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then npm ci --no-audit --no-fund >&2; fi

toolchain: ## Build pinned kube-apiserver/controller-manager/scheduler/kubectl, etcd, helm, MinIO into ~/.cache/mergevq
	hack/toolchain.sh all >/dev/null

##@ Development
.PHONY: crds crds-check lint format typecheck helm-check deps-check
crds: node-deps ## Regenerate crds/*.yaml (and the chart's copy) from the zod schemas
	npx tsx operator/src/api/generate.ts

crds-check: node-deps ## Fail when committed CRDs drift from the zod schemas
	npx tsx operator/src/api/generate.ts --check

lint: node-deps ## Lint + format check (biome)
	npx biome ci .

format: node-deps ## Format and apply safe lint fixes
	npx biome check --write .

typecheck: node-deps ## TypeScript strict typecheck
	npx tsc -p tsconfig.json --noEmit

deps-check: node-deps ## Import structure: no cycles, layering of docs/architecture.md (.dependency-cruiser.cjs)
	npx depcruise common/src operator/src trainer/src test bench hack --config .dependency-cruiser.cjs --output-type err

helm-check: toolchain ## helm lint + helm template (default and namespaced values)
	hack/helm-check.sh

##@ Tests
.PHONY: test test-unit test-integration e2e kind-e2e
test: setup lint typecheck deps-check crds-check helm-check test-unit test-integration ## Everything CI runs
	@echo "make test: all checks passed"

test-unit: node-deps ## Unit tests (no cluster)
	$(NODE_TEST) $(UNIT_TESTS)

test-integration: setup ## Integration + e2e suites against a real local control plane, node agent and MinIO
	hack/with-cluster.sh $(NODE_TEST) --test-concurrency=1 $(INTEGRATION_TESTS)
	@# The e2e suite gets a fresh cluster of its own, as it would on kind.
	hack/with-cluster.sh $(NODE_TEST) --test-concurrency=1 $(E2E_TESTS)

e2e: setup ## Only the e2e suite (helm install + runs) against the local cluster
	hack/with-cluster.sh $(NODE_TEST) --test-concurrency=1 $(E2E_TESTS)

kind-e2e: node-deps ## Real kubelets: kind cluster on a node image built here, project images loaded, test/e2e + test/kind
	hack/kind-e2e.sh

##@ Benchmarks
.PHONY: bench
bench: setup ## Run benchmarks (JSON lines on stdout); BENCH=<substring> selects suites
	hack/bench.sh "$(BENCH)"

##@ Cluster
.PHONY: cluster-up cluster-down
cluster-up: setup ## Start the local control plane + node agent + MinIO in the background; prints export KUBECONFIG=…
	hack/cluster-up.sh

cluster-down: ## Stop everything cluster-up started
	hack/cluster-down.sh

##@ Images
.PHONY: images
IMAGE_REGISTRY ?= mergevq
IMAGE_TAG ?= 0.1.0
IMAGES ?= operator trainer trainer-gpu
images: node-deps ## Build operator, trainer (CPU) and trainer-gpu (CUDA) with no registry (IMAGES=..., BASE_IMAGE=..., IMAGE_REGISTRY/TAG)
	DOCKER="$$(hack/images/docker-engine.sh)" IMAGE_REGISTRY=$(IMAGE_REGISTRY) IMAGE_TAG=$(IMAGE_TAG) hack/images/build.sh $(IMAGES)
