//! What the configuration targets share: the stages' route-metadata keys, a valid plugin
//! configuration of each (from envoy/demo.yaml), and what the filters derive from a loaded
//! configuration.

#![allow(dead_code)]

use mesh_kit::config::{from_value, Validate};
use mesh_kit::route::{RouteCache, RouteConfig};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

pub use mesh_circuit_breaker::config::Config as CircuitBreaker;
pub use mesh_deadline::config::Config as Deadline;
pub use mesh_rate_limit::config::Config as RateLimit;
pub use mesh_retry_budget::config::Config as RetryBudget;
pub use mesh_spiffe_identity::config::Config as SpiffeIdentity;
pub use mesh_trace_propagation::config::Config as TracePropagation;

/// The route-metadata keys, in the suite's stage order.
pub fn keys() -> impl Iterator<Item = &'static str> {
    mesh_filters::STAGES.iter().map(|e| e.name)
}

/// The plugin configuration of `key`'s filter in envoy/demo.yaml.
pub fn base_json(key: &str) -> Value {
    match key {
        "mesh.spiffe_identity" => json!({"trust_domains": ["mesh.local"]}),
        "mesh.rate_limit" => json!({"rate": 5, "burst": 10}),
        "mesh.circuit_breaker" => json!({"consecutive_failures": 5, "open_duration": "60s"}),
        "mesh.deadline" => json!({"timeout": "15s", "min_budget": "5ms"}),
        "mesh.retry_budget" => json!({
            "max_retries": 2, "retry_ratio": 0.2, "min_retries_per_second": 10, "ttl": "10s"
        }),
        _ => json!({"inject": ["w3c", "b3"], "response_headers": ["traceresponse"]}),
    }
}

/// The suite's plugin configuration of envoy/demo.yaml's mTLS listener: every stage, each
/// section its filter's [`base_json`].
pub fn suite_json() -> Value {
    Value::Object(
        mesh_filters::STAGES
            .iter()
            .map(|e| (e.section().to_string(), base_json(e.name)))
            .collect(),
    )
}

/// What the filters compute from a configuration once it is loaded.
pub trait Derive {
    fn derive(&self);
}

impl Derive for Deadline {
    fn derive(&self) {
        let _ = self.limits();
    }
}
impl Derive for CircuitBreaker {
    fn derive(&self) {
        let _ = self.settings();
    }
}
impl Derive for RetryBudget {
    fn derive(&self) {
        let _ = (
            self.settings(),
            self.retry_on_header(),
            self.retry_grpc_on_header(),
        );
    }
}
impl Derive for RateLimit {
    fn derive(&self) {
        let _ = (self.limit(), self.limit_for(None));
    }
}
impl Derive for SpiffeIdentity {
    fn derive(&self) {}
}
impl Derive for TracePropagation {
    fn derive(&self) {}
}

/// Loads `json` as a `C`; when it loads, derives what the filter derives from it.
pub fn load<C: DeserializeOwned + Validate + Derive>(json: &Value) -> bool {
    match from_value::<C>(json) {
        Ok(c) => {
            c.derive();
            true
        }
        Err(e) => {
            // The error line is what on_configure logs: one line.
            one_line(&e.line("mesh"));
            false
        }
    }
}

/// A route cache over the demo plugin configuration of `key`'s filter.
pub fn cache<C: DeserializeOwned + Validate>(key: &'static str) -> RouteCache<C> {
    let base_json = base_json(key);
    let base = from_value::<C>(&base_json)
        .unwrap_or_else(|e| panic!("the demo configuration of {key} is invalid: {e}"));
    RouteCache::new(base_json, base)
}

/// Resolves `metadata` for a route twice through a fresh cache: the first lookup decodes, the
/// second must come from the cache with the same outcome and no new error.
pub fn resolve<C: DeserializeOwned + Validate + Derive>(key: &'static str, metadata: &[u8]) {
    resolve_section::<C>(key, mesh_kit::host::metadata_section(Some(metadata), key));
}

/// [`resolve`] for a route whose section of `key` is `section`, as the host's
/// `route_config` returns it (the native module's per-route configuration, say).
pub fn resolve_section<C: DeserializeOwned + Validate + Derive>(
    key: &'static str,
    section: Result<Option<Value>, String>,
) {
    let mut routes = cache::<C>(key);
    let first = routes.get("route", 0, || section);
    if let Some(e) = &first.new_error {
        one_line(&e.line(key));
    }
    if let RouteConfig::Enabled(c) = &first.config {
        c.derive();
    }
    let second = routes.get("route", 0, || panic!("route metadata decoded twice"));
    assert!(second.new_error.is_none());
    assert_eq!(kind(&first.config), kind(&second.config));
    assert_eq!(kind(&first.config) == "invalid", first.new_error.is_some());
}

/// A log line: no newline or other control character inside.
pub fn one_line(line: &str) {
    assert!(!line.chars().any(char::is_control), "{line:?}");
}

fn kind<C>(c: &RouteConfig<C>) -> &'static str {
    match c {
        RouteConfig::Enabled(_) => "enabled",
        RouteConfig::Disabled => "disabled",
        RouteConfig::Invalid { .. } => "invalid",
    }
}
