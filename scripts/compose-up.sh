#!/usr/bin/env bash
# `make up`: the compose mesh in the background, on the images `make images` builds (or those
# named by ENVOY_IMAGE, DEMO_IMAGE, PROMETHEUS_IMAGE, OTLP_IMAGE), then waits until every hop
# answers. Makes the certificates first (scripts/compose-certs.sh). `make down` stops it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/compose-env.sh"
cd "$compose_root"

die() {
  echo "compose-up: $*" >&2
  exit 1
}

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed)"
[[ -f target/wasm32-wasip1/release/mesh_filters.wasm ]] ||
  die "target/wasm32-wasip1/release/mesh_filters.wasm is missing: run make build"
for image in "$ENVOY_IMAGE" "$DEMO_IMAGE" "$PROMETHEUS_IMAGE" "$OTLP_IMAGE"; do
  case "$image" in
    "$LOCAL_ENVOY_IMAGE" | "$LOCAL_DEMO_IMAGE" | "$LOCAL_PROMETHEUS_IMAGE" | "$LOCAL_OTLP_IMAGE")
      docker image inspect "$image" >/dev/null 2>&1 || die "image $image is missing: run make images"
      ;;
  esac
done

scripts/compose-certs.sh "$MESH_COMPOSE_CERTS" >/dev/null
echo "compose-up: $COMPOSE up -d (project $COMPOSE_PROJECT_NAME; images $ENVOY_IMAGE, $DEMO_IMAGE, $PROMETHEUS_IMAGE, $OTLP_IMAGE)"
compose up -d --no-build

# ready: every check passes.
edge="http://127.0.0.1:10000"
ready() {
  curl -fsS -m 2 http://127.0.0.1:9901/ready 2>/dev/null | grep -q LIVE || return 1
  local path
  for path in /auth/ready /learner/ready /events/ready; do
    curl -fsS -m 2 -o /dev/null "$edge$path" 2>/dev/null || return 1
  done
  curl -fsS -m 2 -o /dev/null http://127.0.0.1:9090/-/ready 2>/dev/null || return 1
  # Prometheus has scraped all four Envoys.
  [[ "$(curl -fsS -m 2 -G http://127.0.0.1:9090/api/v1/query --data-urlencode 'query=sum(up{job="envoy"})' 2>/dev/null |
    grep -o '"value":\[[^]]*\]' | grep -o '"[0-9.]*"\]' | tr -d '"]')" == "4" ]] || return 1
  curl -fsS -m 2 -o /dev/null http://127.0.0.1:16686/ 2>/dev/null || return 1
}

deadline=$((SECONDS + ${COMPOSE_UP_TIMEOUT:-120}))
until ready; do
  if ((SECONDS >= deadline)); then
    echo "compose-up: the stack did not become ready within ${COMPOSE_UP_TIMEOUT:-120}s" >&2
    compose ps >&2 || true
    compose logs --no-color --tail 15 >&2 || true
    exit 1
  fi
  sleep 1
done

cat <<TXT

  mesh-filters compose stack is up (project $COMPOSE_PROJECT_NAME)

  edge        http://127.0.0.1:10000   (/auth/..., /learner/..., /events/...; gRPC /mesh.demo.<Service>/...)
  edge admin  http://127.0.0.1:9901    (/stats/prometheus)
  Prometheus  http://127.0.0.1:9090    (every Envoy: mesh_* metrics with route labels)
  traces      http://127.0.0.1:16686   (/api/traces/<trace id>)
  certs       $MESH_COMPOSE_CERTS

  make test-compose   the integration tests against this stack
  make down           stop and remove it

TXT
