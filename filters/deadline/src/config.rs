//! The deadline filter's configuration (plugin JSON, and per route in `mesh.deadline` metadata).
//!
//! | field | type | default | meaning |
//! |---|---|---|---|
//! | `timeout` | duration | required | longest a request on this route may take, retries included |
//! | `honor` | list of header names | `["grpc-timeout", "x-envoy-expected-rq-timeout-ms"]` | incoming deadlines honoured |
//! | `offset` | duration | `"0ms"` | subtracted from an incoming deadline |
//! | `min_budget` | duration | `"1ms"` | below this remaining budget a request is rejected on arrival |
//! | `per_try_timeout` | duration | none | cap per attempt, never above the remaining budget |
//! | `propagate` | bool | `true` | write the remaining budget upstream |

use crate::budget::Limits;
use mesh_kit::config::{ConfigError, Validate};
use mesh_kit::values::Dur;
use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// The deadline filter's configuration.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "DeadlineConfig"))]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Longest a request on this route may take, retries included; at least `min_budget`.
    pub timeout: Dur,
    /// Incoming deadlines honoured: `grpc-timeout` is read in the gRPC wire format, any other
    /// header as whole milliseconds. Header names, matched lowercase.
    #[serde(default = "default_honor", deserialize_with = "header_names")]
    #[cfg_attr(
        feature = "schema",
        schemars(inner(regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")))
    )]
    pub honor: Vec<String>,
    /// Subtracted from an incoming deadline (time spent before this hop).
    #[serde(default)]
    pub offset: Dur,
    /// A request whose remaining budget is below this is rejected on arrival; at least 1ms.
    #[serde(default = "one_ms")]
    pub min_budget: Dur,
    /// Cap per attempt, never above the remaining budget; at least 1ms. Default: none.
    #[serde(default)]
    pub per_try_timeout: Option<Dur>,
    /// Write the remaining budget upstream as `grpc-timeout` (gRPC) and
    /// `x-envoy-expected-rq-timeout-ms`.
    #[serde(default = "yes")]
    pub propagate: bool,
}

pub const GRPC_TIMEOUT: &str = "grpc-timeout";
pub const EXPECTED_TIMEOUT: &str = "x-envoy-expected-rq-timeout-ms";

fn default_honor() -> Vec<String> {
    vec![GRPC_TIMEOUT.into(), EXPECTED_TIMEOUT.into()]
}
fn one_ms() -> Dur {
    Dur::from_millis(1)
}
fn yes() -> bool {
    true
}

/// Header names are matched lowercase, as Envoy stores them.
fn header_names<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    let names = Vec::<String>::deserialize(de)?;
    names
        .into_iter()
        .map(|n| {
            let valid = !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.!#$%&'*+^`|~".contains(&b));
            if valid {
                Ok(n.to_ascii_lowercase())
            } else {
                Err(serde::de::Error::custom(format!(
                    "{n:?} is not a header name"
                )))
            }
        })
        .collect()
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        let ms = |d: Dur| Some(serde_json::Value::String(d.to_string()));
        if self.min_budget.get() < Duration::from_millis(1) {
            return Err(ConfigError::new(
                "min_budget",
                ms(self.min_budget).as_ref(),
                "must be at least 1ms (Envoy's timeouts are whole milliseconds)",
            ));
        }
        if self.timeout.get() < self.min_budget.get() {
            return Err(ConfigError::new(
                "timeout",
                ms(self.timeout).as_ref(),
                format!("must be at least min_budget ({})", self.min_budget),
            ));
        }
        if let Some(p) = self.per_try_timeout {
            if p.get() < Duration::from_millis(1) {
                return Err(ConfigError::new(
                    "per_try_timeout",
                    ms(p).as_ref(),
                    "must be at least 1ms",
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    pub fn limits(&self) -> Limits {
        Limits {
            timeout: self.timeout.get(),
            offset: self.offset.get(),
            min_budget: self.min_budget.get(),
            per_try_timeout: self.per_try_timeout.map(Dur::get),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_kit::config::{from_value, parse_json};

    // On wasm32, #[test] here is wasm-bindgen-test's attribute, so these tests also run compiled to
    // wasm32 under Node.js: scripts/wasm-test.sh.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        from_value(&parse_json(s.as_bytes())?)
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = parse(r#"{"timeout": "5s"}"#).unwrap();
        assert_eq!(
            c.honor,
            vec!["grpc-timeout", "x-envoy-expected-rq-timeout-ms"]
        );
        assert_eq!(c.offset.get(), Duration::ZERO);
        assert_eq!(c.min_budget.get(), Duration::from_millis(1));
        assert_eq!(c.per_try_timeout, None);
        assert!(c.propagate);
    }

    #[test]
    fn bad_configs_name_the_field() {
        for (json, field) in [
            (r#"{}"#, ""),
            (r#"{"timeout": "5"}"#, "timeout"),
            (r#"{"timeout": "-5s"}"#, "timeout"),
            (r#"{"timeout": "5s", "timout": "1s"}"#, "timout"),
            (r#"{"timeout": "5s", "min_budget": "0ms"}"#, "min_budget"),
            (r#"{"timeout": "5s", "honor": ["grpc timeout"]}"#, "honor"),
            (r#"{"timeout": "5s", "propagate": "yes"}"#, "propagate"),
            (
                r#"{"timeout": "5s", "per_try_timeout": "0s"}"#,
                "per_try_timeout",
            ),
            (r#"{"timeout": "1ms", "min_budget": "10ms"}"#, "timeout"),
        ] {
            let e = parse(json).unwrap_err();
            assert!(e.field.starts_with(field), "{json}: {e}");
        }
    }

    #[test]
    fn honored_header_names_are_lowercased() {
        let c = parse(r#"{"timeout": "5s", "honor": ["X-Deadline-Ms"]}"#).unwrap();
        assert_eq!(c.honor, vec!["x-deadline-ms"]);
    }
}
