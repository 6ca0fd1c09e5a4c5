# Shared settings of the compose scripts (images.sh, compose-up.sh, compose-down.sh,
# compose-test.sh); sourced, not run. Every value can be set in the environment first.
#
#   ENVOY_IMAGE, DEMO_IMAGE, PROMETHEUS_IMAGE, OTLP_IMAGE
#       the images the stack runs; here they default to the local images `make images`
#       builds. docker-compose.yml itself defaults to the official/public images, so plain
#       `docker compose up` uses those.
#   COMPOSE_PROJECT_NAME   the compose project (default mesh-filters)
#   COMPOSE                the compose command: `docker compose` when the plugin answers,
#                          else Debian's `docker-compose`
#   MESH_COMPOSE_CERTS     the certificates the stack mounts (default .run/compose/certs)

compose_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

: "${LOCAL_ENVOY_IMAGE:=mesh-filters/envoy:1.40-local}"
: "${LOCAL_DEMO_IMAGE:=mesh-filters/demo:local}"
: "${LOCAL_PROMETHEUS_IMAGE:=mesh-filters/prometheus:local}"
: "${LOCAL_OTLP_IMAGE:=mesh-filters/otlp-receiver:local}"

: "${ENVOY_IMAGE:=$LOCAL_ENVOY_IMAGE}"
: "${DEMO_IMAGE:=$LOCAL_DEMO_IMAGE}"
: "${PROMETHEUS_IMAGE:=$LOCAL_PROMETHEUS_IMAGE}"
: "${OTLP_IMAGE:=$LOCAL_OTLP_IMAGE}"
: "${COMPOSE_PROJECT_NAME:=mesh-filters}"
: "${MESH_COMPOSE_CERTS:=$compose_root/.run/compose/certs}"
export ENVOY_IMAGE DEMO_IMAGE PROMETHEUS_IMAGE OTLP_IMAGE COMPOSE_PROJECT_NAME MESH_COMPOSE_CERTS

if [[ -z "${COMPOSE:-}" ]]; then
  if docker compose version >/dev/null 2>&1; then
    COMPOSE="docker compose"
  else
    COMPOSE="docker-compose"
  fi
fi

# compose ARGS...: the compose command on this repository's docker-compose.yml.
compose() {
  # shellcheck disable=SC2086 # COMPOSE is a command with arguments
  $COMPOSE --project-directory "$compose_root" -f "$compose_root/docker-compose.yml" "$@"
}
