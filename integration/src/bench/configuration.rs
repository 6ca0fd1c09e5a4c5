//! What is measured: the configurations ([`Kind`]), the mesh filters as stages ([`Stage`]) with
//! the configuration each is measured with, and the suite's configuration made of them.
//!
//! Our filters are measured in both runtimes: as wasm (each stage's own module, the six chained,
//! the suite `mesh_filters.wasm`) and as the native dynamic module `libmesh_filters.so` (the
//! suite, and each stage alone as the module with a one-section configuration). Envoy's own
//! filters that do part of the same work are the native analogues.

use serde_json::{json, Value};

use super::{CALIBRATION_MODULE, CLIENT_ID, NATIVE_MODULE, SUITE_MODULE};

/// What is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Bare,
    Calibration,
    /// One stage's own wasm module (`mesh_<section>.wasm`).
    Wasm(Stage),
    /// Every stage's own wasm module, each an HTTP filter in a VM of its own, in the suite's
    /// order.
    Chain,
    /// `mesh_filters.wasm`: every stage in one filter.
    Suite,
    /// `libmesh_filters.so` configured with this stage's section only.
    NativeStage(Stage),
    /// `libmesh_filters.so` with the suite's configuration.
    NativeSuite,
    /// `libmesh_filters.so` with no stage configured: what any dynamic module costs in Envoy
    /// (its per-stream filter and hooks) plus the module's per-stream minimum, the floor under
    /// every native number.
    NativeEmpty,
    /// Envoy's RBAC filter, one principal (vs spiffe-identity).
    NativeRbac,
    /// A route timeout (vs deadline).
    NativeRouteTimeout,
    /// Envoy's local rate limit, a token bucket that never runs dry (vs rate-limit).
    NativeLocalRateLimit,
}

/// One of the six mesh filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    SpiffeIdentity,
    RateLimit,
    CircuitBreaker,
    Deadline,
    RetryBudget,
    TracePropagation,
}

impl Stage {
    /// In the suite's order.
    pub const ALL: [Stage; 6] = [
        Stage::SpiffeIdentity,
        Stage::RateLimit,
        Stage::CircuitBreaker,
        Stage::Deadline,
        Stage::RetryBudget,
        Stage::TracePropagation,
    ];

