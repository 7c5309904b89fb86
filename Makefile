# opsync developer commands. `make help` lists them.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Re-install whenever pyproject.toml changes.
INSTALLED := $(VENV)/.installed
# opsync with its runtime dependencies only, as the image installs it: what `make bench` runs.
RUNTIME_VENV ?= .venv-runtime
RUNTIME := $(RUNTIME_VENV)/.installed
PYTEST_ARGS ?=
# Extra arguments for `make bench`, e.g. ARGS="--items 100".
ARGS ?=
# The official Connect OpenAPI spec for `make fuzz` (1Password/connect, docs/openapi/spec.yaml). It has
# no licence, so it is not in this repository; the default is the copy beside the checkout.
SPEC ?= ../shared/reference/connect-openapi-1.7.1.yaml
# Extra arguments for `make fuzz`, e.g. FUZZ_ARGS="--max-examples 100 --seed 7".
FUZZ_ARGS ?=

.PHONY: help venv bins lint typecheck crds chart-crd check-crds helm-lint unit test bench chaos fuzz run clean image

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

$(RUNTIME): pyproject.toml $(shell find operator -name '*.py' -o -name '*.yaml' -o -name '*.json')
	test -x $(RUNTIME_VENV)/bin/python || $(PYTHON) -m venv $(RUNTIME_VENV)
	$(RUNTIME_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(RUNTIME_VENV)/bin/python -m pip install --quiet --force-reinstall --no-deps .
	$(RUNTIME_VENV)/bin/python -m pip install --quiet .
	touch $@

venv: $(INSTALLED) ## create the virtualenv and install opsync with its dev tools

bins: $(INSTALLED) ## find or build kube-apiserver, etcd, kubectl, helm (first build: Go, ~15 min)
	$(BIN)/opsync controlplane bins

lint: $(INSTALLED) ## ruff lint and format check, and the layer contracts (import-linter)
	$(BIN)/ruff check operator tests bench
	$(BIN)/ruff format --check operator tests bench
	$(BIN)/lint-imports

typecheck: $(INSTALLED) ## mypy --strict on the package and the benchmark
	$(BIN)/mypy -p opsync -p bench

crds: $(INSTALLED) ## regenerate crds/ from the pydantic models (and the Helm chart's copy)
	$(BIN)/opsync crd > crds/onepassworditem.yaml
	$(BIN)/opsync crd --connections > crds/connections.yaml
	$(MAKE) --no-print-directory chart-crd

chart-crd: ## copy crds/*.yaml into the Helm chart (helm/opsync/crds/)
	cp crds/onepassworditem.yaml helm/opsync/crds/onepassworditem.yaml
	cp crds/connections.yaml helm/opsync/crds/connections.yaml

check-crds: $(INSTALLED) ## fail when crds/ differs from the models, or the chart's copy from crds/
	diff -u crds/onepassworditem.yaml <($(BIN)/opsync crd)
	diff -u crds/connections.yaml <($(BIN)/opsync crd --connections)
	diff -u crds/onepassworditem.yaml helm/opsync/crds/onepassworditem.yaml || \
		{ echo "helm/opsync/crds/ is stale: run make chart-crd" >&2; exit 1; }
	diff -u crds/connections.yaml helm/opsync/crds/connections.yaml || \
		{ echo "helm/opsync/crds/ is stale: run make chart-crd" >&2; exit 1; }

image: $(INSTALLED) ## build the operator image (buildah, on a local Debian python3.11 base; root) and load it into a running node
	$(BIN)/opsync controlplane image

helm-lint: bins ## helm lint the chart (helm/opsync)
	"$$($(BIN)/opsync controlplane bins helm | cut -f2)" lint --strict helm/opsync

unit: $(INSTALLED) ## fast tests only (no control plane)
	$(BIN)/pytest -m 'not integration' $(PYTEST_ARGS)

test: bins lint typecheck check-crds ## everything CI runs: lint, types, CRD drift, the whole pytest suite
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(INSTALLED) $(RUNTIME) bins ## measure Connect requests, latency, memory, CPU, logs at 100, 1000 and 10000 items (ARGS="--items 100")
	$(BIN)/python -m bench.run --python $(RUNTIME_VENV)/bin/python $(ARGS)

chaos: $(INSTALLED) $(RUNTIME) bins ## kill, overload and rival the operator: lost/double rollouts, probe latency, writes against a rival, failover (ARGS="--kills 50")
	$(BIN)/python -m bench.chaos --python $(RUNTIME_VENV)/bin/python $(ARGS)

fuzz: $(INSTALLED) ## fuzz the local Connect server from the official OpenAPI spec with schemathesis (SPEC=..., FUZZ_ARGS=...; not in make test)
	@test -f "$(SPEC)" || { echo "make fuzz: no OpenAPI spec at $(SPEC); pass SPEC=path/to/connect-openapi-1.7.1.yaml (1Password/connect, docs/openapi/spec.yaml)" >&2; exit 2; }
	$(BIN)/python -c 'import schemathesis' 2>/dev/null || $(BIN)/python -m pip install --quiet -e '.[fuzz]'
	$(BIN)/python tests/fuzz/connect_server.py --spec "$(SPEC)" $(FUZZ_ARGS)

# With KUBECONFIG and OP_CONNECT_HOST both set: the operator against that cluster and Connect.
# Otherwise: the demo (local control plane + local Connect server + operator + examples/).
run: bins ## run the operator (KUBECONFIG + OP_CONNECT_HOST set), else the local demo; Ctrl-C stops
	$(if $(and $(KUBECONFIG),$(OP_CONNECT_HOST)),$(BIN)/opsync run,$(BIN)/opsync demo)

clean: ## remove the virtualenvs and caches (not the binary cache in ~/.cache/opsync)
	rm -rf $(VENV) $(RUNTIME_VENV) .mypy_cache .ruff_cache .pytest_cache .import_linter_cache
