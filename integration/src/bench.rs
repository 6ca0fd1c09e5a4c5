//! The per-request cost benchmark of `make bench` (the `bench` binary): what each filter, the
//! suite and Envoy's native analogues cost in Envoy CPU time per request, next to bare Envoy and
//! a calibration filter.
//!
//! # Set-up
//!
//! ```text
//!   core 1                                         core 0
//!   wrk / h2load ──plaintext──▶ client Envoy ──mTLS──▶ measured Envoy ──▶ /direct: direct_response
//!                               (client SVID)          (filters, --concurrency 1)
//!                                                      └──────plaintext──▶ /proxied: upstream (core 1)
//! ```
//!
//! Every configuration is measured on the same listener family: an mTLS listener
//! (`require_client_certificate`, `forward_client_cert_details: SANITIZE_SET`,
//! `set_current_client_cert_details: {uri: true}`) that the identity filter, RBAC and the suite
//! need, so the TLS and XFCC work is in every number, bare Envoy's included, and cancels out of
//! every overhead. A client Envoy pinned to the load core originates the mTLS with a client SVID
//! (`spiffe://mesh.local/ns/default/sa/bench-client`), keeping the downstream protocol
//! (HTTP/1.1 stays HTTP/1.1, HTTP/2 stays HTTP/2). The upstream is a minimal in-process
//! HTTP/1.1 + h2c server on the load core that answers `ok`.
//!
//! # Measurement
//!
//! For one configuration in one round: a fresh measured Envoy (start-up time is spawn → `/ready`
//! LIVE), a fresh client Envoy, a functional check (each filter must visibly do its work), then
//! the five variants (HTTP/1.1 with `wrk`, HTTP/2 with `h2load`, each on direct_response and
//! proxied; unary gRPC with `h2load` on the proxied route).
//! Each variant is a closed-loop load; after a warm-up the driver samples the measured Envoy's
//! CPU time (utime + stime of the whole process, `/proc/<pid>/stat`) and its
//! `downstream_rq_completed` counter, waits the measured window and samples again. CPU µs per
//! request is ΔCPU ÷ Δrequests; requests/s is Δrequests ÷ window; latency percentiles come from
//! the load generator. RSS (`VmRSS`) is read after the last variant. Rounds alternate the
//! configurations (A B C … A B C …); medians and spreads are over rounds, and overheads and
//! ratios are taken within each round (paired) before the median, so that slow drifts of a shared
//! machine cancel.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};

use crate::bootstrap::{self, TlsFiles};

pub mod driver;

/// The client SVID the client Envoy presents; the only principal the identity filter and RBAC
/// allow.
pub const CLIENT_ID: &str = "spiffe://mesh.local/ns/default/sa/bench-client";
/// Sent on every request, so trace-propagation extracts a context (a mesh hop) and injects.
pub const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// The request header the calibration filter reads.
pub const CALIBRATION_HEADER: &str = "x-bench-calibration";
/// The `stat_prefix` of the measured listener.
pub const STAT_PREFIX: &str = "bench";
/// The calibration filter's root_id.
pub const CALIBRATION_ROOT_ID: &str = "bench.calibration";
/// The calibration filter's module name (`target/wasm32-wasip1/release/<name>.wasm`).
pub const CALIBRATION_MODULE: &str = "mesh_bench_calibration";
/// The suite's module name.
pub const SUITE_MODULE: &str = "mesh_filters";
/// Target of the issue: `mesh_filters.wasm` at most 250 KB (KiB: 256,000 bytes).
pub const SUITE_MAX_BYTES: u64 = 250 * 1024;
/// The headers every load-generator request carries.
pub const LOAD_HEADERS: [(&str, &str); 2] =
    [("traceparent", TRACEPARENT), (CALIBRATION_HEADER, "1")];

/// The criterion benchmarks of `bench/micro`, in the order reported.
pub const MICRO_BENCHMARKS: [(&str, &str); 5] = [
    ("traceparent_parse_format", "traceparent parse + format"),
    (
        "spiffe_parse_match_50",
        "SPIFFE ID parse + match against 50 patterns",
    ),
    (
        "breaker_record_decide",
        "breaker decide (admit) + record, failure-rate window",
    ),
    (
        "budget_deposit_withdraw",
        "retry budget deposit + reserve + withdraw",
    ),
    ("grpc_timeout_parse", "grpc-timeout parse"),
];

// ---------------------------------------------------------------------------------------------
// Parameters

/// What `BENCH_*` environment variables choose.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// Measured window of one run, seconds (`BENCH_SECONDS`, default 2).
    pub seconds: f64,
    /// Rounds over every configuration (`BENCH_ROUNDS`, default 3).
    pub rounds: u32,
    /// Load before the window opens, seconds (`BENCH_WARMUP`, default 0.5).
    pub warmup: f64,
    /// HTTP/1.1 connections of `wrk` (`BENCH_H1_CONNECTIONS`, default 16).
    pub h1_connections: u32,
    /// HTTP/2 connections × concurrent streams of `h2load` (`BENCH_H2_CONNECTIONS`, default 4;
    /// `BENCH_H2_STREAMS`, default 8).
    pub h2_connections: u32,
    pub h2_streams: u32,
    /// Only these configurations (`BENCH_ONLY`, comma-separated ids; bare and calibration are
    /// always kept, since everything is relative to them).
    pub only: Option<Vec<String>>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            seconds: 2.0,
            rounds: 3,
            warmup: 0.5,
            h1_connections: 16,
            h2_connections: 4,
            h2_streams: 8,
            only: None,
        }
    }
}

impl Params {
    /// Reads the `BENCH_*` variables through `get` (the environment, in the binary).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Params, String> {
        let mut p = Params::default();
        let num = |name: &str, min: f64, max: f64| env_number(&get, name, min, max);
        if let Some(s) = num("BENCH_SECONDS", 0.5, 600.0)? {
            p.seconds = s;
        }
        if let Some(r) = num("BENCH_ROUNDS", 1.0, 100.0)? {
            p.rounds = whole(r);
        }
        if let Some(w) = num("BENCH_WARMUP", 0.0, 60.0)? {
            p.warmup = w;
        }
        if let Some(c) = num("BENCH_H1_CONNECTIONS", 1.0, 1000.0)? {
            p.h1_connections = whole(c);
        }
        if let Some(c) = num("BENCH_H2_CONNECTIONS", 1.0, 1000.0)? {
            p.h2_connections = whole(c);
        }
        if let Some(c) = num("BENCH_H2_STREAMS", 1.0, 1000.0)? {
            p.h2_streams = whole(c);
        }
        if let Some(list) = get("BENCH_ONLY").filter(|v| !v.trim().is_empty()) {
            let ids: Vec<String> = list.split(',').map(|s| s.trim().to_owned()).collect();
            let known: Vec<&str> = Kind::ALL.iter().map(|k| k.id()).collect();
            if let Some(bad) = ids.iter().find(|id| !known.contains(&id.as_str())) {
                return Err(format!(
                    "BENCH_ONLY: unknown configuration {bad:?}; known: {}",
                    known.join(", ")
                ));
            }
            p.only = Some(ids);
        }
        Ok(p)
    }
}

/// An optional numeric environment setting (`BENCH_*`, `SOAK_*`) read through `get`: unset or
/// blank is `None`; anything but a finite number within `min..=max` is an error naming it.
pub fn env_number(
    get: &impl Fn(&str) -> Option<String>,
    name: &str,
    min: f64,
    max: f64,
) -> Result<Option<f64>, String> {
    match get(name).filter(|v| !v.trim().is_empty()) {
        None => Ok(None),
        Some(v) => match v.trim().parse::<f64>() {
            Ok(n) if n.is_finite() && n >= min && n <= max => Ok(Some(n)),
            _ => Err(format!(
                "{name}={v:?}: expected a number within {min}..={max}"
            )),
        },
    }
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn whole(n: f64) -> u32 {
    n.round().clamp(0.0, f64::from(u32::MAX)) as u32
}

// ---------------------------------------------------------------------------------------------
// Variants

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Http1,
    Http2,
    /// Unary gRPC calls over HTTP/2 (h2load with a framed empty message), answered by the
    /// upstream with `grpc-status: 0` in trailers.
    Grpc,
}

impl Protocol {
    /// The protocol the measured Envoy sees downstream.
    pub fn is_http2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Route {
    /// A `direct_response` route: Envoy answers itself.
    Direct,
    /// A route to the upstream.
    Proxied,
}

/// One protocol on one route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Variant {
    pub protocol: Protocol,
    pub route: Route,
}