    /// The suite's section name.
    pub fn section(self) -> &'static str {
        match self {
            Stage::SpiffeIdentity => "spiffe_identity",
            Stage::RateLimit => "rate_limit",
            Stage::CircuitBreaker => "circuit_breaker",
            Stage::Deadline => "deadline",
            Stage::RetryBudget => "retry_budget",
            Stage::TracePropagation => "trace_propagation",
        }
    }

    /// As shown in tables.
    pub fn label(self) -> &'static str {
        match self {
            Stage::SpiffeIdentity => "spiffe-identity",
            Stage::RateLimit => "rate-limit",
            Stage::CircuitBreaker => "circuit-breaker",
            Stage::Deadline => "deadline",
            Stage::RetryBudget => "retry-budget",
            Stage::TracePropagation => "trace-propagation",
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
            // A bucket per verified identity (the client SVID: every request has it, from the
            // identity stage in the suite, from the peer certificate alone) that never runs
            // dry: a shared-data read and a CAS write per request, every request allowed.
            Stage::RateLimit => json!({"rate": 1_000_000, "burst": 1_000_000}),
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
    /// Every configuration, in the order of the report.
    pub const ALL: [Kind; 21] = [
        Kind::Bare,
        Kind::Calibration,
        Kind::Wasm(Stage::SpiffeIdentity),
        Kind::Wasm(Stage::RateLimit),
        Kind::Wasm(Stage::CircuitBreaker),
        Kind::Wasm(Stage::Deadline),
        Kind::Wasm(Stage::RetryBudget),
        Kind::Wasm(Stage::TracePropagation),
        Kind::Chain,
        Kind::Suite,
        Kind::NativeStage(Stage::SpiffeIdentity),
        Kind::NativeStage(Stage::RateLimit),
        Kind::NativeStage(Stage::CircuitBreaker),
        Kind::NativeStage(Stage::Deadline),
        Kind::NativeStage(Stage::RetryBudget),
        Kind::NativeStage(Stage::TracePropagation),
        Kind::NativeSuite,
        Kind::NativeEmpty,
        Kind::NativeRbac,
        Kind::NativeRouteTimeout,
        Kind::NativeLocalRateLimit,
    ];

    /// Short id (`BENCH_ONLY`, logs): the stage's section for its wasm module alone,
    /// `native_<section>` for the native module with that section alone.
    pub fn id(self) -> &'static str {
        match self {
            Kind::Bare => "bare",
            Kind::Calibration => "calibration",
            Kind::Wasm(s) => s.section(),
            Kind::Chain => "chain",
            Kind::Suite => "suite",
            Kind::NativeStage(s) => match s {
                Stage::SpiffeIdentity => "native_spiffe_identity",
                Stage::RateLimit => "native_rate_limit",
                Stage::CircuitBreaker => "native_circuit_breaker",
                Stage::Deadline => "native_deadline",
                Stage::RetryBudget => "native_retry_budget",
                Stage::TracePropagation => "native_trace_propagation",
            },
            Kind::NativeSuite => "native_suite",
            Kind::NativeEmpty => "native_empty",
            Kind::NativeRbac => "native_rbac",
            Kind::NativeRouteTimeout => "native_route_timeout",
            Kind::NativeLocalRateLimit => "native_local_ratelimit",
        }
    }

    /// As shown in tables.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Bare => "bare Envoy",
            Kind::Calibration => "calibration filter",
            Kind::Wasm(s) => s.label(),
            Kind::Chain => "six filters (chain)",
            Kind::Suite => "suite (mesh_filters.wasm)",
            Kind::NativeStage(s) => match s {
                Stage::SpiffeIdentity => "spiffe-identity (native module)",
                Stage::RateLimit => "rate-limit (native module)",
                Stage::CircuitBreaker => "circuit-breaker (native module)",
                Stage::Deadline => "deadline (native module)",
                Stage::RetryBudget => "retry-budget (native module)",
                Stage::TracePropagation => "trace-propagation (native module)",
            },
            Kind::NativeSuite => "suite (libmesh_filters.so)",
            Kind::NativeEmpty => "no stage (libmesh_filters.so)",
            Kind::NativeRbac => "native RBAC, 1 principal",
            Kind::NativeRouteTimeout => "native route timeout",
            Kind::NativeLocalRateLimit => "native local_ratelimit",
        }
    }

    /// The stage whose own wasm module this configuration runs alone, if it does.
    pub fn stage(self) -> Option<Stage> {
        match self {
            Kind::Wasm(s) => Some(s),
            _ => None,
        }
    }

    /// Whether this configuration runs the native module `libmesh_filters.so` (whose metrics
    /// are `envoy_mesh_<stage>_<stat>`, the wasm ones' with Envoy's prefix).
    pub fn is_native_module(self) -> bool {
        matches!(
            self,
            Kind::NativeStage(_) | Kind::NativeSuite | Kind::NativeEmpty
        )
    }

    /// The stages whose work the functional check looks for.
    pub fn stages(self) -> Vec<Stage> {
        match self {
            Kind::Chain | Kind::Suite | Kind::NativeSuite => Stage::ALL.to_vec(),
            Kind::Wasm(s) | Kind::NativeStage(s) => vec![s],
            _ => vec![],
        }
    }

    /// The modules this configuration loads (module names: `<name>.wasm`, or
    /// [`NATIVE_MODULE`]`.so`).
    pub fn modules(self) -> Vec<String> {
        match self {
            Kind::Bare
            | Kind::NativeRbac
            | Kind::NativeRouteTimeout
            | Kind::NativeLocalRateLimit => {
                vec![]
            }
            Kind::Calibration => vec![CALIBRATION_MODULE.to_owned()],
            Kind::Wasm(s) => vec![s.module()],
            Kind::Chain => Stage::ALL.iter().map(|s| s.module()).collect(),
            Kind::Suite => vec![SUITE_MODULE.to_owned()],
            Kind::NativeStage(_) | Kind::NativeSuite | Kind::NativeEmpty => {
                vec![NATIVE_MODULE.to_owned()]
            }
        }
    }

    /// What Envoy's native analogue stands in for.
    pub fn analogue_of(self) -> Option<Kind> {
        match self {
            Kind::NativeRbac => Some(Kind::Wasm(Stage::SpiffeIdentity)),
            Kind::NativeRouteTimeout => Some(Kind::Wasm(Stage::Deadline)),
            Kind::NativeLocalRateLimit => Some(Kind::Wasm(Stage::RateLimit)),
            _ => None,
        }
    }

    /// The plugin configuration of a configuration of our filters in one filter: the suite's
    /// (both runtimes), or one section for the native module with a stage alone.
    pub fn suite_config(self) -> Option<Value> {
        match self {
            Kind::Suite | Kind::NativeSuite => Some(suite_config()),
            Kind::NativeStage(s) => Some(json!({ s.section(): s.config() })),
            Kind::NativeEmpty => Some(json!({})),
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
        assert_eq!(keys.len(), Stage::ALL.len());
        for stage in Stage::ALL {
            assert_eq!(suite[stage.section()], stage.config());
        }
        let alone = Kind::NativeStage(Stage::RateLimit).suite_config().unwrap();
        assert_eq!(alone, json!({"rate_limit": Stage::RateLimit.config()}));
    }

    #[test]
    fn every_configuration_has_its_own_id() {
        let mut ids: Vec<&str> = Kind::ALL.iter().map(|k| k.id()).collect();
        let mut labels: Vec<&str> = Kind::ALL.iter().map(|k| k.label()).collect();
        ids.sort_unstable();
        ids.dedup();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(
            (ids.len(), labels.len()),
            (Kind::ALL.len(), Kind::ALL.len())
        );
        for stage in Stage::ALL {
            assert!(Kind::ALL.contains(&Kind::Wasm(stage)));
            assert!(Kind::ALL.contains(&Kind::NativeStage(stage)));
        }
    }

    #[test]
    fn the_stages_are_the_suites_in_its_order() {
        let suite: Vec<&str> = mesh_filters::STAGES.iter().map(|e| e.section()).collect();
        let ours: Vec<&str> = Stage::ALL.iter().map(|s| s.section()).collect();
        assert_eq!(ours, suite);
    }
}
