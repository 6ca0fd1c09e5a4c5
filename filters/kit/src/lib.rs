//! `mesh-kit`: what every mesh filter needs, written once.
//!
//! - [`values`]: configuration values (durations as `"250ms"`, ratios in `[0, 1]`) whose errors
//!   name the value and what is wrong with it.
//! - [`config`]: plugin configuration from JSON and the [`config::ConfigError`] that names filter,
//!   field, value and reason in one line.
//! - [`route`]: per-route overrides from `metadata.filter_metadata["mesh.<filter>"]`, decoded once
//!   per route name and cached.
//! - [`reply`]: local replies (HTTP JSON or trailers-only gRPC) that say which filter answered.
//! - [`metrics`]: counters and gauges per route, defined once per root context.
//! - [`shared`]: compare-and-swap updates over Envoy's shared data, for state global to all workers,
//!   keyed by [`shared::Scope`]; [`record`] encodes what is stored there and [`window`] is the
//!   sliding window of counts the breaker and the budget keep in it.
//! - [`host`] and [`stage`]: the narrow host trait and the proxy-wasm adapter that runs an ordered
//!   list of stages; each filter crate supplies one stage, and [`registry`] is how everything
//!   else (the suite, the checker, the schema) knows the stages.
//!
//! - `wasm` (wasm32 only): the proxy-wasm runtime (the `Host` over proxy-wasm host calls, the
//!   context glue, the module entry points); the native runtime is the `mesh-native` crate.
//!
//! Everything except `wasm` is runtime-neutral and tested natively.

#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod config;
pub mod hash;
pub mod host;
pub mod metrics;
pub mod proto;
pub mod record;
pub mod registry;
pub mod reply;
pub mod route;
pub mod shared;
pub mod stage;
pub mod testing;
pub mod values;
#[cfg(target_arch = "wasm32")]
pub mod wasm;
pub mod window;

#[cfg(target_arch = "wasm32")]
pub use proxy_wasm;
