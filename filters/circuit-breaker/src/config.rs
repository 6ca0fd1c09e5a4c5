//! The circuit breaker's configuration (plugin JSON, and per route in `mesh.circuit_breaker`
//! route metadata). Defaults as documented in README.md.

use crate::breaker::Settings;
use crate::classify::{self, FailureOn, GrpcFailureOn};
use mesh_kit::config::{ConfigError, Validate};
use mesh_kit::values::{Dur, Ratio};
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

/// What one piece of state covers: the kit's [`Scope`] (`route`, the default, or `cluster`).
pub use mesh_kit::shared::Scope;

/// The circuit breaker's configuration. Closed = traffic flows, open = rejecting, half-open =
/// probing.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "CircuitBreakerConfig"))]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Consecutive failures that open the breaker.
    #[serde(default = "five")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub consecutive_failures: u32,
    /// Open when the failure ratio within `window` reaches this. Default: off.
    #[serde(default)]
    pub failure_rate: Option<Ratio>,
    /// A call slower than this counts as slow; above zero. Default: off.
    #[serde(default)]
    pub slow_call_duration: Option<Dur>,
    /// Open when the slow-call ratio within `window` reaches this (needs `slow_call_duration`).
    #[serde(default = "all")]
    pub slow_call_rate: Ratio,
    /// Sliding window for both rates (ten buckets of `window / 10`); at least 100ms.
    #[serde(default = "ten_seconds")]
    pub window: Dur,
    /// Rates are not judged on fewer calls in the window.
    #[serde(default = "twenty")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub minimum_requests: u32,
    /// How long an open breaker rejects before probing; at least 1ms.
    #[serde(default = "one_minute")]
    pub open_duration: Dur,
    /// Each re-open after a failed probe doubles the open time, up to this; at least
    /// `open_duration`. Default: `open_duration`.
    #[serde(default)]
    pub max_open_duration: Option<Dur>,
    /// Probes admitted while half-open; all must succeed to close.
    #[serde(default = "three")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 1000)))]
    pub half_open_requests: u32,
    /// HTTP outcomes that count as failures.
    #[serde(
        default = "default_failure_on",
        deserialize_with = "classify::failure_on"
    )]
    #[cfg_attr(
        feature = "schema",
        schemars(extend("default" = classify::default_failure_on()))
    )]
    pub failure_on: FailureOn,
    /// gRPC statuses that count as failures.
    #[serde(
        default = "default_grpc_failure_on",
        deserialize_with = "classify::grpc_failure_on"
    )]
    #[cfg_attr(
        feature = "schema",
        schemars(extend("default" = classify::default_grpc_failure_on()))
    )]
    pub grpc_failure_on: GrpcFailureOn,
    /// One breaker per route name, or per upstream cluster.
    #[serde(default)]
    pub scope: Scope,
}

fn five() -> u32 {
    5
}
fn three() -> u32 {
    3
}
fn twenty() -> u32 {
    20
}
fn all() -> Ratio {
    Ratio::new(1.0).unwrap_or_default()
}
fn ten_seconds() -> Dur {
    Dur(Duration::from_secs(10))
}
fn one_minute() -> Dur {
    Dur(Duration::from_secs(60))
}
fn default_failure_on() -> FailureOn {
    FailureOn::parse(&classify::default_failure_on()).unwrap_or_default()
}
fn default_grpc_failure_on() -> GrpcFailureOn {
    GrpcFailureOn::parse(&classify::default_grpc_failure_on()).unwrap_or_default()
}

