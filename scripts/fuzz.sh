#!/usr/bin/env bash
# Fuzzes every header parser and configuration loader with cargo-fuzz (libFuzzer): the targets
# in fuzz/fuzz_targets/, one per parser (grpc-timeout, configuration durations, traceparent,
# tracestate, baggage, b3 single and multi, uber-trace-id, grpc-trace-bin, SPIFFE ID, SPIFFE
# pattern, XFCC), per loader (route metadata, plugin JSON) and per input of the native
# module's adapter (its per-route configuration, a stream's headers and attributes).
#
# Each target runs for FUZZ_RUNS executions (default 1000000), one after the other, built with
# AddressSanitizer and debug assertions (so integer overflow is a crash too). A line per target
# gives its executions, seconds and crashes (0, or the input that crashed, under
# fuzz/artifacts/<target>/); the script exits non-zero when any target crashed or failed.
#
# Corpora live in fuzz/corpus/<target> (not committed), so every run starts from what the
# previous ones found; fuzz/seeds/<target> (committed: small valid inputs) is read too.
#
# cargo-fuzz is installed into <workspace>/.tools on first run; nothing is installed globally.
# Its -Zsanitizer flag needs a nightly compiler; on the stable toolchain of rust-toolchain.toml
# the script sets RUSTC_BOOTSTRAP=1 for the fuzz build only (not with FUZZ_SANITIZER=none).
#
# Usage: scripts/fuzz.sh [target ...]          (default: every target)
# Environment:
#   FUZZ_RUNS=N           executions per target (default 1000000; CI: 20000)
#   FUZZ_SANITIZER=name   address (default) or none
#   FUZZ_TIMEOUT=S        seconds one input may take before it counts as a crash (default 10)
#   FUZZ_ARGS="..."       extra libFuzzer flags, e.g. "-max_total_time=60"
#   FUZZ_TARGET_DIR=dir   cargo's target directory for the fuzz build (default fuzz/target)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

runs="${FUZZ_RUNS:-1000000}"
sanitizer="${FUZZ_SANITIZER:-address}"
timeout="${FUZZ_TIMEOUT:-10}"
read -r -a extra <<<"${FUZZ_ARGS:-}"

tools="$root/.tools"
cargo_fuzz="$tools/bin/cargo-fuzz"
if ! "$cargo_fuzz" fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz into .tools (first run only)"
    start=$(date +%s)
    # Unoptimized: cargo-fuzz only drives cargo and libFuzzer, and builds in half the time.
    CARGO_PROFILE_RELEASE_OPT_LEVEL=0 CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256 \
        cargo install --locked --root "$tools" cargo-fuzz
    echo "cargo-fuzz installed in $(($(date +%s) - start)) s"
fi

# The targets, in the order of fuzz/Cargo.toml.
mapfile -t all < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^mesh-fuzz$')
if (($# > 0)); then
    targets=("$@")
    for t in "${targets[@]}"; do
        if [[ ! " ${all[*]} " == *" $t "* ]]; then
            echo "fuzz: unknown target '$t'; the targets are: ${all[*]}" >&2
            exit 2
        fi
    done
else
    targets=("${all[@]}")
fi

# cargo-fuzz passes -Zsanitizer=... for a sanitizer: on a stable compiler that needs
# RUSTC_BOOTSTRAP=1 (only for these cargo invocations). Without a sanitizer no -Z flag is used.
if [[ "$sanitizer" != none ]]; then
    export RUSTC_BOOTSTRAP=1
fi
fuzz=("$cargo_fuzz" fuzz)
flags=(--fuzz-dir fuzz --sanitizer "$sanitizer" --debug-assertions)
[[ -n "${FUZZ_TARGET_DIR:-}" ]] && flags+=(--target-dir "$FUZZ_TARGET_DIR")

start=$(date +%s)
if ((${#targets[@]} == 1)); then
    "${fuzz[@]}" build "${flags[@]}" "${targets[0]}"
else
    "${fuzz[@]}" build "${flags[@]}"
fi
echo "fuzz targets built in $(($(date +%s) - start)) s (sanitizer: $sanitizer, debug assertions on)"

logs="fuzz/target/logs"
mkdir -p "$logs"
printf '%-16s %12s %9s  %s\n' target executions seconds crashes
failed=0
total_runs=0
total_start=$(date +%s.%N)
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    corpora=("fuzz/corpus/$t")
    [[ -d "fuzz/seeds/$t" ]] && corpora+=("fuzz/seeds/$t")
    max_len=()
    # Inputs must be able to cross the 8192-byte baggage limit.
    [[ "$t" == baggage ]] && max_len=(-max_len=9000)
    log="$logs/$t.log"
    t0=$(date +%s.%N)
    status=0
    "${fuzz[@]}" run "${flags[@]}" "$t" "${corpora[@]}" -- \
        -runs="$runs" -timeout="$timeout" -print_final_stats=1 "${max_len[@]}" "${extra[@]}" \
        >"$log" 2>&1 || status=$?
    seconds=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
    executed=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    if [[ -z "$executed" ]]; then
        # A crash ends the run before the final stats: the last progress line has the count.
        executed=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
    fi
    executed="${executed:-0}"
    total_runs=$((total_runs + executed))
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    if ((status != 0)); then
        failed=$((failed + 1))
        result="${artifact:-failed (exit $status), see $log}"
    else
        result=0
    fi
    printf '%-16s %12s %9.1f  %s\n' "$t" "$executed" "$seconds" "$result"
    if ((status != 0)); then
        grep -m1 -A12 -E '^thread .* panicked|ERROR: (libFuzzer|AddressSanitizer)' "$log" | sed 's/^/    /' || true
    fi
done
total_seconds=$(awk -v a="$total_start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
printf '%d targets, %d executions in %.0f s: ' "${#targets[@]}" "$total_runs" "$total_seconds"
if ((failed > 0)); then
    echo "$failed crashed (libFuzzer logs in $logs)"
    exit 1
fi
echo "no crash"
