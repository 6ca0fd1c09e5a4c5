#!/usr/bin/env bash
# `make run`: the demo services and Envoy with the mesh filters, in the foreground, no Docker.
# Expects the filters built (`make build`) and Envoy at $ENVOY_BIN (scripts/ensure-envoy.sh).
# NATIVE=1 (`make run NATIVE=1`) runs the same demo on the native dynamic module
# (target/native/libmesh_filters.so, envoy/demo-native.yaml) instead of mesh_filters.wasm.
# Ctrl-C stops exactly the processes this script started.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
envoy_bin="${ENVOY_BIN:-$(scripts/ensure-envoy.sh)}"
native="${NATIVE:-}"
[ "$native" = 0 ] && native=""
if [ -n "$native" ]; then
  config="${DEMO_CONFIG:-envoy/demo-native.yaml}"
  # Envoy loads lib<name>.so of `dynamic_module_config.name` from this directory.
  export ENVOY_DYNAMIC_MODULES_SEARCH_PATH="${CARGO_TARGET_DIR:-$root/target}/native"
  if [ ! -f "$ENVOY_DYNAMIC_MODULES_SEARCH_PATH/libmesh_filters.so" ]; then
    echo "demo: $ENVOY_DYNAMIC_MODULES_SEARCH_PATH/libmesh_filters.so is missing; run make build" >&2
    exit 1
  fi
  runtime="the native module libmesh_filters.so"
  metric_prefix="envoy_mesh_"
else
  config="${DEMO_CONFIG:-envoy/demo.yaml}"
  runtime="mesh_filters.wasm"
  metric_prefix="mesh_"
fi
run_dir="$root/.run"
mkdir -p "$run_dir"

# Demo SPIFFE certificates for the mTLS listener (made once; 2-day validity: --force renews).
scripts/demo-certs.sh "$run_dir/certs" >/dev/null
if ! openssl x509 -checkend 3600 -noout -in "$run_dir/certs/envoy.crt" >/dev/null 2>&1; then
  scripts/demo-certs.sh --force "$run_dir/certs" >/dev/null
fi

echo "demo: building the demo services (cargo build -p mesh-integration --bin mesh-demo)"
cargo build --quiet -p mesh-integration --bin mesh-demo
demo_bin="${CARGO_TARGET_DIR:-$root/target}/debug/mesh-demo"

pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "demo: stopping (pids ${pids[*]:-none})"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop INT TERM EXIT

"$demo_bin" --listen auth=127.0.0.1:9001 --listen learner=127.0.0.1:9002 --listen events=127.0.0.1:9003 \
  > "$run_dir/demo-services.log" 2>&1 &
pids+=($!)

"$envoy_bin" -c "$config" --concurrency "${CONCURRENCY:-2}" --disable-hot-restart \
  > "$run_dir/envoy.log" 2>&1 &
envoy_pid=$!
pids+=($envoy_pid)

for _ in $(seq 1 150); do
  if curl -fsS http://127.0.0.1:9901/ready 2>/dev/null | grep -q LIVE; then break; fi
  if ! kill -0 "$envoy_pid" 2>/dev/null; then
    echo "demo: Envoy exited during start-up; its log:" >&2
    cat "$run_dir/envoy.log" >&2
    exit 1
  fi
  sleep 0.1
done
if ! curl -fsS http://127.0.0.1:9901/ready 2>/dev/null | grep -q LIVE; then
  echo "demo: Envoy did not become ready; its log is $run_dir/envoy.log" >&2
  exit 1
fi

cat <<TXT

  mesh-filters demo is up ($("$envoy_bin" --version 2>/dev/null | grep -o '1\.40\.[0-9]*' | head -n1) with the circuit-breaker, deadline and retry-budget filters,
  as $runtime, config $config)

  listener  http://127.0.0.1:10000   (HTTP/1.1 and h2c; gRPC on the same port)
  mTLS      https://127.0.0.1:10443  (SPIFFE identities; certificates in .run/certs)
  admin     http://127.0.0.1:9901    (/stats/prometheus)
  services  auth 127.0.0.1:9001 (deadline 5s), learner :9002 (10s), events :9003 (2s)
  logs      .run/envoy.log, .run/demo-services.log

  Try:
    curl -s localhost:10000/auth/hello                                   # 200, echo of what the service saw
    curl -s -o /dev/null -w '%{http_code} %{time_total}s\n' 'localhost:10000/events/x?sleep_ms=3000'
                                                                         # 504 after 2s: the events deadline
    curl -s localhost:10000/learner/x -H 'grpc-timeout: 300m' | grep -o '"x-envoy-expected-rq-timeout-ms":"[0-9]*"'
                                                                         # the caller's 300 ms budget, propagated
    curl -si localhost:10000/auth/x -H 'x-envoy-expected-rq-timeout-ms: 0' | grep -iE '^HTTP|x-mesh-rejected-by'
                                                                         # 504 at once, x-mesh-rejected-by: mesh.deadline
    curl -s 'localhost:10000/auth/x?fail_attempts=1' | grep -o '"attempt":[0-9]*'
                                                                         # "attempt":2: retried within the budget
    for i in 1 2 3 4 5; do curl -s -o /dev/null -w '%{http_code} ' 'localhost:10000/learner/x?status=503'; done; echo
    curl -si localhost:10000/learner/x | grep -iE '^HTTP|retry-after|x-mesh-rejected-by'
                                                                         # 503 from the open breaker, retry-after: 60
    c=.run/certs; tls="--cacert \$c/ca.crt --resolve envoy.mesh.local:10443:127.0.0.1"
    curl -s \$tls --cert \$c/learner.crt --key \$c/learner.key https://envoy.mesh.local:10443/auth/x | grep -o '"x-spiffe-id":"[^"]*"'
                                                                         # learner may call auth: the verified ID is forwarded
    curl -s \$tls --cert \$c/admin.crt --key \$c/admin.key https://envoy.mesh.local:10443/auth/x
                                                                         # 403 permission_denied: admin is not allowed on auth
    curl -s localhost:9901/stats/prometheus | grep '^${metric_prefix}'

  Services obey ?sleep_ms=N, ?status=N, ?fail_attempts=N (or x-demo-* headers). Ctrl-C stops everything.

TXT
wait "$envoy_pid"
