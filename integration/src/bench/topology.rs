//! The bootstraps of a run: the measured Envoy (an mTLS listener with `/direct` and `/proxied`,
//! the configuration's HTTP filters, a cluster to the upstream) and the client Envoy that
//! originates mTLS with the client SVID and keeps the downstream protocol. Our filters enter
//! through the harness's builders: [`bootstrap::wasm_filter`] for the wasm modules,
//! [`bootstrap::native_filter`] for `libmesh_filters.so`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{
    suite_config, Kind, Stage, CALIBRATION_MODULE, CALIBRATION_ROOT_ID, CLIENT_ID,
    LOCAL_RATE_LIMIT_PREFIX, NATIVE_MODULE, NATIVE_SEARCH_PATH, STAT_PREFIX, SUITE_MODULE,
};
use crate::bootstrap::{self, Plugin, TlsFiles};
use crate::envoy;

/// One of our wasm modules as an HTTP filter in a VM of its own (`vm_id` = root_id), so the
/// chained filters are one VM each, as the filters' READMEs configure them.
fn wasm_filter(root_id: &str, module: &Path, config: &Value) -> Value {
    bootstrap::wasm_filter(root_id, module, Plugin::json(config).in_vm(root_id))
}

/// Envoy's RBAC filter allowing exactly one authenticated principal.
pub fn rbac_filter(principal: &str) -> Value {
    json!({
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {
                "action": "ALLOW",
                "policies": {"bench-client": {
                    "permissions": [{"any": true}],
                    "principals": [{"authenticated": {"principal_name": {"exact": principal}}}]
                }}
            }
        }
    })
}

/// Envoy's local rate limit with a token bucket that never runs dry (a million tokens, a
/// million more every second), enabled and enforced on every request.
pub fn local_rate_limit_filter() -> Value {
    let all = json!({"numerator": 100, "denominator": "HUNDRED"});
    json!({
        "name": "envoy.filters.http.local_ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": LOCAL_RATE_LIMIT_PREFIX,
            "token_bucket": {"max_tokens": 1_000_000, "tokens_per_fill": 1_000_000, "fill_interval": "1s"},
            "filter_enabled": {"runtime_key": "bench_local_rate_limit_enabled", "default_value": all},
            "filter_enforced": {"runtime_key": "bench_local_rate_limit_enforced", "default_value": all}
        }
    })
}

/// Where the modules are: `module name → path` (`.wasm` files, and [`NATIVE_MODULE`]'s `.so`).
pub type Modules = BTreeMap<String, PathBuf>;

/// Where `libmesh_filters.so` is: in `$ENVOY_DYNAMIC_MODULES_SEARCH_PATH` when that is set,
/// else where `make build` puts it (`target/native`, `$CARGO_TARGET_DIR` if set), whether it
/// has been built or not.
pub fn native_module_path() -> PathBuf {
    let dir = std::env::var_os(NATIVE_SEARCH_PATH)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| envoy::workspace_root().join("target"))
                .join("native")
        });
    dir.join(format!("{NATIVE_MODULE}.so"))
}

/// The HTTP filters of a configuration (the router is appended by [`bootstrap::listener`]).
/// The native module is loaded by name: Envoy finds it through [`NATIVE_SEARCH_PATH`].
pub fn http_filters(kind: Kind, modules: &Modules) -> Result<Vec<Value>, String> {
    let module = |name: &str| {
        modules
            .get(name)
            .cloned()
            .ok_or_else(|| format!("{name}.wasm is missing"))
    };
    Ok(match kind {
        Kind::Bare | Kind::NativeRouteTimeout => vec![],
        Kind::NativeRbac => vec![rbac_filter(CLIENT_ID)],
        Kind::NativeLocalRateLimit => vec![local_rate_limit_filter()],
        Kind::Calibration => vec![wasm_filter(
            CALIBRATION_ROOT_ID,
            &module(CALIBRATION_MODULE)?,
            &json!({}),
        )],
        Kind::Suite => vec![wasm_filter("mesh", &module(SUITE_MODULE)?, &suite_config())],
        Kind::Chain => Stage::ALL
            .iter()
            .map(|s| {
                Ok(wasm_filter(
                    &s.root_id(),
                    &module(&s.module())?,
                    &s.config(),
                ))
            })
            .collect::<Result<Vec<Value>, String>>()?,
        Kind::Wasm(s) => vec![wasm_filter(
            &s.root_id(),
            &module(&s.module())?,
            &s.config(),
        )],
        Kind::NativeStage(_) | Kind::NativeSuite | Kind::NativeEmpty => {
            if !modules.contains_key(NATIVE_MODULE) {
                return Err(format!("{NATIVE_MODULE}.so is missing"));
            }
            let config = kind.suite_config().unwrap_or_default();
            vec![bootstrap::native_filter("mesh", &config.to_string())]
        }
    })
}

