//! The per-request cost benchmark of `make bench` (the `bench` binary): what each filter and the
//! suite cost in Envoy CPU time per request, as wasm and as the native module
//! `libmesh_filters.so`, and what Envoy's native analogues cost, next to bare Envoy and a
//! calibration filter.
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
//!
//! # Modules
//!
//! Everything public is re-exported here (`bench::Kind`, `bench::checks`, …):
//!
//! * `params`: the `BENCH_*` settings; `variant`: protocol × route; `configuration`: what is
//!   measured (the configurations, the stages and their configuration, the suite's);
//!   `topology`: the measured and the client Envoy's bootstraps;
//! * [`driver`]: pinning, the upstream, one measured run (shared with the profile);
//! * `load_output`: what wrk and h2load print; `proc_stats`: `/proc`, `envoy --version`,
//!   criterion;
//! * `results`: samples, runs, the paired comparisons and the statistics; `checks`: the targets;
//!   `render`: `BENCHMARKS.md`; `chart`: `bench/chart.svg`;
//! * `upstream`: the upstream of the proxied routes; `verify`: the functional check.

mod chart;
mod checks;
mod configuration;
pub mod driver;
mod load_output;
mod params;
mod proc_stats;
mod render;
mod results;
#[cfg(test)]
mod test_support;
mod topology;
mod upstream;
mod variant;
mod verify;

pub use chart::render_svg;
pub use checks::{checks, Check, Micro, Sizes, MICRO_BENCHMARKS, SUITE_MAX_BYTES};
pub use configuration::{suite_config, Kind, Stage};
pub use load_output::{parse_h2load, parse_wrk, parse_wrk_latency, LoadReport};
#[cfg(test)]
pub(crate) use params::fake_env;
pub use params::{env_number, Params};
pub use proc_stats::{cpu_ticks, criterion_estimate, envoy_version, vm_rss_kib};
pub use render::{render_markdown, Machine};
pub use results::{median, percentile, spread, Results, Run, Sample};
pub use topology::{
    client_bootstrap, client_cluster, http_filters, local_rate_limit_filter, measured_bootstrap,
    measured_listener, measured_routes, native_module_path, rbac_filter, static_cluster, Modules,
};
pub use upstream::{echoed_headers, serve as serve_upstream, GRPC_EMPTY_MESSAGE};
pub use variant::{Protocol, Route, Variant};
pub use verify::{verify, Observed};

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
/// The native module's name among the modules and their sizes: `libmesh_filters.so`, which
/// Envoy finds in the directory [`NATIVE_SEARCH_PATH`] names.
pub const NATIVE_MODULE: &str = "libmesh_filters";
/// The environment variable that tells Envoy where dynamic modules are.
pub const NATIVE_SEARCH_PATH: &str = "ENVOY_DYNAMIC_MODULES_SEARCH_PATH";
/// The `stat_prefix` of Envoy's local rate limit on the measured listener.
pub const LOCAL_RATE_LIMIT_PREFIX: &str = "bench_local_rate_limit";
/// The headers every load-generator request carries.
pub const LOAD_HEADERS: [(&str, &str); 2] =
    [("traceparent", TRACEPARENT), (CALIBRATION_HEADER, "1")];
