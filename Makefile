# burst.golden_ami: development entry points.
#   make demo   a whole bake against the local world (moto, registry, Hub mirror)
#   make test   every gate: lint, sanity, unit, local world, molecule, integration
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
COLLECTIONS := $(VENV)/collections
COLLECTION_LINK := $(COLLECTIONS)/ansible_collections/burst/golden_ami
STAMP := $(VENV)/.installed
export PATH := $(BIN):$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PYTHONDONTWRITEBYTECODE := 1
# Nothing in the test world may reach a real AWS endpoint or account.
export AWS_ACCESS_KEY_ID ?= testing
export AWS_SECRET_ACCESS_KEY ?= testing
export AWS_DEFAULT_REGION ?= eu-central-1
export AWS_EC2_METADATA_DISABLED := true

MOLECULE_SCENARIOS := $(sort $(notdir $(patsubst %/molecule.yml,%,$(wildcard molecule/*/molecule.yml))))

.PHONY: help
help:  ## List the targets
	@grep -E '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 20

$(STAMP): requirements/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade 'pip>=24'
	$(BIN)/pip install -q -r requirements/dev.txt
	mkdir -p $(dir $(COLLECTION_LINK))
	ln -sfn $(CURDIR) $(COLLECTION_LINK)
	touch $@

.PHONY: venv
venv: $(STAMP)  ## Create .venv with the pinned tools and link this collection into it

.PHONY: requirements
requirements:  ## Re-resolve requirements/dev.txt from requirements/dev.in
	rm -rf $(CURDIR)/.cache/resolve && $(PYTHON) -m venv $(CURDIR)/.cache/resolve
	$(CURDIR)/.cache/resolve/bin/pip install -q -r requirements/dev.in
	{ echo "# Generated from requirements/dev.in by 'make requirements'. Do not edit."; \
	  $(CURDIR)/.cache/resolve/bin/pip freeze --exclude pip; } > requirements/dev.txt

.PHONY: docker
docker:  ## Ensure a Docker engine (Debian's docker.io, no bridge) answers
	hack/ensure-docker.sh

.PHONY: base-image
base-image: docker  ## Build the Debian 12 systemd image molecule and the demo use (once)
	hack/build-base-image.sh

.PHONY: ee
ee: $(STAMP) world-deps docker  ## Build the execution environment image (once per recipe)
	hack/build-ee.sh

.PHONY: world-deps
world-deps:  ## Install the Debian packages the local world runs on
	hack/ensure-world-deps.sh

.PHONY: lint
lint: $(STAMP)  ## yamllint, ansible-lint (production profile), ruff, changelog fragments, role READMEs
	yamllint --strict .
	ruff check .
	ruff format --check .
	ansible-lint --profile production --offline
	antsibull-changelog lint
	$(BIN)/python hack/role_readme.py --check

.PHONY: sanity
sanity: $(STAMP) world-deps  ## ansible-test sanity (local, Python 3.11) on a copy of the tracked files
	hack/ansible-test-sanity.sh

.PHONY: unit
unit: $(STAMP) world-deps docker  ## Unit tests of plugins, roles' Python files and tools
	pytest tests/unit

.PHONY: world
world: $(STAMP) world-deps docker  ## Tests of the local world's own services
	pytest -n 2 tests/world

.PHONY: molecule
molecule: $(STAMP) world-deps base-image  ## Every molecule scenario (2 at a time): check, converge, idempotence, verify
	hack/run-molecule.sh $(MOLECULE_SCENARIOS)

.PHONY: integration
integration: $(STAMP) world-deps docker  ## Integration targets against the local world
	pytest -n 2 tests/integration

IMPORTER := $(CURDIR)/.cache/importer
$(IMPORTER)/.installed: requirements/importer.txt
	rm -rf $(IMPORTER) && $(PYTHON) -m venv $(IMPORTER)
	$(IMPORTER)/bin/pip install -q -r requirements/importer.txt
	touch $@

.PHONY: release
release: $(STAMP) world-deps docker base-image ee  ## Release gates: artifact, ansible-doc, changelog, EE, AWX files, IAM, ansible-runner
	pytest -n 2 tests/release

.PHONY: galaxy-import
galaxy-import: $(STAMP) $(IMPORTER)/.installed  ## Galaxy's import checks (galaxy-importer) on the built artifact
	rm -rf .cache/artifact .cache/importer-home && mkdir -p .cache/importer-home
	ansible-galaxy collection build --output-path .cache/artifact .
	env -i PATH=$(IMPORTER)/bin:/usr/bin:/bin HOME=$(CURDIR)/.cache/importer-home \
	  GALAXY_IMPORTER_CONFIG=$(CURDIR)/tests/release/galaxy-importer.cfg \
	  $(IMPORTER)/bin/python -m galaxy_importer.main .cache/artifact/burst-golden_ami-*.tar.gz

.PHONY: test
test: lint sanity unit world molecule integration release galaxy-import  ## Every gate, as CI runs it

.PHONY: demo
demo: $(STAMP) world-deps base-image  ## A whole bake on the local world
	hack/demo.sh

.PHONY: clean
clean:  ## Remove the virtualenv, caches and test output
	rm -rf $(VENV) .cache tests/output .pytest_cache .ruff_cache
