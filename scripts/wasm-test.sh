#!/usr/bin/env bash
# Runs the policy unit tests of mesh-kit and mesh-deadline compiled to wasm32-unknown-unknown,
# under Node.js with wasm-bindgen-test, to catch 32-bit and no-threads differences
# (DESIGN.md section 6, level 2).
#
# What runs on wasm32: every unit test in the `tests` modules of
#   mesh-kit:      values, config, route, reply, metrics, shared
#   mesh-deadline: grpc_timeout, budget, config, filter
#   mesh-circuit-breaker: breaker, classify, config
#   mesh-retry-budget: budget, config
#   mesh-spiffe-identity: id, pattern, xfcc, config
#   mesh-trace-propagation: w3c, baggage, b3, jaeger, grpc_bin, otlp, config, filter
#   mesh-rate-limit: bucket, table, key, fields, config, filter (in a cargo invocation of its own)
# i.e. the same set `cargo test -p mesh-kit -p mesh-deadline --lib` runs natively, the proptest
# properties included (values::parse_never_panics, values::millis_round_trip,
# route::arbitrary_metadata_bytes_never_panic, budget::the_budget_never_grows_a_deadline and the
# three grpc_timeout properties). On wasm32 proptest is built without its `fork`/`timeout`
# features and seeds from getrandom's JS backend; cases still run in-process as natively.
# Not run on wasm32: doc tests and the integration crate.
#
# First run installs wasm-bindgen-test-runner (crate wasm-bindgen-cli, same version as
# wasm-bindgen in Cargo.lock) into <workspace>/.tools; nothing is installed globally.
#
# Usage: scripts/wasm-test.sh [extra cargo test arguments, e.g. -- values::]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

tools="$root/.tools"
runner="$tools/bin/wasm-bindgen-test-runner"

command -v node >/dev/null || {
    echo "wasm-test: node is not on PATH; wasm-bindgen-test runs the tests with Node.js" >&2
    exit 1
}

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

rustup target add wasm32-unknown-unknown

# The runner must match the wasm-bindgen the tests link against, to the patch version.
version="$(awk '
    $0 == "name = \"wasm-bindgen\"" { want = 1; next }
    want && /^version = / { gsub(/version = |"/, ""); print; exit }
' Cargo.lock)"
if [[ -z "$version" ]]; then
    echo "wasm-test: no wasm-bindgen package in $root/Cargo.lock" >&2
    exit 1
fi

installed="$("$runner" --version 2>/dev/null | awk '{ print $2 }' || true)"
if [[ "$installed" != "$version" ]]; then
    echo "installing wasm-bindgen-cli $version into .tools (first run only)"
    log="$scratch/install.log"
    if ! cargo install wasm-bindgen-cli --version "$version" --locked --force --root "$tools" 2>&1 | tee "$log"; then
        # A registry mirror may lack a third-party version named in wasm-bindgen-cli's Cargo.lock.
        # Only then resolve afresh: wasm-bindgen's own crates stay pinned to =$version either way.
        grep -q "failed to select a version" "$log" || exit 1
        echo "wasm-test: a version locked by wasm-bindgen-cli is not in the registry; installing without --locked"
        cargo install wasm-bindgen-cli --version "$version" --force --root "$tools"
    fi
fi

# The test binaries link proxy-wasm, whose exported entry points import the host ABI from the
# wasm module "env"; wasm-bindgen turns that into require("env"). The policy code under test never
# calls the host, so each import is a function that fails loudly if it ever is called.
cat >"$scratch/env.js" <<'EOF'
module.exports = new Proxy({}, {
    get: (_, name) => () => {
        throw new Error(`proxy-wasm host call ${String(name)} is not available in wasm unit tests`);
    },
});
EOF
export NODE_PATH="$scratch${NODE_PATH:+:$NODE_PATH}"

export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER="$runner"
cargo test --target wasm32-unknown-unknown -p mesh-kit -p mesh-deadline -p mesh-circuit-breaker -p mesh-retry-budget -p mesh-spiffe-identity -p mesh-trace-propagation --lib "$@"
# On its own: the rate limit depends on the identity stage's crate without its wasm entry point,
# and testing the two in one invocation would unify the features and link two entry points.
cargo test --target wasm32-unknown-unknown -p mesh-rate-limit --lib "$@"
