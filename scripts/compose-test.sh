#!/usr/bin/env bash
# `make test-compose`: the integration tests against the running compose mesh (`make up`):
# integration/tests/compose.rs, built only with the `compose` feature of mesh-integration.
# Tests run one at a time: they share the stack (and stop and start a container).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/compose-env.sh"
cd "$compose_root"
if ! curl -fsS -m 2 http://127.0.0.1:9901/ready 2>/dev/null | grep -q LIVE; then
  echo "compose-test: the compose stack is not up (no edge admin on 127.0.0.1:9901): run make up" >&2
  exit 1
fi
cargo test -p mesh-integration --features compose --test compose -- --test-threads 1 "$@"
