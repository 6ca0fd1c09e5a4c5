//! Envoy bootstraps for tests, built as JSON values (Envoy reads JSON as YAML): listeners,
//! routes with metadata, clusters, TLS and mTLS, `stats_tags`.
//!
//! Every port is 0: the OS picks, and [`crate::envoy::Envoy`] reads back what was bound. The
//! `stats_tags` are the ones the shipped configs use, so tests see the same Prometheus labels
//! as users.
//!
//! **Our filters enter a bootstrap through [`wasm_filter`] only** ([`filter`] names the module
//! by root_id): no test writes a filter's `typed_config` by hand, so that one function decides
//! how the filter under test is loaded.

// Test tooling: JSON values built here have the shape indexed.
#![allow(clippy::indexing_slicing)]

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;

use crate::envoy::wasm_path;

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

/// The plugin configuration of one of our filters and the VM it runs in.
#[derive(Clone, Debug, PartialEq)]
pub struct Plugin {
    /// The configuration text, as Envoy passes it to the filter.
    configuration: String,
    /// The `vm_id`: filters with the same one (and the same module) share a VM per worker.
    vm_id: String,
}

/// The `vm_id` of every filter unless a test asks for another.
pub const VM_ID: &str = "mesh";

impl Plugin {
    /// A configuration given as JSON.
    pub fn json(config: &Value) -> Plugin {
        Plugin::text(&config.to_string())
    }

    /// A configuration given as text, valid JSON or not (the corpus of broken ones).
    pub fn text(configuration: &str) -> Plugin {
        Plugin {
            configuration: configuration.to_owned(),
            vm_id: VM_ID.to_owned(),
        }
    }

    /// The same configuration in a VM of its own.
    pub fn in_vm(self, vm_id: &str) -> Plugin {
        Plugin {
            vm_id: vm_id.to_owned(),
            ..self
        }
    }
}

impl From<&Value> for Plugin {
    fn from(config: &Value) -> Plugin {
        Plugin::json(config)
    }
}

/// One of our filters: `filter` is the root_id (`mesh.deadline`, `mesh` for the suite),
/// `wasm` the module file. The one place a bootstrap gets one of our filters.
pub fn wasm_filter(filter: &str, wasm: &Path, plugin: impl Into<Plugin>) -> Value {
    let plugin = plugin.into();
    json!({
        "name": filter,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": filter,
                "root_id": filter,
                "vm_config": {
                    "vm_id": plugin.vm_id,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": wasm.display().to_string()}}
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": plugin.configuration
                }
            }
        }
    })
}

/// The suite as the native dynamic module (`libmesh_filters.so`, found through
/// `ENVOY_DYNAMIC_MODULES_SEARCH_PATH`): the same plugin configuration JSON as the wasm suite's.
/// `name` is the filter's name in `http_filters`, the key of its per-route configuration.
/// Metrics appear as `envoy_mesh_<stage>_<stat>` (the `mesh` metrics namespace).
pub fn native_filter(name: &str, configuration: &str) -> Value {
    native_stage_filter(name, "suite", configuration)
}

/// The native module running what `filter_name` names: `suite`, or one stage alone by its
/// name (`mesh.deadline`), configured as that stage's single-stage wasm module is.
pub fn native_stage_filter(name: &str, filter_name: &str, configuration: &str) -> Value {
    json!({
        "name": name,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            "dynamic_module_config": {"name": "mesh_filters", "metrics_namespace": "mesh"},
            "filter_name": filter_name,
            "filter_config": {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": configuration
            }
        }
    })
}

/// A route's per-route configuration for the native module under the filter named `filter`:
/// `sections` is what route metadata would carry, keyed by stage (`{"mesh.deadline": {...}}`).
pub fn with_native_route_config(mut route: Value, filter: &str, sections: &Value) -> Value {
    route["typed_per_filter_config"][filter] = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilterPerRoute",
        "dynamic_module_config": {"name": "mesh_filters"},
        "filter_name": route["name"].as_str().unwrap_or("route"),
        "filter_config": {
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": sections.to_string()
        }
    });
    route
}

/// The module of a root_id: `mesh` is the suite (`mesh_filters`), `mesh.deadline` is
/// `mesh_deadline`.
pub fn module(root_id: &str) -> String {
    match root_id {
        "mesh" => "mesh_filters".to_owned(),
        f => f.replace('.', "_"),
    }
}

/// [`wasm_filter`] with the built module of `root_id` (see [`crate::envoy::wasm_path`]); an
/// Envoy started on it says so when the module has not been built.
pub fn filter(root_id: &str, plugin: impl Into<Plugin>) -> Value {
    wasm_filter(root_id, &wasm_path(&module(root_id)), plugin)
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

/// Switches the filter named `filter` off on a route the Envoy way
/// (`typed_per_filter_config` with `FilterConfig{disabled: true}`): Envoy skips it there.
pub fn with_filter_disabled(mut route: Value, filter: &str) -> Value {
    route["typed_per_filter_config"][filter] = json!({
        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
        "disabled": true
    });
    route
}

/// Sets a field of a route's action (`route.route`), e.g. `retry_policy`.
pub fn with_route_action(mut route: Value, field: &str, value: Value) -> Value {
    route["route"][field] = value;
    route
}

/// The HTTP connection manager of a [`listener`].
fn connection_manager(listener: &mut Value) -> &mut Value {
    &mut listener["filter_chains"][0]["filters"][0]["typed_config"]
}

/// Sets how the connection manager treats `x-forwarded-client-cert` (`SANITIZE`,
/// `FORWARD_ONLY`, `ALWAYS_FORWARD_ONLY`, `SANITIZE_SET`, `APPEND_FORWARD`).
pub fn with_forward_client_cert(mut listener: Value, mode: &str) -> Value {
    connection_manager(&mut listener)["forward_client_cert_details"] = json!(mode);
    listener
}

/// Logs every request of a listener to Envoy's stderr (its log) in `format`
/// (Envoy's access-log format; end it with a newline).
pub fn with_access_log(mut listener: Value, format: &str) -> Value {
    connection_manager(&mut listener)["access_log"] = json!([{
        "name": "envoy.access_loggers.stderr",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog",
            "log_format": {"text_format_source": {"inline_string": format}}
        }
    }]);
    listener
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
    let hcm = connection_manager(&mut listener);
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

/// A bootstrap as YAML text, for tests about what Envoy's YAML loader makes of a value (it
/// reads numbers inside route metadata as strings: envoy#24410).
pub fn to_yaml(bootstrap: &Value) -> Result<String, crate::Error> {
    Ok(serde_yaml::to_string(bootstrap)?)
}
