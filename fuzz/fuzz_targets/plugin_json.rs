//! Plugin configuration (the bytes Envoy hands `on_configure`): arbitrary bytes through the
//! adapter's `Root::configure` of each single filter and of the suite (JSON parsing, sections,
//! serde with `deny_unknown_fields`, each filter's validation, building the stages over an
//! in-memory host) never panic, and every refusal is one log line without control characters. The same JSON is also
//! loaded directly as each filter's configuration, and what the filters derive from a loaded
//! configuration is computed.
#![no_main]

#[path = "common/configs.rs"]
mod configs;

use configs::*;
use libfuzzer_sys::fuzz_target;
use mesh_kit::config::parse_json;
use mesh_kit::shared::MemoryStore;
use mesh_kit::stage::{single, Factory, Root};
use std::rc::Rc;

const ROOTS: [(&str, Factory); 6] = [
    (mesh_filters::NAME, mesh_filters::factory),
    (
        "mesh.spiffe_identity",
        single::<mesh_spiffe_identity::filter::SpiffeIdentity>,
    ),
    (
        "mesh.circuit_breaker",
        single::<mesh_circuit_breaker::filter::CircuitBreaker>,
    ),
    ("mesh.deadline", single::<mesh_deadline::filter::Deadline>),
    (
        "mesh.retry_budget",
        single::<mesh_retry_budget::filter::RetryBudget>,
    ),
    (
        "mesh.trace_propagation",
        single::<mesh_trace_propagation::filter::TracePropagation>,
    ),
];

fuzz_target!(|data: &[u8]| {
    for (name, factory) in ROOTS {
        let mut root = Root::new(name, factory, Rc::new(MemoryStore::default()));
        if let Err(line) = root.configure(data) {
            assert!(line.starts_with(name), "{line}");
            assert!(!line.chars().any(char::is_control), "{line:?}");
        }
    }
    let Ok(json) = parse_json(data) else {
        return;
    };
    load::<SpiffeIdentity>(&json);
    load::<CircuitBreaker>(&json);
    load::<Deadline>(&json);
    load::<RetryBudget>(&json);
    load::<TracePropagation>(&json);
    for section in mesh_filters::SECTIONS {
        if let Some(part) = json.get(section) {
            match section {
                "spiffe_identity" => load::<SpiffeIdentity>(part),
                "circuit_breaker" => load::<CircuitBreaker>(part),
                "deadline" => load::<Deadline>(part),
                "retry_budget" => load::<RetryBudget>(part),
                _ => load::<TracePropagation>(part),
            };
        }
    }
});
