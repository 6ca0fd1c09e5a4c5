#!/usr/bin/env bash
# `make down`: stops and removes the compose mesh (containers, network, anonymous volumes).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/compose-env.sh"
command -v docker >/dev/null || {
  echo "compose-down: docker is not installed" >&2
  exit 1
}
compose down --volumes --remove-orphans --timeout 5
