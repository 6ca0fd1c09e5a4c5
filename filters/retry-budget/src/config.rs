//! The retry budget's configuration (plugin JSON, and per route in `mesh.retry_budget` route
//! metadata). Defaults as documented in README.md.

use crate::budget::Settings;
use mesh_kit::config::{ConfigError, Validate};
use mesh_kit::values::{Dur, Ratio};
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;
use std::time::Duration;

/// What one piece of state covers: the kit's [`Scope`] (`route`, the default, or `cluster`).
pub use mesh_kit::shared::Scope;

/// The retry budget's configuration: retries made by Envoy's router, bounded by a budget.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "RetryBudgetConfig"))]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Envoy retry conditions given to the router, comma-separated (`x-envoy-retry-on`).
    #[serde(default = "default_retry_on")]
    #[cfg_attr(
        feature = "schema",
        schemars(regex(
            pattern = r"^\s*(5xx|gateway-error|reset|reset-before-request|connect-failure|envoy-ratelimited|retriable-4xx|refused-stream|retriable-status-codes|retriable-headers|http3-post-connect-failure)?\s*(,\s*(5xx|gateway-error|reset|reset-before-request|connect-failure|envoy-ratelimited|retriable-4xx|refused-stream|retriable-status-codes|retriable-headers|http3-post-connect-failure)?\s*)*$"
        ))
    )]
    pub retry_on: String,
    /// Envoy gRPC retry conditions, comma-separated (`x-envoy-retry-grpc-on`): `cancelled`,
    /// `deadline-exceeded`, `internal`, `resource-exhausted`, `unavailable`.
    #[serde(default = "default_retry_grpc_on")]
    #[cfg_attr(
        feature = "schema",
        schemars(regex(
            pattern = r"^\s*(cancelled|deadline-exceeded|internal|resource-exhausted|unavailable)?\s*(,\s*(cancelled|deadline-exceeded|internal|resource-exhausted|unavailable)?\s*)*$"
        ))
    )]
    pub retry_grpc_on: String,
    /// Retries per request while the budget allows.
    #[serde(default = "three")]
    #[cfg_attr(feature = "schema", schemars(range(max = 100)))]
    pub max_retries: u32,
    /// Timeout per attempt; at least 1ms. Default: none.
    #[serde(default)]
    pub per_try_timeout: Option<Dur>,
    /// Retries allowed as a fraction of the requests in the window.
    #[serde(default = "one_fifth")]
    pub retry_ratio: Ratio,
    /// Retries per second allowed whatever the ratio.
    #[serde(default = "ten")]
    pub min_retries_per_second: u32,
    /// How long a request's deposit (and a retry's withdrawal) stays in the budget; 100ms to 1h.
    #[serde(default = "ten_seconds")]
    pub ttl: Dur,
    /// One budget per route name, or per upstream cluster.
    #[serde(default)]
    pub scope: Scope,
}

fn default_retry_on() -> String {
    "5xx,reset,connect-failure,refused-stream".into()
}
fn default_retry_grpc_on() -> String {
    "unavailable".into()
}
fn three() -> u32 {
    3
}
fn ten() -> u32 {
    10
}
fn one_fifth() -> Ratio {
    Ratio::new(0.2).unwrap_or_default()
}
fn ten_seconds() -> Dur {
    Dur(Duration::from_secs(10))
}

/// Envoy's `x-envoy-retry-on` conditions.
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
];
/// Envoy's `x-envoy-retry-grpc-on` conditions.
const RETRY_GRPC_ON: &[&str] = &[
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

fn check_list(field: &str, value: &str, known: &[&str]) -> Result<(), ConfigError> {
    for cond in value.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        if !known.contains(&cond) {
            return Err(ConfigError::new(
                field,
                Some(&Value::String(value.to_string())),
                format!(
                    "{cond:?} is not an Envoy retry condition (one of: {})",
                    known.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        check_list("retry_on", &self.retry_on, RETRY_ON)?;
        check_list("retry_grpc_on", &self.retry_grpc_on, RETRY_GRPC_ON)?;
        if self.max_retries > 100 {
            return Err(ConfigError::new(
                "max_retries",
                Some(&Value::from(self.max_retries)),
                "must be at most 100",
            ));
        }
        if self.ttl.get() < Duration::from_millis(100) || self.ttl.get() > Duration::from_secs(3600)
        {
            return Err(ConfigError::new(
                "ttl",
                Some(&Value::String(self.ttl.to_string())),
                "must be 100ms to 1h",
            ));
        }
        if let Some(p) = self.per_try_timeout {
            if p.get() < Duration::from_millis(1) {
                return Err(ConfigError::new(
                    "per_try_timeout",
                    Some(&Value::String(p.to_string())),
                    "must be at least 1ms",
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    pub fn settings(&self) -> Settings {
        Settings {
            ratio: self.retry_ratio.get(),
            min_per_second: self.min_retries_per_second,
            ttl_us: u64::try_from(self.ttl.get().as_micros()).unwrap_or(u64::MAX),
            max_retries: self.max_retries,
        }
    }

    /// The condition lists without spaces, as the router reads them (borrowed when the list is
    /// already written that way, as it usually is: no copy on the request path).
    pub fn retry_on_header(&self) -> Cow<'_, str> {
        normalize(&self.retry_on)
    }
    pub fn retry_grpc_on_header(&self) -> Cow<'_, str> {
        normalize(&self.retry_grpc_on)
    }
}

fn normalize(list: &str) -> Cow<'_, str> {
    let clean = !list.contains([' ', '\t'])
        && !list.contains(",,")
        && !list.starts_with(',')
        && !list.ends_with(',');
    if clean {
        return Cow::Borrowed(list);
    }
    Cow::Owned(
        list.split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect::<Vec<_>>()
            .join(","),
    )
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
        assert_eq!(
            c.retry_on_header(),
            "5xx,reset,connect-failure,refused-stream"
        );
        assert_eq!(c.retry_grpc_on_header(), "unavailable");
        let s = c.settings();
        assert_eq!(
            (s.max_retries, s.min_per_second, s.ttl_us),
            (3, 10, 10_000_000)
        );
        assert!((s.ratio - 0.2).abs() < 1e-12);
        assert_eq!(c.scope, Scope::Route);
    }

    #[test]
    fn bad_configs_name_the_field() {
        for (json, field) in [
            (r#"{"retry_on": "5xx,sometimes"}"#, "retry_on"),
            (r#"{"retry_grpc_on": "UNAVAILABLE"}"#, "retry_grpc_on"),
            (r#"{"max_retries": 1000}"#, "max_retries"),
            (r#"{"max_retries": -1}"#, "max_retries"),
            (r#"{"retry_ratio": 2}"#, "retry_ratio"),
            (r#"{"ttl": "10"}"#, "ttl"),
            (r#"{"ttl": "1ms"}"#, "ttl"),
            (r#"{"scope": "host"}"#, "scope"),
            (r#"{"retries": 3}"#, "retries"),
        ] {
            let e = parse(json).unwrap_err();
            assert_eq!(e.field, field, "{json}: {e}");
        }
    }

    #[test]
    fn condition_lists_are_normalised() {
        let c = parse(r#"{"retry_on": " 5xx , reset ,", "retry_grpc_on": ""}"#).unwrap();
        assert_eq!(c.retry_on_header(), "5xx,reset");
        assert_eq!(c.retry_grpc_on_header(), "");
    }
}