fn micros(d: Dur) -> u64 {
    u64::try_from(d.get().as_micros()).unwrap_or(u64::MAX)
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        let dur = |d: Dur| Value::String(d.to_string());
        let int = |n: u32| Value::from(n);
        if self.consecutive_failures == 0 {
            return Err(ConfigError::new(
                "consecutive_failures",
                Some(&int(0)),
                "must be at least 1",
            ));
        }
        if self.half_open_requests == 0 || self.half_open_requests > 1000 {
            return Err(ConfigError::new(
                "half_open_requests",
                Some(&int(self.half_open_requests)),
                "must be 1 to 1000",
            ));
        }
        if self.minimum_requests == 0 {
            return Err(ConfigError::new(
                "minimum_requests",
                Some(&int(0)),
                "must be at least 1",
            ));
        }
        if self.window.get() < Duration::from_millis(100) {
            return Err(ConfigError::new(
                "window",
                Some(&dur(self.window)),
                "must be at least 100ms",
            ));
        }
        if self.open_duration.get() < Duration::from_millis(1) {
            return Err(ConfigError::new(
                "open_duration",
                Some(&dur(self.open_duration)),
                "must be at least 1ms",
            ));
        }
        if let Some(max) = self.max_open_duration {
            if max < self.open_duration {
                return Err(ConfigError::new(
                    "max_open_duration",
                    Some(&dur(max)),
                    format!("must be at least open_duration ({})", self.open_duration),
                ));
            }
        }
        if let Some(d) = self.slow_call_duration {
            if d.get().is_zero() {
                return Err(ConfigError::new(
                    "slow_call_duration",
                    Some(&dur(d)),
                    "must be above zero",
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    pub fn settings(&self) -> Settings {
        Settings {
            consecutive_failures: self.consecutive_failures,
            failure_rate: self.failure_rate.map(Ratio::get),
            slow_call_rate: self.slow_call_duration.map(|_| self.slow_call_rate.get()),
            window_us: micros(self.window),
            minimum_requests: self.minimum_requests,
            open_us: micros(self.open_duration),
            max_open_us: micros(self.max_open_duration.unwrap_or(self.open_duration)),
            half_open_requests: self.half_open_requests,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_kit::config::{from_value, parse_json};

    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        from_value(&parse_json(s.as_bytes())?)
    }

    #[test]
    fn an_empty_config_has_the_documented_defaults() {
        let c = parse("{}").unwrap();
        let s = c.settings();
        assert_eq!(s.consecutive_failures, 5);
        assert_eq!(s.failure_rate, None);
        assert_eq!(
            s.slow_call_rate, None,
            "slow calls are off without slow_call_duration"
        );
        assert_eq!(s.window_us, 10_000_000);
        assert_eq!(s.minimum_requests, 20);
        assert_eq!(s.open_us, 60_000_000);
        assert_eq!(s.max_open_us, 60_000_000);
        assert_eq!(s.half_open_requests, 3);
        assert_eq!(c.scope, Scope::Route);
        assert!(c.failure_on.matches(503, 0));
        assert!(c.grpc_failure_on.matches(14));
    }

    #[test]
    fn slow_call_rate_applies_once_a_slow_call_duration_is_set() {
        let c = parse(r#"{"slow_call_duration": "500ms", "slow_call_rate": 0.5}"#).unwrap();
        assert_eq!(c.settings().slow_call_rate, Some(0.5));
    }

    #[test]
    fn bad_configs_name_the_field() {
        for (json, field) in [
            (r#"{"consecutive_failures": 0}"#, "consecutive_failures"),
            (r#"{"failure_rate": 1.5}"#, "failure_rate"),
            (r#"{"window": "10"}"#, "window"),
            (r#"{"window": "1ms"}"#, "window"),
            (
                r#"{"open_duration": "2s", "max_open_duration": "1s"}"#,
                "max_open_duration",
            ),
            (r#"{"half_open_requests": 0}"#, "half_open_requests"),
            (r#"{"failure_on": ["5xx", "teapot"]}"#, "failure_on"),
            (r#"{"grpc_failure_on": ["UNAVAILABLE"]}"#, "grpc_failure_on"),
            (r#"{"scope": "host"}"#, "scope"),
            (r#"{"consecutive": 3}"#, "consecutive"),
        ] {
            let e = parse(json).unwrap_err();
            assert_eq!(e.field, field, "{json}: {e}");
        }
    }
}
