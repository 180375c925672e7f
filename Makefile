# Single entry points: `make demo`, `make test`, `make lint`, `make bench`,
# `make protos`. Every target installs what it needs first (see `setup`).
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PACKAGES := libs/swarmcommon libs/swarmagent libs/swarmdemo services/ticketing services/quota services/events services/telemetry services/vmhost services/gateway libs/swarmcli
PROTOS := $(shell find protos -name '*.proto')
GEN := libs/swarmcommon/swarm
GEN_STAMP := $(GEN)/.generated
PYTEST_ARGS ?=
# Test processes (pytest-xdist); files stay whole on one worker, so a file's
# tests share its fixtures and never race each other.
PYTEST_WORKERS ?= 2

.PHONY: setup host-packages protos demo test lint bench postgres guest-image clean

setup: $(VENV)/.installed $(GEN_STAMP) host-packages

# Debian packages whose tools the services run (nftables for vmhost's bridge
# filter); only what is missing is installed.
host-packages:
	scripts/host-packages.sh
	@# Sandboxed guests run as an unprivileged uid and read the agent runtime
	@# from this checkout (the tests' guests import `tests.*` from its root): it
	@# must be readable by others, also when it was cloned into a private
	@# directory (mktemp -d makes it 0700).
	@[ "$$(id -u)" != 0 ] || chmod o+rx "$(CURDIR)"

$(VENV)/.deps: requirements.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed: $(VENV)/.deps $(GEN_STAMP) $(foreach p,$(PACKAGES),$(p)/pyproject.toml)
	$(BIN)/python -m pip install -q --no-deps $(foreach p,$(PACKAGES),-e $(p))
	touch $@

# Generated code is not committed: it lands in libs/swarmcommon/swarm/ (the
# `swarm.*` import namespace) and is rebuilt whenever a .proto changes.
protos: $(VENV)/.deps
	rm -rf $(GEN)
	$(BIN)/python scripts/gen_protos.py protos libs/swarmcommon
	touch $(GEN_STAMP)

$(GEN_STAMP): $(VENV)/.deps $(PROTOS) scripts/gen_protos.py
	$(MAKE) protos

demo: setup
	$(BIN)/python -m swarmdemo

postgres:
	scripts/ensure-postgres.sh

# The qemu driver's guest image (and qemu itself), from Debian packages and
# the project's wheels: the kernel, an initramfs and a root filesystem with the
# agent runtime (its packages at the versions in .venv). A few minutes cold;
# nothing when build/guest/image.stamp says it is up to date. Where it cannot
# be built the qemu tests skip with the reason.
guest-image: setup
	scripts/build-guest-image.sh build/guest || echo "guest image not built: qemu driver tests will skip"

test: setup postgres guest-image
	scripts/buf-lint.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: setup
	scripts/buf-lint.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: setup postgres guest-image
	$(BIN)/python bench/fleet.py
	$(BIN)/python bench/claims.py
	$(BIN)/python bench/webhooks.py
	$(BIN)/python bench/spans.py
	$(BIN)/python bench/spawn.py

clean:
	rm -rf $(VENV) $(GEN) build var