impl Variant {
    pub const ALL: [Variant; 5] = [
        Variant {
            protocol: Protocol::Http1,
            route: Route::Direct,
        },
        Variant {
            protocol: Protocol::Http1,
            route: Route::Proxied,
        },
        Variant {
            protocol: Protocol::Http2,
            route: Route::Direct,
        },
        Variant {
            protocol: Protocol::Http2,
            route: Route::Proxied,
        },
        Variant {
            protocol: Protocol::Grpc,
            route: Route::Proxied,
        },
    ];

    pub fn label(self) -> &'static str {
        match (self.protocol, self.route) {
            (Protocol::Http1, Route::Direct) => "HTTP/1.1 direct_response",
            (Protocol::Http1, Route::Proxied) => "HTTP/1.1 proxied",
            (Protocol::Http2, Route::Direct) => "HTTP/2 direct_response",
            (Protocol::Http2, Route::Proxied) => "HTTP/2 proxied",
            (Protocol::Grpc, Route::Direct) => "gRPC direct_response",
            (Protocol::Grpc, Route::Proxied) => "gRPC proxied",
        }
    }

    pub fn short(self) -> &'static str {
        match (self.protocol, self.route) {
            (Protocol::Http1, Route::Direct) => "h1 direct",
            (Protocol::Http1, Route::Proxied) => "h1 proxied",
            (Protocol::Http2, Route::Direct) => "h2 direct",
            (Protocol::Http2, Route::Proxied) => "h2 proxied",
            (Protocol::Grpc, Route::Direct) => "grpc direct",
            (Protocol::Grpc, Route::Proxied) => "grpc proxied",
        }
    }

    /// The request path on the measured Envoy.
    pub fn path(self) -> &'static str {
        match (self.protocol, self.route) {
            (Protocol::Grpc, Route::Direct) => "/direct/mesh.bench.Bench/Call",
            (Protocol::Grpc, Route::Proxied) => "/proxied/mesh.bench.Bench/Call",
            (_, Route::Direct) => "/direct",
            (_, Route::Proxied) => "/proxied",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Configurations

/// What is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Bare,
    Calibration,
    Deadline,
    CircuitBreaker,
    RetryBudget,
    SpiffeIdentity,
    TracePropagation,
    FiveFilters,
    Suite,
    NativeRbac,
    NativeRouteTimeout,
}

/// One of the five mesh filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    SpiffeIdentity,
    CircuitBreaker,
    Deadline,
    RetryBudget,
    TracePropagation,
}

impl Stage {
    /// In the suite's order.
    pub const ALL: [Stage; 5] = [
        Stage::SpiffeIdentity,
        Stage::CircuitBreaker,
        Stage::Deadline,
        Stage::RetryBudget,
        Stage::TracePropagation,
    ];

    /// The suite's section name.
    pub fn section(self) -> &'static str {
        match self {
            Stage::SpiffeIdentity => "spiffe_identity",
            Stage::CircuitBreaker => "circuit_breaker",
            Stage::Deadline => "deadline",
            Stage::RetryBudget => "retry_budget",
            Stage::TracePropagation => "trace_propagation",
        }
    }

    /// root_id and route-metadata key: `mesh.<section>`.
    pub fn root_id(self) -> String {
        format!("mesh.{}", self.section())
    }

    /// The standalone module: `mesh_<section>`.
    pub fn module(self) -> String {
        format!("mesh_{}", self.section())
    }

    /// The configuration measured: realistic, and such that the stage does its work on every
    /// request. The same JSON is the stage's section in the suite.
    pub fn config(self) -> Value {
        match self {
            // Authenticates the peer (XFCC + peer certificate digest), validates the ID, matches
            // one allowed principal, forwards x-spiffe-id.
            Stage::SpiffeIdentity => json!({"trust_domains": ["mesh.local"], "allow": [CLIENT_ID]}),
            // The demo's breaker: one shared-data read per request, every outcome classified.
            Stage::CircuitBreaker => json!({"consecutive_failures": 5, "open_duration": "60s"}),
            // Honours the caller's x-envoy-expected-rq-timeout-ms (the client Envoy sends 30 s),
            // sets the router's timeout and propagates the remaining budget.
            Stage::Deadline => json!({"timeout": "15s"}),
            // Deposits and reserves on arrival, settles on completion (shared data, CAS).
            Stage::RetryBudget => {
                json!({"max_retries": 2, "retry_ratio": 0.2, "min_retries_per_second": 10})
            }
            // Extracts the incoming traceparent, a new span id, injects W3C and B3.
            Stage::TracePropagation => json!({"inject": ["w3c", "b3"]}),
        }
    }
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::Bare,
        Kind::Calibration,
        Kind::SpiffeIdentity,
        Kind::CircuitBreaker,
        Kind::Deadline,
        Kind::RetryBudget,
        Kind::TracePropagation,
        Kind::FiveFilters,
        Kind::Suite,
        Kind::NativeRbac,
        Kind::NativeRouteTimeout,
    ];

    /// Short id (`BENCH_ONLY`, logs).
    pub fn id(self) -> &'static str {
        match self {
            Kind::Bare => "bare",
            Kind::Calibration => "calibration",
            Kind::Deadline => "deadline",
            Kind::CircuitBreaker => "circuit_breaker",
            Kind::RetryBudget => "retry_budget",
            Kind::SpiffeIdentity => "spiffe_identity",
            Kind::TracePropagation => "trace_propagation",
            Kind::FiveFilters => "five_filters",
            Kind::Suite => "suite",
            Kind::NativeRbac => "native_rbac",
            Kind::NativeRouteTimeout => "native_route_timeout",
        }
    }

    /// As shown in tables.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Bare => "bare Envoy",
            Kind::Calibration => "calibration filter",
            Kind::Deadline => "deadline",
            Kind::CircuitBreaker => "circuit-breaker",
            Kind::RetryBudget => "retry-budget",
            Kind::SpiffeIdentity => "spiffe-identity",
            Kind::TracePropagation => "trace-propagation",
            Kind::FiveFilters => "five filters (chain)",
            Kind::Suite => "suite (mesh_filters.wasm)",
            Kind::NativeRbac => "native RBAC, 1 principal",
            Kind::NativeRouteTimeout => "native route timeout",
        }
    }

    /// The single mesh filter this configuration runs, if it is one.
    pub fn stage(self) -> Option<Stage> {
        match self {
            Kind::Deadline => Some(Stage::Deadline),
            Kind::CircuitBreaker => Some(Stage::CircuitBreaker),
            Kind::RetryBudget => Some(Stage::RetryBudget),
            Kind::SpiffeIdentity => Some(Stage::SpiffeIdentity),
            Kind::TracePropagation => Some(Stage::TracePropagation),
            _ => None,
        }
    }

    /// The stages whose work the functional check looks for.
    pub fn stages(self) -> Vec<Stage> {
        match self {
            Kind::FiveFilters | Kind::Suite => Stage::ALL.to_vec(),
            k => k.stage().into_iter().collect(),
        }
    }

    /// The wasm modules this configuration loads (module names, without `.wasm`).
    pub fn modules(self) -> Vec<String> {
        match self {
            Kind::Bare | Kind::NativeRbac | Kind::NativeRouteTimeout => vec![],
            Kind::Calibration => vec![CALIBRATION_MODULE.to_owned()],
            Kind::FiveFilters => Stage::ALL.iter().map(|s| s.module()).collect(),
            Kind::Suite => vec![SUITE_MODULE.to_owned()],
            k => k.stage().map(Stage::module).into_iter().collect(),
        }
    }

    /// What the native analogue stands in for.
    pub fn analogue_of(self) -> Option<Kind> {
        match self {
            Kind::NativeRbac => Some(Kind::SpiffeIdentity),
            Kind::NativeRouteTimeout => Some(Kind::Deadline),
            _ => None,
        }
    }
}

/// The suite's configuration: one section per stage, each exactly the standalone configuration.
pub fn suite_config() -> Value {
    let mut sections = serde_json::Map::new();
    for stage in Stage::ALL {
        sections.insert(stage.section().to_owned(), stage.config());
    }
    Value::Object(sections)
}

/// A wasm HTTP filter: one `vm_id` per module, so the five filters are five VMs (as the
/// filters' READMEs configure them).
pub fn wasm_http_filter(root_id: &str, vm_id: &str, module: &Path, config: &Value) -> Value {
    json!({
        "name": root_id,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": root_id,
                "root_id": root_id,
                "vm_config": {
                    "vm_id": vm_id,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": module.display().to_string()}}
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": config.to_string()
                }
            }
        }
    })
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

/// Where the modules are: `module name → path`.
pub type Modules = BTreeMap<String, PathBuf>;

