//! Envoy bootstraps for tests, built as JSON values (Envoy reads JSON as YAML).
//!
//! Every port is 0: the OS picks, and [`crate::envoy::Envoy`] reads back what was bound. The
//! `stats_tags` are the ones the shipped configs use, so tests see the same Prometheus labels
//! as users.

// Test tooling: JSON values built here have the shape indexed.
#![allow(clippy::indexing_slicing)]

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;

/// The `stats_config` of every shipped bootstrap: route and cluster labels out of metric names.
pub fn stats_config() -> Value {
    json!({
        "stats_tags": [
            {"tag_name": "route", "regex": "(\\.route=([^.;]+))"},
            {"tag_name": "cluster", "regex": "(\\.cluster=([^.;]+))"},
            {"tag_name": "format", "regex": "(\\.format=([^.;]+))"}
        ]
    })
}

/// A bootstrap with an admin interface on a free port.
pub fn bootstrap(listeners: Vec<Value>, clusters: Vec<Value>) -> Value {
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "stats_config": stats_config(),
        "static_resources": {"listeners": listeners, "clusters": clusters}
    })
}

/// A plaintext HTTP listener (HTTP/1.1 and h2c) with these routes and filters (router appended).
///
/// Like a mesh sidecar, it treats its peers (here: loopback) as internal
/// (`use_remote_address` + `internal_address_config`), so Envoy does not sanitize the
/// `x-envoy-expected-rq-timeout-ms` a previous hop wrote. From external callers Envoy strips
/// that header (and the other `x-envoy-*` control headers) before any filter runs.
pub fn listener(name: &str, routes: Vec<Value>, http_filters: Vec<Value>) -> Value {
    let mut filters = http_filters;
    filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
    }));
    json!({
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "codec_type": "AUTO",
                "use_remote_address": true,
                "skip_xff_append": true,
                "internal_address_config": {"cidr_ranges": [{"address_prefix": "127.0.0.0", "prefix_len": 8}]},
                "route_config": {"name": name, "virtual_hosts": [{
                    "name": name, "domains": ["*"], "routes": routes,
                    // The upstream sees x-envoy-attempt-count (the demo service fails by attempt).
                    "include_request_attempt_count": true
                }]},
                "http_filters": filters
            }
        }]}]
    })
}

/// One of our wasm filters: `filter` is the root_id (`mesh.deadline`), `wasm` the module file.
pub fn wasm_filter(filter: &str, wasm: &Path, config: &Value) -> Value {
    json!({
        "name": filter,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": filter,
                "root_id": filter,
                "vm_config": {
                    "vm_id": "mesh",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": wasm.display().to_string()}}
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": config.to_string()
                }
            }
        }
    })
}

/// A route by path prefix to a cluster; the route's own timeout is off (0s) unless set later,
/// so what is measured is the filter's.
pub fn route(name: &str, prefix: &str, cluster: &str) -> Value {
    json!({
        "name": name,
        "match": {"prefix": prefix},
        "route": {"cluster": cluster, "timeout": "0s"}
    })
}

/// Adds `metadata.filter_metadata[key] = value` to a route.
pub fn with_metadata(mut route: Value, key: &str, value: Value) -> Value {
    route["metadata"]["filter_metadata"][key] = value;
    route
}

/// A static cluster of one endpoint speaking h2c (gRPC and HTTP alike; the demo upstream serves
/// both) or HTTP/1.1. Envoy's own circuit-breaker thresholds are raised (its default allows 3
/// concurrent retries per cluster), so what tests measure is what our filters decide.
pub fn cluster(name: &str, addr: SocketAddr, h2: bool) -> Value {
    let mut c = json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "circuit_breakers": {"thresholds": [{
            "max_connections": 100000, "max_pending_requests": 100000, "max_requests": 100000, "max_retries": 100000
        }]},
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
            "socket_address": {"address": addr.ip().to_string(), "port_value": addr.port()}
        }}}]}]}
    });
    if h2 {
        c["typed_extension_protocol_options"] = json!({
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}
            }
        });
    }
    c
}

/// Certificate files for a TLS listener or a TLS upstream cluster.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// CA that peer certificates must chain to.
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

fn common_tls_context(tls: &TlsFiles) -> Value {
    json!({
        "tls_certificates": [{
            "certificate_chain": {"filename": tls.cert.display().to_string()},
            "private_key": {"filename": tls.key.display().to_string()}
        }],
        "validation_context": {"trusted_ca": {"filename": tls.ca.display().to_string()}}
    })
}

/// Turns a [`listener`] into an mTLS one: the client certificate is verified against `tls.ca`
/// when presented (required when `require_client_certificate`), and the connection manager
/// builds `x-forwarded-client-cert` with `forward` (`SANITIZE_SET` for a filter that reads the
/// peer's URI SANs, `FORWARD_ONLY` behind a trusted front Envoy) and every URI SAN.
pub fn with_mtls(
    mut listener: Value,
    tls: &TlsFiles,
    require_client_certificate: bool,
    forward: &str,
) -> Value {
    let mut ctx = common_tls_context(tls);
    ctx["alpn_protocols"] = json!(["h2", "http/1.1"]);
    let chain = &mut listener["filter_chains"][0];
    chain["transport_socket"] = json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": require_client_certificate,
            "common_tls_context": ctx
        }
    });
    let hcm = &mut chain["filters"][0]["typed_config"];
    hcm["forward_client_cert_details"] = json!(forward);
    hcm["set_current_client_cert_details"] = json!({"uri": true});
    listener
}

/// Turns a [`cluster`] into one that speaks mTLS upstream with this client certificate.
pub fn with_upstream_tls(mut cluster: Value, tls: &TlsFiles, sni: &str) -> Value {
    let mut ctx = common_tls_context(tls);
    ctx["alpn_protocols"] = json!(["h2"]);
    cluster["transport_socket"] = json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": sni,
            "common_tls_context": ctx
        }
    });
    cluster
}
