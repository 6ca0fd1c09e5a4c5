# mesh-filters: the README's commands.
#   make run    build the filters and start the local demo (Envoy + demo services, no Docker);
#               make run NATIVE=1: the same demo on the native module libmesh_filters.so
#   make test   every test: native unit/property, wasm32 (Node), end to end against a real Envoy
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

# One crate per filter; each is built on its own so that the suite's feature selection never
# leaks into a standalone module (cargo unifies features within one invocation).
FILTERS := mesh-deadline mesh-circuit-breaker mesh-retry-budget mesh-spiffe-identity mesh-trace-propagation mesh-rate-limit mesh-suite
WASM_DIR := target/wasm32-wasip1/release
# The suite as a native Envoy dynamic module (filters/native): libmesh_filters.so, built where
# its ABI bindings hold (x86_64 Linux, Envoy 1.40).
NATIVE_DIR := target/native
NATIVE_BUILD := $(if $(filter Linux x86_64,$(shell uname -s) $(shell uname -m)),yes,)

# `docker compose` (plugin) where present, else Debian's `docker-compose`.
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)

.PHONY: build toolchain envoy run test test-unit test-wasm test-integration test-abort-build bench profile soak rollout fuzz fuzz-short up down fmt lint clean

toolchain:
	@rustup target add wasm32-wasip1 wasm32-unknown-unknown >/dev/null 2>&1 || rustup target add wasm32-wasip1 wasm32-unknown-unknown

build: toolchain
	@for f in $(FILTERS); do cargo build --release --target wasm32-wasip1 -p $$f; done
	@scripts/wasm-opt.sh $(addprefix $(WASM_DIR)/,mesh_deadline.wasm mesh_circuit_breaker.wasm mesh_retry_budget.wasm mesh_spiffe_identity.wasm mesh_trace_propagation.wasm mesh_rate_limit.wasm mesh_filters.wasm)
	@ls -l $(WASM_DIR)/*.wasm | awk '{print "built " $$NF " (" $$5 " bytes)"}'
ifeq ($(NATIVE_BUILD),yes)
	@cargo build --profile native -p mesh-suite --features native
	@ls -l $(NATIVE_DIR)/libmesh_filters.so | awk '{print "built " $$NF " (" $$5 " bytes)"}'
endif

envoy:
	@scripts/ensure-envoy.sh >/dev/null

run: build
	@ENVOY_BIN="$$(scripts/ensure-envoy.sh)" NATIVE="$(NATIVE)" scripts/demo.sh

test: build envoy test-unit test-wasm test-integration

# Every test target of every crate but the three whose tests need Envoy (test-integration runs
# those): unit tests, tests/*.rs files (the suite's host-call budget among them), bins and the
# criterion benches in test mode (each benchmark once), then the doc tests.
UNIT_EXCLUDE := --exclude mesh-integration --exclude mesh-filters-cli --exclude mesh-native
test-unit:
	cargo test --workspace $(UNIT_EXCLUDE) --all-targets
	cargo test --workspace --doc
	# The suite's test-only stage (feature test-abort), which no workspace build enables.
	cargo test -p mesh-suite --features test-abort --lib

test-wasm: toolchain
	scripts/wasm-test.sh

# The test variant of the suite (feature test-abort: a `test_abort` section that traps the VM on
# demand) in a target directory of its own, so it never replaces mesh_filters.wasm; the rollout
# tests use it (and would build it themselves, inside their time).
ABORT_TARGET := $(or $(CARGO_TARGET_DIR),target)/test-abort
test-abort-build: toolchain
	CARGO_TARGET_DIR="$(ABORT_TARGET)" cargo build --release --target wasm32-wasip1 -p mesh-suite --features test-abort

# The end-to-end test files that run under both runtimes: every file and directory of
# integration/tests but the harness's self-tests, the native-vs-wasm comparisons, the wasm
# module's rollouts (a .wasm upgrade, the VM's failure_policy) and compose/.
NATIVE_E2E := $(foreach t,$(sort $(basename $(notdir $(wildcard integration/tests/*.rs))) $(notdir $(patsubst %/,%,$(dir $(wildcard integration/tests/*/main.rs))))),$(if $(filter %_selftest native compose rollout,$(t)),,--test $(t)))

