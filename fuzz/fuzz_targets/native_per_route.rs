//! Per-route configuration of the native module (mesh_native::per_route): arbitrary bytes as the
//! `filter_config` of a `DynamicModuleFilterPerRoute` (the JSON that
//! `on_http_filter_per_route_config_new` receives) through `PerRoute::parse` with the suite's
//! stages: JSON parsing, the stage-name keys, the one-object-per-stage rule. When it parses,
//! each stage's section goes through that stage's route cache over its plugin configuration of
//! envoy/demo.yaml, as the kit resolves it when a request first meets the route (merge over the
//! plugin configuration, `{"disabled": true}`, serde with `deny_unknown_fields`, the filter's
//! validation, the cache hit).
//!
//! Properties: never panics; the bytes are accepted exactly when they are a JSON object (or
//! blank) whose keys are all stage names and whose values are all objects; a refusal is one log
//! line, without control characters, starting with `mesh: invalid per-route configuration`; an
//! accepted configuration serves each stage's section unchanged; and the route-cache properties
//! of `route_metadata` for each section (an invalid section is an error exactly on the first
//! lookup and cached as invalid, the same answer on the cache hit, the error is one line).
//!
//! Input: the JSON bytes themselves (no envelope: it is already the format Envoy hands over).
#![no_main]

#[path = "common/configs.rs"]
mod configs;

use configs::*;
use libfuzzer_sys::fuzz_target;
use mesh_kit::config::parse_json;
use mesh_native::per_route::PerRoute;
use serde_json::Value;

/// What `PerRoute::parse` should accept: an object (blank is the empty one) of objects keyed
/// by stage names.
fn acceptable(data: &[u8]) -> Option<Value> {
    let json = parse_json(data).ok()?;
    let ok = json
        .as_object()?
        .iter()
        .all(|(k, v)| v.is_object() && mesh_filters::STAGES.iter().any(|e| e.name == k.as_str()));
    ok.then_some(json)
}

fn resolve_stage(key: &'static str, section: Option<Value>) {
    let section = Ok(section);
    match key {
        "mesh.spiffe_identity" => resolve_section::<SpiffeIdentity>(key, section),
        "mesh.rate_limit" => resolve_section::<RateLimit>(key, section),
        "mesh.circuit_breaker" => resolve_section::<CircuitBreaker>(key, section),
        "mesh.deadline" => resolve_section::<Deadline>(key, section),
        "mesh.retry_budget" => resolve_section::<RetryBudget>(key, section),
        "mesh.trace_propagation" => resolve_section::<TracePropagation>(key, section),
        other => panic!("a stage the target does not know: {other}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let expected = acceptable(data);
    match PerRoute::parse(mesh_filters::NAME, &mesh_filters::STAGES, "r", data) {
        Err(line) => {
            assert!(
                line.starts_with("mesh: invalid per-route configuration \"r\": "),
                "{line:?}"
            );
            one_line(&line);
            assert!(expected.is_none(), "refused: {line}");
        }
        Ok(per_route) => {
            let json = expected.unwrap_or_else(|| panic!("accepted: {data:?}"));
            for stage in &mesh_filters::STAGES {
                let section = per_route.section(stage.name).cloned();
                assert_eq!(section.as_ref(), json.get(stage.name), "{}", stage.name);
                resolve_stage(stage.name, section);
            }
        }
    }
});