/// The HTTP filters of a configuration (the router is appended by [`bootstrap::listener`]).
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
        Kind::Calibration => vec![wasm_http_filter(
            CALIBRATION_ROOT_ID,
            CALIBRATION_ROOT_ID,
            &module(CALIBRATION_MODULE)?,
            &json!({}),
        )],
        Kind::Suite => vec![wasm_http_filter(
            "mesh",
            "mesh",
            &module(SUITE_MODULE)?,
            &suite_config(),
        )],
        Kind::FiveFilters => Stage::ALL
            .iter()
            .map(|s| {
                let root = s.root_id();
                Ok(wasm_http_filter(
                    &root,
                    &root,
                    &module(&s.module())?,
                    &s.config(),
                ))
            })
            .collect::<Result<Vec<Value>, String>>()?,
        k => match k.stage() {
            Some(s) => {
                let root = s.root_id();
                vec![wasm_http_filter(
                    &root,
                    &root,
                    &module(&s.module())?,
                    &s.config(),
                )]
            }
            None => vec![],
        },
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

/// A static cluster of one endpoint that keeps the downstream protocol, Envoy's own limits
/// raised.
pub fn static_cluster(name: &str, addr: SocketAddr) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "circuit_breakers": {"thresholds": [{
            "max_connections": 100000, "max_pending_requests": 100000, "max_requests": 100000, "max_retries": 100000
        }]},
        "typed_extension_protocol_options": downstream_protocol(),
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
            "socket_address": {"address": addr.ip().to_string(), "port_value": addr.port()}
        }}}]}]}
    })
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
pub fn client_cluster(
    name: &str,
    measured: SocketAddr,
    tls: &TlsFiles,
    server_name: &str,
) -> Value {
    let mut cluster = static_cluster(name, measured);
    if let Some(c) = cluster.as_object_mut() {
        c.insert(
            "transport_socket".to_owned(),
            json!({
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                    "sni": server_name,
                    "common_tls_context": {
                        "tls_certificates": [{
                            "certificate_chain": {"filename": tls.cert.display().to_string()},
                            "private_key": {"filename": tls.key.display().to_string()}
                        }],
                        "validation_context": {"trusted_ca": {"filename": tls.ca.display().to_string()}}
                    }
                }
            }),
        );
    }
    cluster
}

// ---------------------------------------------------------------------------------------------
// Parsing what the tools print

/// What a load generator reported.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    /// Requests completed, as the load generator counted them.
    pub requests: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Non-2xx responses plus connection and timeout errors.
    pub errors: u64,
}

/// A latency as wrk prints it (`812.00us`, `1.23ms`, `2.01s`, `1.50m`), in milliseconds.
pub fn parse_wrk_latency(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = (s.get(..split)?, s.get(split..)?);
    let n: f64 = num.parse().ok()?;
    let factor = match unit {
        "us" => 1e-3,
        "ms" => 1.0,
        "s" => 1e3,
        "m" => 60e3,
        "h" => 3600e3,
        _ => return None,
    };
    Some(n * factor)
}

/// Reads `wrk --latency` output.
pub fn parse_wrk(text: &str) -> Result<LoadReport, String> {
    let mut r = LoadReport::default();
    let (mut p50, mut p99, mut requests) = (None, None, None);
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v, ..] => p50 = parse_wrk_latency(v),
            ["99%", v, ..] => p99 = parse_wrk_latency(v),
            [n, "requests", "in", ..] => requests = n.parse().ok(),
            ["Non-2xx", "or", "3xx", "responses:", n] => {
                r.errors += n.parse::<u64>().unwrap_or(0);
            }
            ["Socket", "errors:", rest @ ..] => {
                // Socket errors: connect 0, read 0, write 0, timeout 0
                r.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    r.requests = requests.ok_or("wrk printed no request count")?;
    r.p50_ms = p50.ok_or("wrk printed no 50% latency (is --latency given?)")?;
    r.p99_ms = p99.ok_or("wrk printed no 99% latency")?;
    Ok(r)
}

/// Reads `h2load` output, with percentiles from its `--log-file` (one row per request:
/// start µs, status, duration µs).
pub fn parse_h2load(text: &str, log: &str) -> Result<LoadReport, String> {
    let mut r = LoadReport::default();
    let mut requests = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("requests:") {
            // requests: 100 total, 100 started, 100 done, 98 succeeded, 2 failed, 0 errored, 0 timeout
            let mut words = rest.split_whitespace();
            while let (Some(n), Some(what)) = (words.next(), words.next()) {
                let n: u64 = n.parse().unwrap_or(0);
                match what.trim_end_matches(',') {
                    "succeeded" => requests = Some(n),
                    "failed" | "errored" | "timeout" => r.errors += n,
                    _ => {}
                }
            }
        } else if let Some(rest) = line.strip_prefix("status codes:") {
            // status codes: 100 2xx, 0 3xx, 0 4xx, 0 5xx
            let mut words = rest.split_whitespace();
            while let (Some(n), Some(what)) = (words.next(), words.next()) {
                if matches!(what.trim_end_matches(','), "4xx" | "5xx") {
                    r.errors += n.parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    r.requests = requests.ok_or("h2load printed no `requests:` line")?;
    let mut latencies: Vec<f64> = log
        .lines()
        .filter_map(|l| {
            let mut cols = l.split('\t');
            let _start = cols.next()?;
            let _status = cols.next()?;
            cols.next()?.trim().parse::<f64>().ok().map(|us| us / 1e3)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    r.p50_ms = percentile(&latencies, 0.50).ok_or("h2load logged no request")?;
    r.p99_ms = percentile(&latencies, 0.99).ok_or("h2load logged no request")?;
    Ok(r)
}

/// The `q` quantile of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).copied()
}

/// utime + stime (clock ticks) of a process, from the text of `/proc/<pid>/stat`.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    // The command name may contain spaces and parentheses: fields are counted after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3 (index 0 here); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` in KiB from the text of `/proc/<pid>/status`.
pub fn vm_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// A counter from Envoy's admin `/stats` text (`name: value` lines).
pub fn admin_stat(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        (n.trim() == name).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The version of `envoy --version` output: `envoy  version: <hash>/1.40.0/Clean/RELEASE/...`.
pub fn envoy_version(text: &str) -> String {
    let tail = text.split("version:").nth(1).unwrap_or(text).trim();
    let mut parts = tail.split('/');
    match (parts.next(), parts.next()) {
        (Some(hash), Some(version)) if !version.is_empty() => {
            let short: String = hash.chars().take(12).collect();
            format!("{version} ({short})")
        }
        _ => tail.lines().next().unwrap_or("?").to_owned(),
    }
}

/// A criterion estimate in ns: the slope when criterion fitted one, else the mean, with the
/// 95 % confidence bounds.
pub fn criterion_estimate(json: &str) -> Option<(f64, f64, f64)> {
    let v: Value = serde_json::from_str(json).ok()?;
    let e = ["slope", "mean"]
        .iter()
        .find_map(|k| v.get(*k).filter(|x| !x.is_null()))?;
    let point = e.get("point_estimate")?.as_f64()?;
    let ci = e.get("confidence_interval")?;
    Some((
        point,
        ci.get("lower_bound")?.as_f64()?,
        ci.get("upper_bound")?.as_f64()?,
    ))
}

// ---------------------------------------------------------------------------------------------
// Results

/// One measured run of one variant.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Requests the measured Envoy completed in the window.
    pub requests: u64,
    pub window_s: f64,
    /// Envoy CPU time in the window, µs.
    pub cpu_us: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Non-2xx and failed requests the load generator saw over its whole run.
    pub errors: u64,
}

impl Sample {
    pub fn rps(&self) -> f64 {
        if self.window_s > 0.0 {
            self.requests as f64 / self.window_s
        } else {
            0.0
        }
    }

    pub fn cpu_per_request(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.cpu_us / self.requests as f64)
    }

    /// Share of one core the measured Envoy used in the window: near 1 when Envoy, not the load
    /// core, limits the throughput.
    pub fn utilisation(&self) -> f64 {
        if self.window_s > 0.0 {
            self.cpu_us / 1e6 / self.window_s
        } else {
            0.0
        }
    }
}

/// One configuration in one round.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Run {
    pub startup_ms: f64,
    pub rss_kib: u64,
    pub samples: BTreeMap<Variant, Result<Sample, String>>,
}

/// Everything measured: `rounds[r][kind]`.
#[derive(Clone, Debug, Default)]
pub struct Results {
    pub kinds: Vec<Kind>,
    pub rounds: Vec<BTreeMap<Kind, Result<Run, String>>>,
}

/// Median of values (mean of the two middle ones for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v.get(mid).copied()
    } else {
        Some((v.get(mid - 1)? + v.get(mid)?) / 2.0)
    }
}

/// Half the range, as a fraction of the median: `±x`.
pub fn spread(values: &[f64]) -> Option<f64> {
    let m = median(values)?;
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (m != 0.0 && values.len() > 1).then(|| (hi - lo) / 2.0 / m.abs())
}

impl Results {
    fn run(&self, round: usize, kind: Kind) -> Option<&Run> {
        self.rounds.get(round)?.get(&kind)?.as_ref().ok()
    }

