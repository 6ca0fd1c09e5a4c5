#!/usr/bin/env bash
# Shrinks the built wasm modules with binaryen's optimiser (wasm-opt -Oz, from Debian's
# `binaryen`), in place: scripts/wasm-opt.sh target/wasm32-wasip1/release/mesh_*.wasm
#
# rustc's opt-level "z" leaves about a fifth of the module that binaryen's whole-module passes
# remove (587 KB -> 465 KB for the suite, measured when this was added); every worker's VM
# downloads and compiles the module, so its size is start-up time and memory. A module is
# optimised again only when it is not the file this script wrote last time (its `.opt` stamp
# holds that file's SHA-256): cargo rebuilt it, or put its own copy back.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
wasm_opt="$("$here/ensure-tools.sh" wasm-opt:binaryen)"

optimise() {
    local module="$1" stamp="$1.opt"
    if [[ -f "$stamp" && "$(sha256sum <"$module")" == "$(cat "$stamp")" ]]; then
        return
    fi
    # The features rustc's wasm32-wasip1 target emits (and no others: Envoy's V8 runs the result).
    "$wasm_opt" -Oz --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
        --enable-nontrapping-float-to-int "$module" -o "$module.tmp"
    mv "$module.tmp" "$module"
    sha256sum <"$module" >"$stamp"
}
export -f optimise
export wasm_opt

# One module per core at a time.
printf '%s\0' "$@" | xargs -0 -n 1 -P "$(nproc)" bash -c 'set -euo pipefail; optimise "$0"'
