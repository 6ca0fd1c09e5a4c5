//! `mesh_filters.wasm`: the six mesh filters as one Envoy HTTP filter, root_id `mesh`; with
//! feature `native`, the same filter as the Envoy dynamic module `libmesh_filters.so`
//! (`filters/native`).
//!
//! One HttpContext runs the stages in the order spiffe-identity → rate-limit → circuit-breaker →
//! deadline → retry-budget → trace-propagation over one [`mesh_kit::stage::Exchange`]: the
//! request headers are read once, the route name once, and each stage's per-route configuration
//! is decoded once per route and cached. The plugin configuration has one optional section per stage, named
//! after it; a stage without a section is off:
//!
//! ```json
//! {"deadline": {"timeout": "5s"}, "circuit_breaker": {}, "trace_propagation": {"inject": ["w3c", "b3"]}}
//! ```
//!
//! Each section is exactly that filter's standalone configuration, and per-route overrides stay
//! in route metadata under each stage's own key (`mesh.deadline`, ...), so a route configuration
//! works the same with the suite and with the single filters.

#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use mesh_kit::config::ConfigError;
use mesh_kit::host::Host;
use mesh_kit::registry::{from_sections, Entry};
use mesh_kit::stage::Built;
use serde_json::Value;

/// The suite's name in log lines, its root_id.
pub const NAME: &str = "mesh";

/// Every stage, in the order they run: the one list the suite, `mesh-filters check`, the JSON
/// Schema and the fuzz targets read.
pub const STAGES: [Entry; 6] = [
    mesh_spiffe_identity::STAGE,
    mesh_rate_limit::STAGE,
    mesh_circuit_breaker::STAGE,
    mesh_deadline::STAGE,
    mesh_retry_budget::STAGE,
    mesh_trace_propagation::STAGE,
];

/// Builds the stages that have a section, in [`STAGES`] order; an unknown section or an
/// invalid one is an error naming `<section>.<field>`.
pub fn factory(json: &Value, host: &dyn Host) -> Result<Vec<Built>, ConfigError> {
    #[cfg(feature = "test-abort")]
    let (json, abort) = test_abort::strip(json, host)?;
    #[cfg(feature = "test-abort")]
    let json = &json;
    #[allow(unused_mut)]
    let mut slots = from_sections(&STAGES, json, host)?;
    #[cfg(feature = "test-abort")]
    if let Some(abort) = abort {
        slots.insert(0, abort);
    }
    if slots.is_empty() {
        log::warn!("{NAME}: no stage configured: every request passes untouched");
    }
    Ok(slots)
}

/// Test builds only: the stage that traps the VM on demand (`test_abort` section).
#[cfg(feature = "test-abort")]
pub mod test_abort;

#[cfg(all(feature = "standalone", target_arch = "wasm32"))]
#[allow(unsafe_code)]
mod entry {
    mesh_kit::export_filter!(crate::NAME, crate::factory);
}

/// The native dynamic module (`libmesh_filters.so`): the same name, factory and stages.
#[cfg(all(feature = "native", not(target_arch = "wasm32")))]
mod native_entry {
    mesh_native::export!(crate::NAME, crate::factory, &crate::STAGES);
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_kit::testing::TestHost;
    use serde_json::json;

    fn names(json: Value) -> Result<Vec<&'static str>, String> {
        factory(&json, &TestHost::default())
            .map(|stages| stages.iter().map(|b| b.stage.name()).collect())
            .map_err(|e| e.line(NAME))
    }

    #[test]
    fn stages_run_in_the_fixed_order_whatever_the_section_order() {
        let all = json!({
            "trace_propagation": {}, "retry_budget": {}, "deadline": {"timeout": "1s"},
            "circuit_breaker": {}, "spiffe_identity": {"allow": ["spiffe://td/**"]}
        });
        assert_eq!(
            names(all).unwrap(),
            [
                "mesh.spiffe_identity",
                "mesh.circuit_breaker",
                "mesh.deadline",
                "mesh.retry_budget",
                "mesh.trace_propagation"
            ]
        );
    }

    #[test]
    fn a_stage_without_a_section_is_off() {
        assert_eq!(
            names(json!({"deadline": {"timeout": "2s"}})).unwrap(),
            ["mesh.deadline"]
        );
        assert_eq!(
            names(json!({"circuit_breaker": {}})).unwrap(),
            ["mesh.circuit_breaker"]
        );
        assert!(names(json!({})).unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_section_and_the_field() {
        let e = names(json!({"deadline": {"timeout": "soon"}})).unwrap_err();
        assert!(
            e.starts_with("mesh: invalid configuration: field `deadline.timeout`"),
            "{e}"
        );
        let e = names(json!({"retry_budget": {"retry_ratio": 2}})).unwrap_err();
        assert!(e.contains("`retry_budget.retry_ratio`"), "{e}");
        let e = names(json!({"deadlines": {}})).unwrap_err();
        assert!(
            e.contains("`deadlines`") && e.contains("unknown section"),
            "{e}"
        );
        let e = names(json!({"deadline": true})).unwrap_err();
        assert!(
            e.contains("`deadline`") && e.contains("must be an object"),
            "{e}"
        );
        let e = names(json!([1])).unwrap_err();
        assert!(e.contains("JSON object"), "{e}");
    }
}