    fn sample(&self, round: usize, kind: Kind, v: Variant) -> Option<&Sample> {
        self.run(round, kind)?.samples.get(&v)?.as_ref().ok()
    }

    /// Per-round values of `f` where it is defined.
    fn per_round(&self, f: impl Fn(usize) -> Option<f64>) -> Vec<f64> {
        (0..self.rounds.len()).filter_map(f).collect()
    }

    pub fn rps(&self, kind: Kind, v: Variant) -> Vec<f64> {
        self.per_round(|r| Some(self.sample(r, kind, v)?.rps()))
    }

    pub fn cpu(&self, kind: Kind, v: Variant) -> Vec<f64> {
        self.per_round(|r| self.sample(r, kind, v)?.cpu_per_request())
    }

    pub fn utilisation(&self, kind: Kind, v: Variant) -> Vec<f64> {
        self.per_round(|r| Some(self.sample(r, kind, v)?.utilisation()))
    }

    pub fn p50(&self, kind: Kind, v: Variant) -> Vec<f64> {
        self.per_round(|r| Some(self.sample(r, kind, v)?.p50_ms))
    }

    pub fn p99(&self, kind: Kind, v: Variant) -> Vec<f64> {
        self.per_round(|r| Some(self.sample(r, kind, v)?.p99_ms))
    }

    pub fn errors(&self, kind: Kind, v: Variant) -> u64 {
        (0..self.rounds.len())
            .filter_map(|r| self.sample(r, kind, v).map(|s| s.errors))
            .sum()
    }

    /// CPU µs per request above bare Envoy, per round.
    pub fn overhead(&self, kind: Kind, v: Variant) -> Vec<f64> {
        self.per_round(|r| {
            Some(
                self.sample(r, kind, v)?.cpu_per_request()?
                    - self.sample(r, Kind::Bare, v)?.cpu_per_request()?,
            )
        })
    }

    /// Overhead ÷ the calibration filter's overhead, per round.
    pub fn vs_calibration(&self, kind: Kind, v: Variant) -> Vec<f64> {
        self.per_round(|r| {
            let bare = self.sample(r, Kind::Bare, v)?.cpu_per_request()?;
            let cal = self.sample(r, Kind::Calibration, v)?.cpu_per_request()? - bare;
            let own = self.sample(r, kind, v)?.cpu_per_request()? - bare;
            (cal > 0.0).then(|| own / cal)
        })
    }

    /// CPU per request ÷ bare Envoy's, per round.
    pub fn cpu_vs_bare(&self, kind: Kind, v: Variant) -> Vec<f64> {
        self.per_round(|r| {
            let bare = self.sample(r, Kind::Bare, v)?.cpu_per_request()?;
            Some(self.sample(r, kind, v)?.cpu_per_request()? / bare)
        })
    }

    /// Requests/s ÷ bare Envoy's, per round.
    pub fn rps_vs_bare(&self, kind: Kind, v: Variant) -> Vec<f64> {
        self.per_round(|r| {
            let bare = self.sample(r, Kind::Bare, v)?.rps();
            (bare > 0.0).then_some(self.sample(r, kind, v)?.rps() / bare)
        })
    }

    pub fn startup_ms(&self, kind: Kind) -> Vec<f64> {
        self.per_round(|r| Some(self.run(r, kind)?.startup_ms))
    }

    pub fn rss_mib(&self, kind: Kind) -> Vec<f64> {
        self.per_round(|r| Some(self.run(r, kind)?.rss_kib as f64 / 1024.0))
    }

    /// Start-up above bare Envoy, per round, ms.
    pub fn startup_vs_bare(&self, kind: Kind) -> Vec<f64> {
        self.per_round(|r| {
            Some(self.run(r, kind)?.startup_ms - self.run(r, Kind::Bare)?.startup_ms)
        })
    }

    /// RSS above bare Envoy, per round, MiB.
    pub fn rss_vs_bare(&self, kind: Kind) -> Vec<f64> {
        self.per_round(|r| {
            let own = self.run(r, kind)?.rss_kib as f64;
            let bare = self.run(r, Kind::Bare)?.rss_kib as f64;
            Some((own - bare) / 1024.0)
        })
    }

    /// The errors of a configuration (failed starts, failed checks, failed runs), deduplicated.
    pub fn failures(&self, kind: Kind) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for round in &self.rounds {
            let messages: Vec<String> = match round.get(&kind) {
                Some(Err(e)) => vec![e.clone()],
                Some(Ok(run)) => run
                    .samples
                    .iter()
                    .filter_map(|(v, s)| s.as_ref().err().map(|e| format!("{}: {e}", v.label())))
                    .collect(),
                None => vec![],
            };
            for m in messages {
                if !out.contains(&m) {
                    out.push(m);
                }
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Targets

/// A target of the issue, checked against the numbers.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    pub target: String,
    /// `None` when it could not be evaluated (a configuration missing or failed).
    pub pass: Option<bool>,
    pub measured: String,
}

impl Check {
    pub fn word(&self) -> &'static str {
        match self.pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "NOT RUN",
        }
    }
}

/// Module sizes in bytes, by module name.
pub type Sizes = BTreeMap<String, u64>;

/// Criterion results: `(benchmark id, ns per operation)`.
pub type Micro = Vec<(String, f64)>;

fn fmt_ratio(x: f64) -> String {
    format!("{x:.2}×")
}

fn per_variant(
    variants: &[Variant],
    value: impl Fn(Variant) -> Option<f64>,
    limit: impl Fn(f64) -> bool,
    show: impl Fn(f64) -> String,
) -> (Option<bool>, String) {
    let mut parts = Vec::new();
    let mut all = Some(true);
    for &v in variants {
        match value(v) {
            Some(x) => {
                parts.push(format!("{} {}", v.short(), show(x)));
                if !limit(x) {
                    all = all.map(|_| false);
                }
            }
            None => {
                parts.push(format!("{} n/a", v.short()));
                all = None;
            }
        }
    }
    (all, parts.join(", "))
}

