#!/usr/bin/env bash
# Makes sure command-line tools from Debian packages are installed:
#   scripts/ensure-tools.sh TOOL:PACKAGE...     e.g. promtool:prometheus wrk:wrk
# Installs the missing packages with apt-get (through sudo when not root, without recommends)
# and prints the path of each tool, one per line, in the order given.
set -euo pipefail

missing=()
for spec in "$@"; do
    tool="${spec%%:*}"
    command -v "$tool" >/dev/null 2>&1 || missing+=("${spec#*:}")
done

if ((${#missing[@]})); then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "ensure-tools: missing Debian packages ${missing[*]} and no apt-get: install them yourself" >&2
        exit 1
    fi
    sudo=()
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null 2>&1 || {
            echo "ensure-tools: not root and no sudo: run 'apt-get install ${missing[*]}' as root" >&2
            exit 1
        }
        sudo=(sudo)
    fi
    echo "ensure-tools: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq >&2
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

for spec in "$@"; do
    tool="${spec%%:*}"
    command -v "$tool" >/dev/null 2>&1 || { echo "ensure-tools: $tool still missing" >&2; exit 1; }
    command -v "$tool"
done