/// HTTP protocol options that keep the downstream protocol upstream (HTTP/1.1 → HTTP/1.1,
/// HTTP/2 → HTTP/2).
fn downstream_protocol() -> Value {
    json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "use_downstream_protocol_config": {"http_protocol_options": {}, "http2_protocol_options": {}}
        }
    })
}

/// A static cluster of one endpoint ([`bootstrap::cluster`], Envoy's own limits raised) that
/// keeps the downstream protocol.
pub fn static_cluster(name: &str, addr: SocketAddr) -> Value {
    let mut cluster = bootstrap::cluster(name, addr, false);
    if let Some(c) = cluster.as_object_mut() {
        c.insert(
            "typed_extension_protocol_options".to_owned(),
            downstream_protocol(),
        );
    }
    cluster
}

/// The measured Envoy: the mTLS listener `bench` with `/direct` (direct_response) and
/// `/proxied` (to `upstream`), and the configuration's filters.
pub fn measured_bootstrap(
    kind: Kind,
    modules: &Modules,
    tls: &TlsFiles,
    upstream: SocketAddr,
) -> Result<Value, String> {
    // No route timeout unless it is what is measured (Envoy's default would arm a 15 s timer).
    let timeout = if kind == Kind::NativeRouteTimeout {
        "15s"
    } else {
        "0s"
    };
    let listener = measured_listener(
        STAT_PREFIX,
        measured_routes(timeout),
        http_filters(kind, modules)?,
        tls,
    );
    Ok(bootstrap::bootstrap(
        vec![listener],
        vec![static_cluster("upstream", upstream)],
    ))
}

/// The measured routes: `direct` (`/direct`, a `direct_response`) and `proxied` (`/proxied`, to
/// the cluster `upstream` with this route timeout).
pub fn measured_routes(timeout: &str) -> Vec<Value> {
    vec![
        json!({
            "name": "direct",
            "match": {"prefix": "/direct"},
            "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}
        }),
        json!({
            "name": "proxied",
            "match": {"prefix": "/proxied"},
            "route": {"cluster": "upstream", "timeout": timeout}
        }),
    ]
}

/// A measured listener (its name is also its `stat_prefix`): mTLS with the client certificate
/// required, `SANITIZE_SET` XFCC with the URI SANs, these routes and filters.
pub fn measured_listener(
    name: &str,
    routes: Vec<Value>,
    filters: Vec<Value>,
    tls: &TlsFiles,
) -> Value {
    bootstrap::with_mtls(
        bootstrap::listener(name, routes, filters),
        tls,
        true,
        "SANITIZE_SET",
    )
}

/// The client Envoy: a plaintext listener `client` that sends everything to the measured Envoy
/// over mTLS with the client SVID `tls.cert`, route timeout 30 s (so the measured Envoy sees
/// `x-envoy-expected-rq-timeout-ms: 30000`, as from a previous mesh hop).
pub fn client_bootstrap(measured: SocketAddr, tls: &TlsFiles, server_name: &str) -> Value {
    let routes = vec![json!({
        "name": "all",
        "match": {"prefix": "/"},
        "route": {"cluster": "measured", "timeout": "30s"}
    })];
    bootstrap::bootstrap(
        vec![bootstrap::listener("client", routes, vec![])],
        vec![client_cluster("measured", measured, tls, server_name)],
    )
}

/// A cluster of the client Envoy: one measured listener, reached over mTLS with the client SVID
/// `tls.cert`, keeping the downstream protocol.
///
/// [`bootstrap::with_upstream_tls`] offers ALPN `h2` only; here the client Envoy offers no
/// ALPN, so that it speaks HTTP/1.1 or HTTP/2 as its downstream did and the measured Envoy's
/// codec tells them apart by their first bytes.
pub fn client_cluster(
    name: &str,
    measured: SocketAddr,
    tls: &TlsFiles,
    server_name: &str,
) -> Value {
    let mut cluster =
        bootstrap::with_upstream_tls(static_cluster(name, measured), tls, server_name);
    if let Some(context) = cluster
        .pointer_mut("/transport_socket/typed_config/common_tls_context")
        .and_then(Value::as_object_mut)
    {
        context.remove("alpn_protocols");
    }
    cluster
}