# ENVOY_DYNAMIC_MODULES_SEARCH_PATH: where Envoy finds libmesh_filters.so (the shipped
# envoy/demo-native.yaml names it).
test-integration: build envoy test-abort-build
	scripts/ensure-tools.sh wrk:wrk h2load:nghttp2-client >/dev/null
	ENVOY_BIN="$$(scripts/ensure-envoy.sh)" PROMTOOL="$$(scripts/ensure-tools.sh promtool:prometheus)" \
		ENVOY_DYNAMIC_MODULES_SEARCH_PATH="$(CURDIR)/$(NATIVE_DIR)" \
		cargo test -p mesh-integration --tests -- --test-threads 4
	# The same end-to-end tests again on libmesh_filters.so: MESH_RUNTIME=native adapts every
	# bootstrap as a user switching modules would (integration/src/runtime.rs). Not the harness's
	# self-tests (no filter of ours in them) nor tests/native.rs (it compares the two itself).
	ENVOY_BIN="$$(scripts/ensure-envoy.sh)" PROMTOOL="$$(scripts/ensure-tools.sh promtool:prometheus)" \
		ENVOY_DYNAMIC_MODULES_SEARCH_PATH="$(CURDIR)/$(NATIVE_DIR)" MESH_RUNTIME=native \
		cargo test -p mesh-integration $(NATIVE_E2E) -- --test-threads 4
	ENVOY_BIN="$$(scripts/ensure-envoy.sh)" cargo test -p mesh-filters-cli --tests
	# The native module's unit tests (test-unit excludes mesh-native); libmesh_filters.so in the
	# real Envoy is mesh-integration's (tests/native.rs builds its test-panic variant).
	cargo test -p mesh-native --lib

bench: build envoy
	cargo build --release --target wasm32-wasip1 -p mesh-bench-calibration
	cargo build --release --target wasm32-wasip1 -p mesh-bench-probe
	scripts/ensure-tools.sh wrk:wrk h2load:nghttp2-client >/dev/null
	cargo bench -p mesh-bench-micro --bench policy
	ENVOY_BIN="$$(scripts/ensure-envoy.sh)" ENVOY_DYNAMIC_MODULES_SEARCH_PATH="$(CURDIR)/$(NATIVE_DIR)" \
		cargo run --release -p mesh-integration --bin bench
	ENVOY_BIN="$$(scripts/ensure-envoy.sh)" cargo run --release -p mesh-integration --bin retry-amplification

# Where each microsecond goes: the cost of every kind of host call the suite makes, measured as
# a slope in the real Envoy with the probe filter (bench/probe), the suite's calls counted by kind
# and stage, and its overhead predicted from the parts; writes that section of BENCHMARKS.md
# (make bench runs it too). PROFILE_ROUNDS (default 3).
profile: build envoy
	cargo build --release --target wasm32-wasip1 -p mesh-bench-calibration
	cargo build --release --target wasm32-wasip1 -p mesh-bench-probe
	scripts/ensure-tools.sh wrk:wrk h2load:nghttp2-client >/dev/null
	ENVOY_BIN="$$(scripts/ensure-envoy.sh)" cargo run --release -p mesh-integration --bin profile -- --write

# 10 minutes of steady load through the suite over 2,000 churned route names, failures injected
# on every tenth route: fails on errors beyond the injected ones or RSS growth over 5% after
# warm-up (SOAK_* variables: `cargo run -p mesh-integration --bin soak -- --help`).
soak: build envoy
	ENVOY_BIN="$$(scripts/ensure-envoy.sh)" cargo run --release -p mesh-integration --bin soak

# Configuration rollouts (route metadata, plugin configuration, module upgrade, a bad configuration,
# a new listener, a new vm_id), a hot restart, and a trapped VM under each failure_policy, all
# under a steady load through the suite: prints the tables of HARDENING.md ("Rollouts and
# restarts"); fails on a loss beyond the documented bounds (ROLLOUT_* variables:
# `cargo run -p mesh-integration --bin rollout -- --help`). make test runs a short version.
rollout: build envoy test-abort-build
	ENVOY_BIN="$$(scripts/ensure-envoy.sh)" cargo run --release -p mesh-integration --bin rollout

# libFuzzer (cargo fuzz) on every parser and configuration loader, FUZZ_RUNS executions each
# (default 1,000,000); fuzz-short is the CI version.
fuzz:
	scripts/fuzz.sh

fuzz-short:
	FUZZ_RUNS=20000 scripts/fuzz.sh

# The compose mesh (docker-compose.yml) on images built here, no registry needed:
#   make images && make up && make test-compose && make down
# images builds them (scripts/images.sh); up, down and test-compose point ENVOY_IMAGE,
# DEMO_IMAGE, PROMETHEUS_IMAGE and OTLP_IMAGE at them unless set (scripts/compose-env.sh).
.PHONY: images test-compose
images:
	scripts/images.sh

up: build
	COMPOSE="$(COMPOSE)" scripts/compose-up.sh

down:
	COMPOSE="$(COMPOSE)" scripts/compose-down.sh

test-compose:
	scripts/compose-test.sh

fmt:
	cargo fmt --all

# The crates that are compiled to wasm, linted for their real target too (32-bit, no threads).
WASM_CRATES := -p mesh-kit $(addprefix -p ,$(FILTERS)) -p mesh-bench-calibration -p mesh-bench-probe
lint: toolchain
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --target wasm32-wasip1 $(WASM_CRATES) --all-targets -- -D warnings
	# The test-only variant of the suite, for its real target.
	cargo clippy --target wasm32-wasip1 -p mesh-suite --features test-abort --all-targets -- -D warnings

clean:
	cargo clean