/// The issue's targets, computed from the results.
pub fn checks(results: &Results, sizes: &Sizes, micro: &Micro) -> Vec<Check> {
    let mut out = Vec::new();
    let have = |k: Kind| results.kinds.contains(&k);
    let suite = have(Kind::Suite);
    let not_run = |target: &str, why: &str| Check {
        target: target.to_owned(),
        pass: None,
        measured: why.to_owned(),
    };
    let no_suite = if sizes.contains_key(SUITE_MODULE) {
        "the suite was not measured (BENCH_ONLY)"
    } else {
        "mesh_filters.wasm was not built: the suite was not measured"
    };

    let t = "suite overhead ≤ 1.3× calibration overhead (CPU µs/request above bare)";
    if suite {
        let (pass, measured) = per_variant(
            &Variant::ALL,
            |v| median(&results.vs_calibration(Kind::Suite, v)),
            |x| x <= 1.3,
            fmt_ratio,
        );
        out.push(Check {
            target: t.to_owned(),
            pass,
            measured,
        });
    } else {
        out.push(not_run(t, no_suite));
    }

    let t = "proxied requests/s with the suite ≥ 0.85× bare Envoy";
    if suite {
        let proxied: Vec<Variant> = Variant::ALL
            .into_iter()
            .filter(|v| v.route == Route::Proxied)
            .collect();
        let (pass, measured) = per_variant(
            &proxied,
            |v| median(&results.rps_vs_bare(Kind::Suite, v)),
            |x| x >= 0.85,
            fmt_ratio,
        );
        out.push(Check {
            target: t.to_owned(),
            pass,
            measured,
        });
    } else {
        out.push(not_run(t, no_suite));
    }

    let t = "each filter alone ≤ 1.25× calibration overhead";
    // Per filter, its highest ratio over the variants.
    let mut per_filter: Vec<(Kind, f64, Variant)> = Vec::new();
    let mut complete = true;
    for kind in Kind::ALL.into_iter().filter(|k| k.stage().is_some()) {
        if !have(kind) {
            complete = false;
            continue;
        }
        let mut highest: Option<(f64, Variant)> = None;
        for v in Variant::ALL {
            match median(&results.vs_calibration(kind, v)) {
                Some(x) => {
                    if highest.map_or(true, |(h, _)| x > h) {
                        highest = Some((x, v));
                    }
                }
                None => complete = false,
            }
        }
        if let Some((x, v)) = highest {
            per_filter.push((kind, x, v));
        }
    }
    let shown: Vec<String> = per_filter
        .iter()
        .map(|(k, x, v)| format!("{} {} ({})", k.label(), fmt_ratio(*x), v.short()))
        .collect();
    let over = per_filter.iter().any(|(_, x, _)| *x > 1.25);
    out.push(if per_filter.is_empty() {
        not_run(t, "no single filter was measured")
    } else {
        Check {
            target: t.to_owned(),
            pass: if over {
                Some(false)
            } else {
                complete.then_some(true)
            },
            measured: format!("highest per filter: {}", shown.join(", ")),
        }
    });

    let t = "mesh_filters.wasm ≤ 250 KB (256,000 bytes)";
    out.push(match sizes.get(SUITE_MODULE) {
        Some(&bytes) => Check {
            target: t.to_owned(),
            pass: Some(bytes <= SUITE_MAX_BYTES),
            measured: format!("{bytes} bytes ({:.0} KB)", bytes as f64 / 1024.0),
        },
        None => not_run(t, "mesh_filters.wasm was not built"),
    });

    let t = "Envoy RSS with the suite ≤ bare + 25 MiB";
    out.push(match median(&results.rss_vs_bare(Kind::Suite)) {
        Some(d) => Check {
            target: t.to_owned(),
            pass: Some(d <= 25.0),
            measured: format!("bare {d:+.1} MiB"),
        },
        None => not_run(t, if suite { "not measured" } else { no_suite }),
    });

    let t = "start-up with the suite ≤ bare + 250 ms";
    out.push(match median(&results.startup_vs_bare(Kind::Suite)) {
        Some(d) => Check {
            target: t.to_owned(),
            pass: Some(d <= 250.0),
            measured: format!("bare {d:+.0} ms"),
        },
        None => not_run(t, if suite { "not measured" } else { no_suite }),
    });

    let t = "policy hot paths < 1 µs each, natively (criterion)";
    if micro.is_empty() {
        out.push(not_run(
            t,
            "no criterion results: run `cargo bench -p mesh-bench-micro`",
        ));
    } else {
        let slow: Vec<String> = micro
            .iter()
            .filter(|(_, ns)| *ns >= 1000.0)
            .map(|(id, ns)| format!("{id} {ns:.0} ns"))
            .collect();
        let max = micro
            .iter()
            .map(|(_, ns)| *ns)
            .fold(f64::NEG_INFINITY, f64::max);
        out.push(Check {
            target: t.to_owned(),
            pass: Some(slow.is_empty() && micro.len() == MICRO_BENCHMARKS.len()),
            measured: if slow.is_empty() {
                format!("slowest {max:.0} ns")
            } else {
                format!("over 1 µs: {}", slow.join(", "))
            },
        });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Report

/// What the report says about the machine and the run.
#[derive(Clone, Debug, Default)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: String,
    pub kernel: String,
    pub envoy: String,
    pub wrk: String,
    pub h2load: String,
    pub date: String,
    pub pinned: bool,
}

fn fmt_opt(x: Option<f64>, digits: usize) -> String {
    match x {
        Some(x) => format!("{x:.digits$}"),
        None => "–".to_owned(),
    }
}

fn fmt_spread(values: &[f64]) -> String {
    match spread(values) {
        Some(s) => format!(" ±{:.0}%", s * 100.0),
        None => String::new(),
    }
}

fn fmt_thousands(x: f64) -> String {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let n = x.round().max(0.0) as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The module size column: one module's size, or the sum of several.
fn module_size(kind: Kind, sizes: &Sizes) -> String {
    let modules = kind.modules();
    if modules.is_empty() {
        return "native".to_owned();
    }
    let total: Option<u64> = modules.iter().map(|m| sizes.get(m).copied()).sum();
    match total {
        Some(b) if modules.len() == 1 => format!("{:.0} KB", b as f64 / 1024.0),
        Some(b) => format!("{:.0} KB ({} modules)", b as f64 / 1024.0, modules.len()),
        None => "?".to_owned(),
    }
}

/// BENCHMARKS.md.
#[allow(clippy::too_many_arguments)]
pub fn render_markdown(
    params: &Params,
    machine: &Machine,
    results: &Results,
    sizes: &Sizes,
    micro: &Micro,
    notes: &[String],
    command: &str,
    profile: &str,
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Written by `make bench` (the `bench` program of `integration/`), {}. Envoy CPU time per \
         request, throughput and latency of every mesh filter, the suite and Envoy's native \
         analogues, against bare Envoy and a calibration filter (`bench/calibration`: reads one \
         request header, adds one request and one response header). **Quote ratios, not absolute \
         times**: ratios are taken within each round, so they hold on a shared, noisy machine.\n",
        machine.date
    );
    let _ = writeln!(md, "Reproduce:\n\n```sh\n{command}\n```\n");

    let _ = writeln!(md, "## Machine\n");
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(md, "| CPU | {} |", machine.cpu_model);
    let _ = writeln!(md, "| cores | {} |", machine.cores);
    let _ = writeln!(md, "| kernel | {} |", machine.kernel);
    let _ = writeln!(md, "| Envoy | {} |", machine.envoy);
    let _ = writeln!(
        md,
        "| load generators | {}; {} |",
        machine.wrk, machine.h2load
    );
    let _ = writeln!(
        md,
        "| pinning | {} |",
        if machine.pinned {
            "measured Envoy `--concurrency 1` on core 0 (`taskset -c 0`); wrk, h2load, the client Envoy and the upstream on core 1"
        } else {
            "none (fewer than 2 cores or no `taskset`): numbers are not comparable with pinned runs"
        }
    );
    let _ = writeln!(
        md,
        "| runs | {} round(s) over all configurations (A B C … A B C …); per variant {:.1} s warm-up, {:.1} s measured; wrk `-t1 -c{}`, h2load `-c{} -m{}` |\n",
        params.rounds, params.warmup, params.seconds, params.h1_connections, params.h2_connections, params.h2_streams
    );

    let _ = writeln!(md, "## Targets\n");
    let _ = writeln!(
        md,
        "Computed from the numbers below. h1 / h2 / grpc: HTTP/1.1 (wrk) / HTTP/2 (h2load) / unary \
         gRPC over HTTP/2 (h2load); direct: the `direct_response` route; proxied: the route to \
         the upstream. Ratios are medians over \
         rounds of the ratio within each round.\n"
    );
    for c in checks(results, sizes, micro) {
        let _ = writeln!(md, "- **{}** {}: {}", c.word(), c.target, c.measured);
    }
    let _ = writeln!(md);
    if !notes.is_empty() {
        for n in notes {
            let _ = writeln!(md, "> {n}\n");
        }
    }

    let _ = writeln!(md, "## CPU overhead per request\n");
    let _ = writeln!(
        md,
        "![Envoy CPU µs per request above bare Envoy, by configuration](bench/chart.svg)\n"
    );

    let _ = writeln!(
        md,
        "## Per request\n\nMedians over rounds; `±` is half the range over rounds. **CPU µs/req**: \
         user + system time of the measured Envoy process ÷ requests it completed in the \
         window. **Envoy CPU %**: that CPU time ÷ the window; below 100 % the load core, which \
         also runs the client Envoy and the upstream, limits the throughput, so requests/s \
         ratios understate what the measured Envoy could do and CPU µs/req is the number to \
         compare. **overhead**: CPU µs/req − bare Envoy's, in the same round. **× calibration**: \
         overhead ÷ the calibration filter's overhead, in the same round.\n"
    );
    for v in Variant::ALL {
        let _ = writeln!(md, "### {}\n", v.label());
        let _ = writeln!(
            md,
            "| configuration | requests/s | × bare rps | p50 ms | p99 ms | Envoy CPU % | CPU µs/req | × bare CPU | overhead µs/req | × calibration |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for &kind in &results.kinds {
            let rps = results.rps(kind, v);
            let cpu = results.cpu(kind, v);
            if rps.is_empty() {
                let _ = writeln!(md, "| {} | failed | | | | | | | | |", kind.label());
                continue;
            }
            let errors = results.errors(kind, v);
            let flag = if errors > 0 {
                format!(" ({errors} errors)")
            } else {
                String::new()
            };
            let is_bare = kind == Kind::Bare;
            let _ = writeln!(
                md,
                "| {}{} | {}{} | {} | {} | {} | {} | {}{} | {} | {} | {} |",
                kind.label(),
                flag,
                median(&rps).map(fmt_thousands).unwrap_or_default(),
                fmt_spread(&rps),
                if is_bare {
                    "1".to_owned()
                } else {
                    fmt_opt(median(&results.rps_vs_bare(kind, v)), 2)
                },
                fmt_opt(median(&results.p50(kind, v)), 2),
                fmt_opt(median(&results.p99(kind, v)), 2),
                fmt_opt(median(&results.utilisation(kind, v)).map(|u| u * 100.0), 0),
                fmt_opt(median(&cpu), 1),
                fmt_spread(&cpu),
                if is_bare {
                    "1".to_owned()
                } else {
                    fmt_opt(median(&results.cpu_vs_bare(kind, v)), 2)
                },
                if is_bare {
                    "0".to_owned()
                } else {
                    fmt_opt(median(&results.overhead(kind, v)), 1)
                },
                if is_bare {
                    "–".to_owned()
                } else {
                    fmt_opt(median(&results.vs_calibration(kind, v)), 2)
                },
            );
        }
        let _ = writeln!(md);
    }

    if results.kinds.contains(&Kind::FiveFilters) || results.kinds.contains(&Kind::Suite) {
        let _ = writeln!(md, "## Where the time goes\n");
        let _ = writeln!(
            md,
            "Median overheads (CPU µs/request above bare Envoy). What five filters cost apart \
             (the sum of each alone), chained (five VMs, five HTTP filters) and as the suite (one \
             filter, one VM, five stages); the gap between the calibration filter and a filter \
             alone is the filter's own work (host calls, shared data, metrics, parsing).\n"
        );
        let _ = writeln!(
            md,
            "| variant | calibration | each filter alone (sum of five) | five filters (chain) | suite | suite ÷ chain |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
        for v in Variant::ALL {
            let over = |k: Kind| median(&results.overhead(k, v));
            let sum: Option<f64> = Kind::ALL
                .iter()
                .filter(|k| k.stage().is_some())
                .map(|&k| over(k))
                .sum();
            let chain = over(Kind::FiveFilters);
            let suite = over(Kind::Suite);
            let ratio = match (suite, chain) {
                (Some(s), Some(c)) if c > 0.0 => Some(s / c),
                _ => None,
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                v.label(),
                fmt_opt(over(Kind::Calibration), 1),
                fmt_opt(sum, 1),
                fmt_opt(chain, 1),
                fmt_opt(suite, 1),
                fmt_opt(ratio, 2),
            );
        }
        let _ = writeln!(md);
    }

    let _ = writeln!(
        md,
        "{}\n{}\n{}\n",
        crate::profile::SECTION_START,
        profile.trim_end(),
        crate::profile::SECTION_END
    );

    let _ = writeln!(md, "## Memory, start-up, module size\n");
    let _ = writeln!(
        md,
        "RSS: `VmRSS` of the measured Envoy after its runs. Start-up: spawn → `/ready` LIVE \
         (20 ms polling). Module: the `.wasm` files loaded.\n"
    );
    let _ = writeln!(
        md,
        "| configuration | module | RSS MiB | RSS − bare MiB | start-up ms | start-up − bare ms |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
    for &kind in &results.kinds {
        let rss = results.rss_mib(kind);
        let startup = results.startup_ms(kind);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {}{} | {} |",
            kind.label(),
            module_size(kind, sizes),
            fmt_opt(median(&rss), 1),
            fmt_opt(median(&results.rss_vs_bare(kind)), 1),
            fmt_opt(median(&startup), 0),
            fmt_spread(&startup),
            fmt_opt(median(&results.startup_vs_bare(kind)), 0),
        );
    }
    let _ = writeln!(md);

    let _ = writeln!(md, "## Policy hot paths (criterion, native)\n");
    if micro.is_empty() {
        let _ = writeln!(
            md,
            "No criterion results found (`target/criterion/*/new/estimates.json`): run \
             `cargo bench -p mesh-bench-micro` (`make bench` does).\n"
        );
    } else {
        let _ = writeln!(
            md,
            "`bench/micro`: one iteration as described; ns per operation is criterion's slope \
             estimate.\n"
        );
        let _ = writeln!(md, "| benchmark | what | ns/op |");
        let _ = writeln!(md, "|---|---|---:|");
        for (id, ns) in micro {
            let what = MICRO_BENCHMARKS
                .iter()
                .find(|(i, _)| i == id)
                .map(|(_, w)| *w)
                .unwrap_or("");
            let _ = writeln!(md, "| `{id}` | {what} | {ns:.1} |");
        }
        let _ = writeln!(md);
    }

    let _ = writeln!(md, "## Configurations\n");
    let _ = writeln!(
        md,
        "Every configuration runs on the same listener family: the measured Envoy's mTLS \
         listener (client certificate required, `forward_client_cert_details: SANITIZE_SET`, \
         `set_current_client_cert_details: {{uri: true}}`), reached through a client Envoy on the \
         load core that originates mTLS with the SVID `{CLIENT_ID}` and keeps the downstream \
         protocol. `/direct` is a `direct_response` route; `/proxied` goes to a minimal HTTP/1.1 + \
         h2c server on the load core that answers `ok` (route timeout off, except for the native \
         route timeout). Every request carries `traceparent` and `{CALIBRATION_HEADER}`, and \
         `x-envoy-expected-rq-timeout-ms: 30000` from the client Envoy. Before its runs each \
         configuration is checked to do its work (the upstream sees `x-spiffe-id`, a new span id \
         with `b3`, the deadline's timeout, the calibration header; the breaker's and the \
         budget's metrics move; RBAC allows).\n"
    );
    let _ = writeln!(md, "| configuration | filters and configuration |");
    let _ = writeln!(md, "|---|---|");
    for &kind in &results.kinds {
        let what = match kind {
            Kind::Bare => "no HTTP filter but the router".to_owned(),
            Kind::Calibration => format!(
                "`{CALIBRATION_MODULE}.wasm`, root_id `{CALIBRATION_ROOT_ID}`"
            ),
            Kind::FiveFilters => {
                "the five modules as five HTTP filters (five VMs), in the suite's order, each with the configuration above".to_owned()
            }
            Kind::Suite => format!("`{SUITE_MODULE}.wasm`, root_id `mesh`: `{}`", suite_config()),
            Kind::NativeRbac => format!(
                "`envoy.filters.http.rbac`: ALLOW, one policy, principal `authenticated.principal_name.exact: {CLIENT_ID}` (vs spiffe-identity)"
            ),
            Kind::NativeRouteTimeout => {
                "route `timeout: 15s` on `/proxied` (vs deadline; on `/direct` nothing to do)".to_owned()
            }
            k => match k.stage() {
                Some(s) => format!("`{}.wasm`, root_id `{}`: `{}`", s.module(), s.root_id(), s.config()),
                None => String::new(),
            },
        };
        let _ = writeln!(md, "| {} | {} |", kind.label(), what);
    }
    let _ = writeln!(md);

    let failures: Vec<(Kind, Vec<String>)> = results
        .kinds
        .iter()
        .map(|&k| (k, results.failures(k)))
        .filter(|(_, f)| !f.is_empty())
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(md, "## Failures\n");
        for (k, fs) in failures {
            for f in fs {
                let _ = writeln!(md, "- {}: {}", k.label(), f.replace('\n', " "));
            }
        }
        let _ = writeln!(md);
    }
    md
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `bench/chart.svg`: horizontal bars of the median CPU overhead (µs/request above bare Envoy)
/// of every configuration but bare, one bar per variant.
pub fn render_svg(results: &Results) -> String {
    const COLORS: [&str; 4] = ["#4e79a7", "#a0cbe8", "#f28e2b", "#ffbe7d"];
    let kinds: Vec<Kind> = results
        .kinds
        .iter()
        .copied()
        .filter(|k| *k != Kind::Bare)
        .collect();
    let values: Vec<Vec<Option<f64>>> = kinds
        .iter()
        .map(|&k| {
            Variant::ALL
                .iter()
                .map(|&v| median(&results.overhead(k, v)))
                .collect()
        })
        .collect();
    let all = values.iter().flatten().flatten().copied();
    let max = all.clone().fold(1.0_f64, f64::max);
    let min = all.fold(0.0_f64, f64::min);
    let (label_w, plot_w, bar_h, gap, top): (f64, f64, f64, f64, f64) =
        (210.0, 560.0, 9.0, 10.0, 50.0);
    let group_h = bar_h * 4.0 + gap;
    let height = top + group_h * kinds.len() as f64 + 40.0;
    let width = (label_w + 35.0 + plot_w + 70.0).max(780.0);
    let span = max - min;
    // A margin left of the plot for the labels of negative bars.
    let x = |val: f64| label_w + 35.0 + (val - min) / span * plot_w;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        s,
        r##"<rect width="100%" height="100%" fill="#ffffff"/><text x="10" y="18" font-size="13" font-weight="bold">Envoy CPU µs per request above bare Envoy (median over rounds)</text>"##
    );
    for (i, v) in Variant::ALL.iter().enumerate() {
        let lx = 10.0 + i as f64 * 185.0;
        let color = COLORS.get(i).copied().unwrap_or("#888888");
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="28" width="10" height="10" fill="{color}"/><text x="{:.0}" y="37">{}</text>"#,
            lx + 14.0,
            v.label()
        );
    }
    let zero = x(0.0);
    for (row, (kind, vals)) in kinds.iter().zip(&values).enumerate() {
        let y0 = top + row as f64 * group_h;
        let _ = writeln!(
            s,
            r#"<text x="{:.0}" y="{:.1}" text-anchor="end">{}</text>"#,
            label_w - 8.0,
            y0 + bar_h * 2.0 + 4.0,
            xml_escape(kind.label())
        );
        for (i, val) in vals.iter().enumerate() {
            let y = y0 + i as f64 * bar_h;
            let color = COLORS.get(i).copied().unwrap_or("#888888");
            match val {
                Some(val) => {
                    let (a, b) = (zero.min(x(*val)), zero.max(x(*val)));
                    // The value beside the bar's end: right of a positive bar, left of a negative one.
                    let (lx, anchor) = if *val < 0.0 {
                        (a - 3.0, "end")
                    } else {
                        (b + 3.0, "start")
                    };
                    let _ = writeln!(
                        s,
                        r#"<rect x="{a:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{color}"/><text x="{lx:.1}" y="{:.1}" font-size="9" text-anchor="{anchor}">{val:.1}</text>"#,
                        (b - a).max(0.5),
                        bar_h - 1.0,
                        y + bar_h - 2.0
                    );
                }
                None => {
                    let _ = writeln!(
                        s,
                        r#"<text x="{:.1}" y="{:.1}" font-size="9">n/a</text>"#,
                        zero + 3.0,
                        y + bar_h - 2.0
                    );
                }
            }
        }
    }
    let bottom = top + group_h * kinds.len() as f64;
    let _ = writeln!(
        s,
        r##"<line x1="{zero:.1}" y1="{top}" x2="{zero:.1}" y2="{bottom:.1}" stroke="#333333"/>"##
    );
    // Ticks.
    let step = nice_step(span / 6.0);
    let mut t = (min / step).ceil() * step;
    while t <= max + 1e-9 {
        let tx = x(t);
        // Never "-0".
        let t_shown = if t.abs() < step / 2.0 { 0.0 } else { t };
        let _ = writeln!(
            s,
            r##"<line x1="{tx:.1}" y1="{bottom:.1}" x2="{tx:.1}" y2="{:.1}" stroke="#333333"/><text x="{tx:.1}" y="{:.1}" text-anchor="middle">{t_shown:.0}</text>"##,
            bottom + 4.0,
            bottom + 16.0
        );
        t += step;
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.0}" y="{:.0}" text-anchor="middle">µs per request</text>"#,
        label_w + 35.0 + plot_w / 2.0,
        bottom + 32.0
    );
    s.push_str("</svg>\n");
    s
}

fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

// ---------------------------------------------------------------------------------------------
// The upstream and a small client

/// The body h2load sends on gRPC runs: one length-prefixed frame holding an empty message.
pub const GRPC_EMPTY_MESSAGE: [u8; 5] = [0, 0, 0, 0, 0];

/// The upstream: answers `ok` to everything, HTTP/1.1 and h2c on one port; a path ending in
/// `/echo` answers with the request headers it received, one `name: value` per line; a gRPC
/// request (`content-type: application/grpc*`) gets an empty message and `grpc-status: 0` in
/// trailers.
pub async fn serve_upstream(listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|req: Request<Incoming>| async move {
                let grpc = req
                    .headers()
                    .get("content-type")
                    .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
                if grpc {
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                    let body = Full::new(Bytes::from_static(&GRPC_EMPTY_MESSAGE))
                        .with_trailers(std::future::ready(Some(Ok(trailers))))
                        .boxed();
                    let mut response = Response::new(body);
                    response.headers_mut().insert(
                        "content-type",
                        http::HeaderValue::from_static("application/grpc"),
                    );
                    return Ok::<_, Infallible>(response);
                }
                let body = if req.uri().path().ends_with("/echo") {
                    let mut text = String::new();
                    for (name, value) in req.headers() {
                        let _ = writeln!(
                            text,
                            "{}: {}",
                            name.as_str(),
                            String::from_utf8_lossy(value.as_bytes())
                        );
                    }
                    Bytes::from(text)
                } else {
                    Bytes::from_static(b"ok\n")
                };
                Ok::<_, Infallible>(Response::new(Full::new(body).boxed()))
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A response to [`get`]: status, headers (lowercase names), body.
#[derive(Clone, Debug, Default)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `name: value` lines (the echo body) as pairs.
pub fn header_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            Some((n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        })
        .collect()
}

/// A blocking HTTP/1.1 GET with these headers and `Connection: close`.
pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<Reply, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n");
    for (n, v) in headers {
        let _ = write!(req, "{n}: {v}\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = header_lines(&lines.collect::<Vec<_>>().join("\n"));
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        crate::envoy::dechunk(body)
    } else {
        body.to_owned()
    };
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// What the upstream and the caller saw, for the functional check of a configuration.
pub struct Observed {
    /// The request headers the upstream received on `/proxied/echo`.
    pub upstream: Vec<(String, String)>,
    /// The response to `/direct`.
    pub direct: Reply,
    /// `/stats/prometheus` of the measured Envoy after those requests.
    pub prometheus: String,
    /// `/stats` of the measured Envoy after those requests.
    pub stats: String,
}

impl Observed {
    fn upstream_header(&self, name: &str) -> Option<&str> {
        self.upstream
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Checks that each filter of a configuration visibly did its work; the error says what is
/// missing.
pub fn verify(kind: Kind, seen: &Observed) -> Result<(), String> {
    let mut missing = Vec::new();
    if kind == Kind::Calibration {
        if seen.upstream_header("x-calibration-seen") != Some("1") {
            missing.push("the upstream did not see x-calibration-seen: 1".to_owned());
        }
        if seen.direct.header("x-calibration") != Some("1") {
            missing.push("the direct response has no x-calibration: 1".to_owned());
        }
    }
    if kind == Kind::NativeRbac
        && admin_stat(&seen.stats, "http.bench.rbac.allowed").unwrap_or(0) == 0
    {
        missing.push("http.bench.rbac.allowed did not count".to_owned());
    }
    if kind == Kind::NativeRouteTimeout {
        let t = seen
            .upstream_header("x-envoy-expected-rq-timeout-ms")
            .and_then(|v| v.parse::<u64>().ok());
        if t != Some(15000) {
            missing.push(format!(
                "the upstream saw x-envoy-expected-rq-timeout-ms {t:?}, not the route's 15000"
            ));
        }
    }
    for stage in kind.stages() {
        match stage {
            Stage::SpiffeIdentity => {
                if seen.upstream_header("x-spiffe-id") != Some(CLIENT_ID) {
                    missing.push(format!("the upstream did not see x-spiffe-id: {CLIENT_ID}"));
                }
            }
            Stage::Deadline => {
                let t = seen
                    .upstream_header("x-envoy-expected-rq-timeout-ms")
                    .and_then(|v| v.parse::<u64>().ok());
                if !t.is_some_and(|t| (14000..=15000).contains(&t)) {
                    missing.push(format!(
                        "the upstream saw x-envoy-expected-rq-timeout-ms {t:?}, not the deadline's 15 s budget"
                    ));
                }
            }
            Stage::TracePropagation => {
                let tp = seen.upstream_header("traceparent").unwrap_or("");
                let trace = TRACEPARENT.get(3..35).unwrap_or("");
                if !tp.contains(trace) || tp == TRACEPARENT {
                    missing.push(format!(
                        "the upstream saw traceparent {tp:?}, not the same trace with a new span"
                    ));
                }
                if !seen
                    .upstream_header("b3")
                    .is_some_and(|b| b.starts_with(trace))
                {
                    missing.push("the upstream saw no b3 header of the trace".to_owned());
                }
            }
            Stage::CircuitBreaker => {
                if crate::envoy::prometheus_value(
                    &seen.prometheus,
                    "mesh_circuit_breaker_state",
                    &[("route", "proxied")],
                )
                .is_none()
                {
                    missing.push("no mesh_circuit_breaker_state{route=\"proxied\"}".to_owned());
                }
            }
            Stage::RetryBudget => {
                if crate::envoy::prometheus_value(
                    &seen.prometheus,
                    "mesh_retry_budget_rq_total",
                    &[("route", "proxied")],
                )
                .unwrap_or(0.0)
                    < 1.0
                {
                    missing.push(
                        "mesh_retry_budget_rq_total{route=\"proxied\"} did not count".to_owned(),
                    );
                }
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("check failed: {}", missing.join("; ")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    const WRK: &str = "Running 3s test @ http://127.0.0.1:1234/direct
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.52ms  312.45us   9.87ms   91.23%
    Req/Sec    10.51k   402.11    11.02k    80.00%
  Latency Distribution
     50%    1.47ms
     75%    1.60ms
     90%    1.78ms
     99%    2.51ms
  31402 requests in 3.00s, 3.41MB read
  Non-2xx or 3xx responses: 2
  Socket errors: connect 0, read 1, write 0, timeout 3
Requests/sec:  10467.12
Transfer/sec:      1.14MB
";

    #[test]
    fn wrk_output_is_read() {
        let r = parse_wrk(WRK).unwrap();
        assert_eq!(r.requests, 31402);
        assert!((r.p50_ms - 1.47).abs() < 1e-9);
        assert!((r.p99_ms - 2.51).abs() < 1e-9);
        assert_eq!(r.errors, 6);
        assert_eq!(parse_wrk_latency("812.00us"), Some(0.812));
        assert_eq!(parse_wrk_latency("2.00s"), Some(2000.0));
        assert!(parse_wrk("garbage").is_err());
    }

    #[test]
    fn h2load_output_and_log_are_read() {
        let text = "finished in 2.50s, 12000.00 req/s, 1.00MB/s
requests: 30000 total, 30000 started, 30000 done, 29990 succeeded, 10 failed, 0 errored, 0 timeout
status codes: 29990 2xx, 0 3xx, 0 4xx, 10 5xx
";
        let log: String = (1..=100)
            .map(|i| format!("1700000000000000\t200\t{}\n", i * 10))
            .collect();
        let r = parse_h2load(text, &log).unwrap();
        assert_eq!(r.requests, 29990);
        assert_eq!(r.errors, 20);
        assert!((r.p50_ms - 0.5).abs() < 1e-9);
        assert!((r.p99_ms - 0.99).abs() < 1e-9);
        assert!(parse_h2load(text, "").is_err());
    }

    #[test]
    fn proc_files_are_read() {
        let stat = "4242 (envoy (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 150 25 0 0 20 0 9 0 100 1000000 5000 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(175));
        let status = "Name:\tenvoy\nVmPeak:\t  100 kB\nVmRSS:\t   51234 kB\nThreads: 9\n";
        assert_eq!(vm_rss_kib(status), Some(51234));
        assert_eq!(
            admin_stat(
                "http.bench.downstream_rq_completed: 77\nother: 1\n",
                "http.bench.downstream_rq_completed"
            ),
            Some(77)
        );
    }

    #[test]
    fn medians_spreads_and_percentiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert!((spread(&[9.0, 10.0, 11.0]).unwrap() - 0.1).abs() < 1e-9);
        assert_eq!(spread(&[5.0]), None);
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v, 1.0), Some(100.0));
    }

    #[test]
    fn the_suite_sections_are_the_standalone_configurations() {
        let suite = suite_config();
        let keys: Vec<&str> = suite
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), 5);
        for stage in Stage::ALL {
            assert_eq!(suite[stage.section()], stage.config());
        }
    }

    #[test]
    fn environment_overrides_and_refusals() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert_eq!(Params::from_env(env(&[])).unwrap(), Params::default());
        let p = Params::from_env(env(&[
            ("BENCH_SECONDS", "2"),
            ("BENCH_ROUNDS", "1"),
            ("BENCH_ONLY", "suite, deadline"),
        ]))
        .unwrap();
        assert_eq!(p.seconds, 2.0);
        assert_eq!(p.rounds, 1);
        assert_eq!(
            p.only,
            Some(vec!["suite".to_owned(), "deadline".to_owned()])
        );
        assert!(Params::from_env(env(&[("BENCH_SECONDS", "x")])).is_err());
        assert!(Params::from_env(env(&[("BENCH_ROUNDS", "0")])).is_err());
        assert!(Params::from_env(env(&[("BENCH_ONLY", "nope")])).is_err());
    }

    fn sample(cpu_per_req: f64, rps: f64) -> Sample {
        Sample {
            requests: 1000,
            window_s: 1000.0 / rps,
            cpu_us: cpu_per_req * 1000.0,
            p50_ms: 1.0,
            p99_ms: 2.0,
            errors: 0,
        }
    }

    fn results(rows: &[(Kind, f64, f64)]) -> Results {
        let mut round = BTreeMap::new();
        for &(kind, cpu, rps) in rows {
            let mut run = Run {
                startup_ms: 100.0,
                rss_kib: 40 * 1024,
                samples: BTreeMap::new(),
            };
            if kind == Kind::Suite {
                run.startup_ms = 500.0;
                run.rss_kib = 60 * 1024;
            }
            for v in Variant::ALL {
                run.samples.insert(v, Ok(sample(cpu, rps)));
            }
            round.insert(kind, Ok(run));
        }
        Results {
            kinds: rows.iter().map(|r| r.0).collect(),
            rounds: vec![round],
        }
    }

    #[test]
    fn targets_are_computed_from_the_numbers() {
        let r = results(&[
            (Kind::Bare, 50.0, 10000.0),
            (Kind::Calibration, 70.0, 8000.0),
            (Kind::Deadline, 74.0, 7900.0),
            (Kind::Suite, 80.0, 7000.0),
        ]);
        assert_eq!(
            median(&r.overhead(Kind::Suite, Variant::ALL[0])),
            Some(30.0)
        );
        assert_eq!(
            median(&r.vs_calibration(Kind::Suite, Variant::ALL[0])),
            Some(1.5)
        );
        let sizes: Sizes = [(SUITE_MODULE.to_owned(), 200_000)].into_iter().collect();
        let micro = vec![("grpc_timeout_parse".to_owned(), 12.0)];
        let c = checks(&r, &sizes, &micro);
        let word = |prefix: &str| {
            c.iter()
                .find(|c| c.target.starts_with(prefix))
                .unwrap()
                .word()
        };
        assert_eq!(word("suite overhead"), "MISS"); // 1.5× > 1.3×
        assert_eq!(word("proxied requests/s"), "MISS"); // 0.7× < 0.85×
        assert_eq!(word("each filter alone"), "NOT RUN"); // four filters were not measured
        assert_eq!(word("mesh_filters.wasm"), "PASS");
        assert_eq!(word("Envoy RSS"), "PASS"); // +20 MiB
        assert_eq!(word("start-up"), "MISS"); // +400 ms
        assert_eq!(word("policy hot paths"), "MISS"); // four benchmarks missing

        let no_suite = results(&[(Kind::Bare, 50.0, 1.0), (Kind::Calibration, 60.0, 1.0)]);
        let c = checks(&no_suite, &Sizes::new(), &Micro::new());
        assert!(c
            .iter()
            .filter(|c| c.target.contains("suite"))
            .all(|c| c.pass.is_none()));
    }

    #[test]
    fn reports_render() {
        let r = results(&[
            (Kind::Bare, 50.0, 10000.0),
            (Kind::Calibration, 70.0, 8000.0),
            (Kind::NativeRbac, 49.0, 10100.0),
        ]);
        let md = render_markdown(
            &Params::default(),
            &Machine::default(),
            &r,
            &Sizes::new(),
            &Micro::new(),
            &[],
            "make bench",
            "## Where each microsecond goes\n\nnot run\n",
        );
        assert!(md.contains("| calibration filter | 8,000 |"));
        assert!(md.contains("bench/chart.svg"));
        assert!(md.contains(&format!(
            "{}\n## Where each microsecond goes",
            crate::profile::SECTION_START
        )));
        let svg = render_svg(&r);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("native RBAC"));
        assert!(svg.contains(">-1.0<")); // the negative bar's label
    }

    #[test]
    fn the_functional_check_names_what_is_missing() {
        let seen = Observed {
            upstream: header_lines(&format!(
                "x-spiffe-id: {CLIENT_ID}\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01\nb3: 4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-1\nx-envoy-expected-rq-timeout-ms: 14999\n"
            )),
            direct: Reply::default(),
            prometheus: "mesh_circuit_breaker_state{route=\"proxied\"} 0\nmesh_retry_budget_rq_total{route=\"proxied\"} 1\n".to_owned(),
            stats: String::new(),
        };
        assert_eq!(verify(Kind::Suite, &seen), Ok(()));
        let err = verify(Kind::Calibration, &seen).unwrap_err();
        assert!(err.contains("x-calibration-seen"), "{err}");
        assert!(verify(Kind::NativeRbac, &seen).is_err());
    }

    #[test]
    fn criterion_estimates_and_envoy_versions_are_read() {
        let j = r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":10.0,"upper_bound":12.0},"point_estimate":11.0,"standard_error":0.1},"slope":{"confidence_interval":{"confidence_level":0.95,"lower_bound":9.0,"upper_bound":10.0},"point_estimate":9.5,"standard_error":0.1}}"#;
        assert_eq!(criterion_estimate(j), Some((9.5, 9.0, 10.0)));
        let j = r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":10.0,"upper_bound":12.0},"point_estimate":11.0,"standard_error":0.1},"slope":null}"#;
        assert_eq!(criterion_estimate(j), Some((11.0, 10.0, 12.0)));
        assert_eq!(
            envoy_version(
                "\nenvoy  version: 0123456789abcdef0123/1.40.0/Clean/RELEASE/BoringSSL\n"
            ),
            "1.40.0 (0123456789ab)"
        );
    }
}
