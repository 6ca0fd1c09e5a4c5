//! What is measured: the configurations ([`Kind`]), the mesh filters as stages ([`Stage`]) with
//! the configuration each is measured with, and the suite's configuration made of them.

use serde_json::{json, Value};

use super::{CALIBRATION_MODULE, CLIENT_ID, SUITE_MODULE};

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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

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
}
