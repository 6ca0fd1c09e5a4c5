//! `mesh_bench_probe.wasm`: the profile's probe, root_id `bench.probe`.
//!
//! A proxy-wasm HTTP filter whose plugin configuration names one operation and a count `n`
//! ([`plan`]): on every request it performs that operation `n` times, in the phase where the
//! suite performs it. Measured in Envoy at `n = 0` and `n = k`, the difference in Envoy CPU time
//! per request divided by `k` is what one such call costs (`make bench`'s profile,
//! `integration/src/profile.rs`). The operations are the host calls the mesh filters make
//! (`mesh_kit::host::Proxy`: properties, header maps, shared data, metrics, the clock, WASI
//! randomness, local replies), plus two that run the suite itself:
//!
//! - `suite_in_vm`: the suite's request path (the kit's `Root` → `Request` →
//!   `request_headers()` / `response_headers()` / `log()`, with the suite's stages) `n` times
//!   per request against an in-memory host inside the VM ([`replay`]), so no call crosses the
//!   boundary: what the suite's Rust code costs when V8 runs it;
//! - `suite_counted`: the same path once per request against the real host, counting every call
//!   by phase and kind ([`count`]); the request picks one of several suite configurations with
//!   `x-probe-stages: <index>`, a request with `x-probe-report` gets the counts as JSON and one
//!   with `x-probe-reset` clears them;
//! - `call_mix`: the suite's host calls without the suite: a steady-state request of the suite is
//!   recorded call by call ([`trace`]), then replayed against the real host `n` times per
//!   request, in each phase, per route.
//!
//! The probe builds the suite's stages itself ([`suite_factory`], the same list in the same order
//! as `mesh_filters::STAGES`): linking `mesh_filters` would bring its own wasm entry point. A test
//! checks that the two lists agree. Periodic work (`on_tick`) of the suite's stages is not
//! forwarded: the configurations measured have none.
//!
//! Built like the filters: `cargo build --release --target wasm32-wasip1 -p mesh-bench-probe`.

#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod count;
pub mod filter;
pub mod plan;
pub mod replay;
pub mod trace;

use mesh_kit::config::ConfigError;
use mesh_kit::host::Host;
use mesh_kit::registry::{from_sections, Entry};
use mesh_kit::stage::AnySlot;
use serde_json::Value;
use std::rc::Rc;

/// The suite's stages in the suite's order (`mesh_filters::STAGES`).
pub const STAGES: [Entry; 5] = [
    mesh_spiffe_identity::STAGE,
    mesh_circuit_breaker::STAGE,
    mesh_deadline::STAGE,
    mesh_retry_budget::STAGE,
    mesh_trace_propagation::STAGE,
];

/// The suite's factory (`mesh_filters::factory`): the stages that have a section, in order.
pub fn suite_factory(json: &Value, host: &dyn Host) -> Result<Vec<Rc<dyn AnySlot>>, ConfigError> {
    from_sections(&STAGES, json, host)
}

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod entry {
    proxy_wasm::main! {{
        proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Warn);
        proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
            Box::<crate::filter::ProbeRoot>::default()
        });
    }}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn the_stage_list_is_the_suites() {
        let ours: Vec<&str> = STAGES.iter().map(|e| e.name).collect();
        let suite: Vec<&str> = mesh_filters::STAGES.iter().map(|e| e.name).collect();
        assert_eq!(ours, suite);
    }

    #[test]
    fn the_factory_builds_the_sections_given() {
        let host = mesh_kit::shared::MemoryStore::default();
        let json = serde_json::json!({"deadline": {"timeout": "15s"}, "trace_propagation": {}});
        let names: Vec<&str> = suite_factory(&json, &host)
            .unwrap()
            .iter()
            .map(|s| s.name())
            .collect();
        assert_eq!(names, ["mesh.deadline", "mesh.trace_propagation"]);
        assert!(suite_factory(&serde_json::json!({"nope": {}}), &host).is_err());
    }
}
